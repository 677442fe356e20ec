"""``gan-train-local``: the textbook DCGAN loop on one machine, or on a lab under torchrun.

Each iteration takes the next batch of the epoch's order (``shared.epoch_order``, the
order the coordinator cuts units from) and runs the synchronous strategy's two phases
on it, folding each exactly as the coordinator folds one worker's unit: so
``gan-train-local`` at batch B, a one-worker synchronous run at units of B and
pytorch/examples' dcgan at batch B take the same steps. Under ``torchrun
--nproc-per-node N`` every rank computes its B/N images and DDP averages the
gradients (``shared.distributed``); the steps are those of a coordinator run with N
units of B/N per phase.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from shared import distributed
from shared.aggregation import AdamConfig
from shared.codec import OptimizerState, decode_snapshot, encode_snapshot, read_metadata
from shared.epoch_order import epoch_order
from shared.image_sources import ImageSource, shard_size_of
from shared.models import ModelConfig, StateSpec, build_models, load_model_state, model_state
from shared.samples import fixed_noise, sample_grid_png
from shared.strategies import Synchronous
from shared.unit_result import UnitMetrics


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
    builtin_seed: int = 0  # the coordinator's default: the same faces as a class run
    batch_size: int = 64
    seed: int = 0
    model: ModelConfig = field(default_factory=ModelConfig)
    adam: AdamConfig = field(default_factory=AdamConfig)


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


def _batch(order: list[int], progress: Progress, run: LocalRun, total: int, ranks: int) -> int:
    """Images in the next global batch: the run's size, cut by the epoch's end and the
    budget, and under torchrun to a multiple of the ranks (DDP averages equal shares)."""
    take = min(run.batch_size, len(order) - progress.position, total - progress.images_seen)
    return take - take % ranks


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
    world: distributed.World | None = None,
) -> Progress:
    """Train until ``total_images`` images were seen; rank 0 writes samples and checkpoints."""
    world = world or distributed.World()
    if run.batch_size % world.size:
        raise ValueError(f"--batch-size {run.batch_size} must divide into {world.size} ranks")
    generator, discriminator = build_models(run.model, seed=run.seed)
    weights = model_state(generator, discriminator)
    spec = StateSpec.from_config(run.model)
    strategy = Synchronous(
        seed=run.seed,
        batch_size=run.batch_size // world.size,
        latent_dim=run.model.latent_dim,
        adam=run.adam,
    )
    optimizer = strategy.initial_optimizer({k: weights[k] for k in spec.parameters})
    progress = Progress()
    if resume is not None:
        _, progress, weights, optimizer = load_checkpoint(resume)
        load_model_state(generator, discriminator, weights)
    generator.to(device)
    discriminator.to(device)
    # Each phase steps one network: DDP wraps the one whose gradient is averaged.
    phase_nets = (
        (generator, distributed.wrap(discriminator, world, device)),
        (distributed.wrap(generator, world, device), discriminator),
    )
    noise = fixed_noise(run.seed, 64, run.model.latent_dim)
    shard_size = shard_size_of(source)
    order = epoch_order(run.seed, progress.epoch, len(source), shard_size)
    if world.is_main:
        output.mkdir(parents=True, exist_ok=True)
    bar = tqdm(
        total=total_images, initial=min(progress.images_seen, total_images), unit="img",
        dynamic_ncols=True, disable=None if world.is_main else True,
    )  # fmt: skip
    started, started_images = time.perf_counter(), progress.images_seen
    while progress.images_seen < total_images:
        if progress.position >= len(order):
            progress.epoch, progress.position = progress.epoch + 1, 0
            order = epoch_order(run.seed, progress.epoch, len(source), shard_size)
        take = _batch(order, progress, run, total_images, world.size)
        if take == 0:  # fewer images left in the epoch than ranks
            progress.position = len(order)
            continue
        batch = order[progress.position : progress.position + take]
        mine = world.slice(batch)
        images = source.load(mine)
        metrics = UnitMetrics()
        for phase, nets in enumerate(phase_nets):
            version = 2 * progress.iteration + phase
            result = strategy.compute(
                *nets, images if strategy.needs_images(version) else None, mine, version=version
            )
            result.buffers = distributed.mean_across_ranks(result.buffers, world)
            fold = strategy.fold(weights, optimizer, [result], version=version)
            weights, optimizer = fold.weights, fold.optimizer
            load_model_state(generator, discriminator, weights)
            metrics = metrics.merged(result.metrics)
        progress.iteration += 1
        progress.position += take
        progress.images_seen += take
        rate = (progress.images_seen - started_images) / (time.perf_counter() - started)
        bar.set_postfix_str(
            f"it {progress.iteration} G {metrics.g_loss:.3f} D {metrics.d_loss:.3f} "
            f"D(x) {metrics.d_real_accuracy:.0%} D(G(z)) {metrics.d_fake_accuracy:.0%} "
            f"{rate:.0f} img/s"
        )
        bar.update(take)
        if dry_run:
            break
        if not world.is_main:
            continue
        done = progress.images_seen >= total_images
        if done or progress.iteration % sample_every == 0:
            png = sample_grid_png(generator, noise)
            (output / f"samples_{progress.iteration:06d}.png").write_bytes(png)
            (output / "samples_latest.png").write_bytes(png)
        if done or progress.iteration % checkpoint_every == 0:
            save_checkpoint(output / "checkpoint.safetensors", run, progress, weights, optimizer)
    bar.close()
    return progress


def total_images_for(epochs: float | None, images: int | None, dataset_size: int) -> int:
    """The image budget from ``--epochs`` or ``--images`` (one epoch by default)."""
    return images if images is not None else math.ceil((epochs or 1) * dataset_size)
