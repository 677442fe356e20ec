"""The ``gan-train-local`` command: options, messages, and torchrun's ranks."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from shared import distributed
from shared.aggregation import AdamConfig
from shared.cli_help import complete_help
from shared.devices import describe_device, resolve_device
from shared.image_sources import FirstChannels, open_source
from shared.local_training import LocalRun, load_checkpoint, total_images_for, train
from shared.models import ModelConfig


def build_parser() -> argparse.ArgumentParser:
    """Every option of gan-train-local, with its default in --help."""
    p = argparse.ArgumentParser(
        prog="gan-train-local",
        description="Train the class DCGAN on this machine alone with the textbook loop "
        "(pytorch/examples' dcgan: D step, then G against the new D), built from the same "
        "functions as the class's synchronous mode. Under 'torchrun --nproc-per-node N' "
        "each rank trains its share of every batch with DistributedDataParallel. Writes "
        "sample grids (PNG) and a safetensors checkpoint.",
    )
    p.add_argument(
        "--dataset",
        default="builtin",
        help="'builtin' (generated cartoon faces, no download), a folder made by "
        "'gan-coordinator dataset import', or any folder of images",
    )
    p.add_argument("--builtin-size", type=int, default=20_000, help="images in the built-in set")
    p.add_argument(
        "--builtin-seed", type=int, default=0,
        help="which built-in faces are drawn (the coordinator's default is 0 too)",
    )  # fmt: skip
    budget = p.add_mutually_exclusive_group()
    budget.add_argument(
        "--epochs", type=float, default=None,
        help="passes over the data (default: 1, unless --images)",
    )  # fmt: skip
    budget.add_argument(
        "--images", type=int, default=None,
        help="stop after this many images (default: --epochs decides)",
    )  # fmt: skip
    p.add_argument(
        "--batch-size", type=int, default=64,
        help="images per step, over all torchrun ranks together",
    )  # fmt: skip
    p.add_argument("--lr", type=float, default=AdamConfig.lr, help="Adam learning rate")
    p.add_argument("--beta1", type=float, default=AdamConfig.beta1, help="Adam beta1")
    p.add_argument("--beta2", type=float, default=AdamConfig.beta2, help="Adam beta2")
    p.add_argument("--latent-dim", type=int, default=100, help="size of the generator's input")
    p.add_argument("--features", type=int, default=64, help="feature maps of both networks")
    p.add_argument(
        "--channels", type=int, default=3, choices=(1, 3),
        help="image channels (3: RGB; 1 trains on the first channel, e.g. Fashion-MNIST)",
    )  # fmt: skip
    p.add_argument(
        "--device", default="auto",
        help="auto, cpu, cuda, cuda:N or mps (under torchrun with CUDA: cuda:LOCAL_RANK)",
    )  # fmt: skip
    p.add_argument("--seed", type=int, default=0, help="seeds weights, image order and noise")
    p.add_argument("--output", type=Path, default=Path("outputs/local"), help="output folder")
    p.add_argument("--sample-every", type=int, default=50, help="iterations between grids")
    p.add_argument("--checkpoint-every", type=int, default=200, help="iterations between saves")
    p.add_argument(
        "--resume", type=Path, default=None,
        help="continue from a checkpoint, its run settings winning over the flags above "
        "(default: start afresh)",
    )  # fmt: skip
    p.add_argument(
        "--threads", type=int, default=None, help="CPU threads for torch (default: all)"
    )
    p.add_argument("--dry-run", action="store_true", help="one step, nothing written")
    complete_help(p)
    return p


def _device(name: str, world: distributed.World) -> torch.device:
    device = resolve_device(name)
    if world.size > 1 and device.type == "cuda":
        return torch.device("cuda", world.local_rank)
    return device


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``gan-train-local`` (also as each torchrun rank)."""
    args = build_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    world = distributed.world_from_env()
    say = print if world.is_main else (lambda *a, **k: None)
    try:
        device = _device(args.device, world)
        if args.resume is not None:
            run, progress, _, _ = load_checkpoint(args.resume)
            say(f"Resuming from {args.resume} at iteration {progress.iteration} "
                f"({progress.images_seen} images seen)")  # fmt: skip
        else:
            run = LocalRun(
                dataset=args.dataset,
                builtin_size=args.builtin_size,
                builtin_seed=args.builtin_seed,
                batch_size=args.batch_size,
                seed=args.seed,
                model=ModelConfig(
                    latent_dim=args.latent_dim,
                    generator_features=args.features,
                    discriminator_features=args.features,
                    channels=args.channels,
                ),
                adam=AdamConfig(lr=args.lr, beta1=args.beta1, beta2=args.beta2),
            )
        if run.batch_size % world.size:
            raise ValueError(
                f"--batch-size {run.batch_size} does not split into {world.size} equal ranks"
            )
        source = open_source(run.dataset, builtin_size=run.builtin_size, seed=run.builtin_seed)
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if run.model.channels != 3:
        source = FirstChannels(source, run.model.channels)
    total = total_images_for(args.epochs, args.images, len(source))
    ranks = f" on {world.size} ranks" if world.size > 1 else ""
    say(
        f"Training on {source.name} ({len(source)} images) with {describe_device(device)}"
        f"{ranks}, batch {run.batch_size}, until {total} images; output in {args.output}"
    )
    distributed.start(world, device)
    try:
        progress = train(
            run, source=source, total_images=total, device=device, output=args.output,
            sample_every=args.sample_every, checkpoint_every=args.checkpoint_every,
            resume=args.resume, dry_run=args.dry_run, world=world,
        )  # fmt: skip
    finally:
        distributed.stop(world)
    if args.dry_run:
        say("Dry run: one step completed, nothing written.")
    else:
        say(f"Done: {progress.iteration} iterations, {progress.images_seen} images. "
            f"Samples: {args.output / 'samples_latest.png'}; "
            f"checkpoint: {args.output / 'checkpoint.safetensors'}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
