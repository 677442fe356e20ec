"""``gan-train-local``: the whole DCGAN on one machine, with the distributed path's own code.

Each step is one "unit" of ``batch_size`` images run through
``shared.training_step.compute_gradients`` and applied with
``shared.aggregation.apply_gradients`` — exactly what a coordinator does with one
worker and one unit per step — so local and class runs are directly comparable.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from shared.aggregation import AdamConfig, aggregate, apply_gradients, initial_optimizer_state
from shared.codec import OptimizerState, decode_snapshot, encode_snapshot, read_metadata
from shared.devices import describe_device, resolve_device
from shared.image_sources import ImageSource, open_source
from shared.models import ModelConfig, StateSpec, build_models, load_model_state, model_state
from shared.samples import fixed_noise, sample_grid_png
from shared.training_step import compute_gradients


@dataclass
class Progress:
    """Where a run stands; saved in every checkpoint so ``--resume`` continues exactly."""

    iteration: int = 0
    epoch: int = 0
    position: int = 0  # images of the current epoch already used
    images_seen: int = 0


@dataclass
class LocalRun:
    """Everything that defines a local run (the checkpoint keeps it for ``--resume``)."""

    dataset: str = "builtin"
    builtin_size: int = 20_000
    batch_size: int = 64
    seed: int = 0
    model: ModelConfig = field(default_factory=ModelConfig)
    adam: AdamConfig = field(default_factory=AdamConfig)


def epoch_permutation(seed: int, epoch: int, size: int) -> list[int]:
    """The seeded image order of one epoch (the coordinator walks epochs the same way)."""
    rng = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(size, generator=rng).tolist()


def save_checkpoint(path: Path, run: LocalRun, progress: Progress, weights, optimizer) -> None:
    """Weights, Adam state and run definition in one safetensors file (written atomically)."""
    metadata = {
        "run": json.dumps({**asdict(run), "model": asdict(run.model), "adam": asdict(run.adam)}),
        "progress": json.dumps(asdict(progress)),
    }
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(encode_snapshot(progress.iteration, weights, optimizer, metadata))
    tmp.replace(path)


def load_checkpoint(path: Path) -> tuple[LocalRun, Progress, dict, OptimizerState]:
    """Read a checkpoint written by ``save_checkpoint``; refuse anything else clearly."""
    data = path.read_bytes()
    meta = read_metadata(data)
    if "run" not in meta or "progress" not in meta:
        raise ValueError(f"{path} is not a gan-train-local checkpoint")
    raw = json.loads(meta["run"])
    run = LocalRun(
        **{k: v for k, v in raw.items() if k not in ("model", "adam")},
        model=ModelConfig(**raw["model"]),
        adam=AdamConfig(**raw["adam"]),
    )
    snapshot = decode_snapshot(data, StateSpec.from_config(run.model))
    if snapshot.optimizer is None:
        raise ValueError(f"{path} holds no optimizer state")
    progress = Progress(**json.loads(meta["progress"]))
    return run, progress, snapshot.weights, snapshot.optimizer


def train(
    run: LocalRun,
    *,
    source: ImageSource,
    total_images: int,
    device: torch.device,
    output: Path,
    sample_every: int,
    checkpoint_every: int,
    resume: Path | None = None,
    dry_run: bool = False,
) -> Progress:
    """Train until ``total_images`` images were seen; write samples and checkpoints."""
    generator, discriminator = build_models(run.model, seed=run.seed)
    weights = model_state(generator, discriminator)
    spec = StateSpec.from_config(run.model)
    optimizer = initial_optimizer_state({k: weights[k] for k in spec.parameters})
    progress = Progress()
    if resume is not None:
        _, progress, weights, optimizer = load_checkpoint(resume)
        load_model_state(generator, discriminator, weights)
    generator.to(device)
    discriminator.to(device)
    noise = fixed_noise(run.seed, 64, run.model.latent_dim)
    output.mkdir(parents=True, exist_ok=True)
    order = epoch_permutation(run.seed, progress.epoch, len(source))
    bar = tqdm(
        total=total_images,
        initial=min(progress.images_seen, total_images),
        unit="img",
        dynamic_ncols=True,
        disable=None,
    )
    started, started_images = time.perf_counter(), progress.images_seen
    while progress.images_seen < total_images:
        if progress.position >= len(order):
            progress.epoch, progress.position = progress.epoch + 1, 0
            order = epoch_permutation(run.seed, progress.epoch, len(source))
        take = min(
            run.batch_size, len(order) - progress.position, total_images - progress.images_seen
        )
        indices = order[progress.position : progress.position + take]
        result = compute_gradients(
            generator,
            discriminator,
            source.load(indices),
            indices,
            batch_size=run.batch_size,
            seed=run.seed,
            iteration=progress.iteration,
        )
        weights, optimizer = apply_gradients(weights, aggregate([result]), optimizer, run.adam)
        load_model_state(generator, discriminator, weights)
        progress.iteration += 1
        progress.position += take
        progress.images_seen += take
        rate = (progress.images_seen - started_images) / (time.perf_counter() - started)
        m = result.metrics
        bar.set_postfix_str(
            f"it {progress.iteration} G {m.g_loss:.3f} D {m.d_loss:.3f} "
            f"D(x) {m.d_real_accuracy:.0%} D(G(z)) {m.d_fake_accuracy:.0%} {rate:.0f} img/s"
        )
        bar.update(take)
        if dry_run:
            break
        done = progress.images_seen >= total_images
        if done or progress.iteration % sample_every == 0:
            png = sample_grid_png(generator, noise)
            (output / f"samples_{progress.iteration:06d}.png").write_bytes(png)
            (output / "samples_latest.png").write_bytes(png)
        if done or progress.iteration % checkpoint_every == 0:
            save_checkpoint(output / "checkpoint.safetensors", run, progress, weights, optimizer)
    bar.close()
    return progress


def build_parser() -> argparse.ArgumentParser:
    """Every option of gan-train-local, with defaults shown in --help."""
    p = argparse.ArgumentParser(
        prog="gan-train-local",
        description="Train the class DCGAN on this machine alone, with the same step as the "
        "distributed run. Writes sample grids (PNG) and a safetensors checkpoint.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--dataset",
        default="builtin",
        help="'builtin' (generated cartoon faces, no download) or a folder of images",
    )
    p.add_argument(
        "--builtin-size", type=int, default=20_000, help="images in the built-in dataset"
    )
    budget = p.add_mutually_exclusive_group()
    budget.add_argument(
        "--epochs", type=float, default=None, help="passes over the dataset (default 1)"
    )
    budget.add_argument("--images", type=int, default=None, help="stop after this many images")
    p.add_argument("--batch-size", type=int, default=64, help="images per optimizer step")
    p.add_argument("--lr", type=float, default=AdamConfig.lr, help="Adam learning rate")
    p.add_argument("--beta1", type=float, default=AdamConfig.beta1, help="Adam beta1")
    p.add_argument("--beta2", type=float, default=AdamConfig.beta2, help="Adam beta2")
    p.add_argument("--latent-dim", type=int, default=100, help="size of the generator's input")
    p.add_argument("--features", type=int, default=64, help="feature maps of both networks")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--seed", type=int, default=0, help="seeds weights, image order and noise")
    p.add_argument("--output", type=Path, default=Path("outputs/local"), help="output folder")
    p.add_argument("--sample-every", type=int, default=50, help="iterations between sample grids")
    p.add_argument(
        "--checkpoint-every", type=int, default=200, help="iterations between checkpoints"
    )
    p.add_argument(
        "--resume",
        type=Path,
        default=None,
        help="continue from a checkpoint (its run settings win over the flags above)",
    )
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    p.add_argument("--dry-run", action="store_true", help="one step, nothing written")
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``gan-train-local``."""
    args = build_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        device = resolve_device(args.device)
        if args.resume is not None:
            run, progress, _, _ = load_checkpoint(args.resume)
            print(
                f"Resuming from {args.resume} at iteration {progress.iteration} "
                f"({progress.images_seen} images seen)"
            )
        else:
            run = LocalRun(
                dataset=args.dataset,
                builtin_size=args.builtin_size,
                batch_size=args.batch_size,
                seed=args.seed,
                model=ModelConfig(
                    latent_dim=args.latent_dim,
                    generator_features=args.features,
                    discriminator_features=args.features,
                ),
                adam=AdamConfig(lr=args.lr, beta1=args.beta1, beta2=args.beta2),
            )
        source = open_source(run.dataset, builtin_size=run.builtin_size, seed=run.seed)
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    total = args.images if args.images is not None else math.ceil((args.epochs or 1) * len(source))
    print(
        f"Training on {source.name} ({len(source)} images) with {describe_device(device)}, "
        f"batch {run.batch_size}, until {total} images; output in {args.output}"
    )
    progress = train(
        run,
        source=source,
        total_images=total,
        device=device,
        output=args.output,
        sample_every=args.sample_every,
        checkpoint_every=args.checkpoint_every,
        resume=args.resume,
        dry_run=args.dry_run,
    )
    if args.dry_run:
        print("Dry run: one step completed, nothing written.")
    else:
        print(
            f"Done: {progress.iteration} iterations, {progress.images_seen} images. "
            f"Samples: {args.output / 'samples_latest.png'}; "
            f"checkpoint: {args.output / 'checkpoint.safetensors'}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
