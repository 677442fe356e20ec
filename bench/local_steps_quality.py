"""Local-steps vs synchronous training at equal images: quality, bytes on the wire, steps.

    nice -n 19 python bench/local_steps_quality.py   # the full run (see docs/local-steps.md)
    python bench/local_steps_quality.py --smoke      # a one-minute check of the plumbing

The full run is about half an hour per schedule on one CPU core. On two cores, split the
schedules and merge the results:

    python bench/local_steps_quality.py --schedules baseline,sync-320x3,sync-64x3 \
        --output outputs/ls-a &
    python bench/local_steps_quality.py --no-adam-check --output outputs/ls-b \
        --schedules local-h4x3-bf16,local-h16x3-bf16,local-h32x3-bf16 &
    wait; python bench/local_steps_quality.py --merge outputs/ls-a outputs/ls-b

Trains the DCGAN once per schedule on the same images (default: one epoch of
Fashion-MNIST's 60,000 training images, resized from 28x28 to 64x64, one channel),
simulating in this process exactly what the coordinator does: K simulated workers each
compute one unit from W_t with the run's strategy (``shared.strategies``: synchronous D
then G phases, or local steps) and the strategy folds the results (Adam per phase, or
the outer Nesterov SGD). The single-process baseline is ``gan-train-local`` itself
(``shared.local_training.train``, batch 64): the textbook loop, so ``baseline`` and
``sync-64x1`` take the same steps (tests/shared and the coordinator's contract test
check it bit for bit). ``textbook`` is the same algorithm with its own random draws
(its one unit's image order and noise), so against ``baseline`` it also shows how much
one seed's draws move the distance.

Schedules are named on the command line (``--schedules``):

* ``baseline``                 gan-train-local, one step per 64 images
* ``textbook``                 the pytorch/examples DCGAN loop in one process: D then G on
                               each micro-batch, one Adam for the run (run as a single
                               local-steps unit of all the images, outer SGD lr 1)
* ``sync-<U>x<K>``             synchronous D then G phases, K units of U images per phase
                               (micro-batch min(U, --micro-batch)): DDP with K ranks
* ``local-h<H>x<K>[-lr<L>][-m<M>]``
                               local steps: units of H micro-batches (H * --micro-batch
                               images), K units per outer step, outer Nesterov SGD with
                               lr L (default 0.7) and momentum M (default 0.9; m0 = plain SGD)

Any sync or local schedule may end in ``-trimmed``, ``-median`` or ``-krum`` (the fold
combines results by coordinate-wise trimmed mean, median or Multi-Krum instead of the
mean: a run's ``aggregation``), then any of them in ``-bf16`` or ``-fp16`` (results
travel in that dtype: each one is encoded and decoded again before it is averaged,
exactly as the coordinator receives it) and then ``-s<N>`` (train with seed N instead of
``--seed``; the classifier, the real features and the evaluation noise stay those of
``--seed``, so distances compare).

Quality is a Frechet distance (lower is better) between generated and real *test*
images, in the penultimate-layer features of a small CNN classifier trained here on the
dataset's labels (no Inception weights can be downloaded on these machines, and a
classifier of the same domain gives features that separate clothes the way people
do). Its weights are cached as safetensors in the output folder.

Bytes on the wire are real: every simulated result is encoded with ``encode_result``
in the schedule's dtype and its ``len()`` counted; downloads are one fp32 weights
snapshot (``encode_snapshot``) per unit. Results are printed as a table and written to
``<output>/results.json``; an 8x8 sample grid per schedule goes to
``<images-dir>/local-steps-<schedule>.png``.

``--data synthetic`` (or ``auto`` without the Debian package ``dataset-fashion-mnist``)
uses generated labelled shapes instead, so the smoke test runs anywhere.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import math
import re
import shutil
import struct
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from torch.nn import functional as F

from shared.aggregation import AdamConfig, OuterConfig
from shared.codec import decode_result, encode_result, encode_snapshot, select_snapshot
from shared.epoch_order import epoch_order
from shared.local_training import LocalRun, load_checkpoint, train
from shared.models import (
    ModelConfig,
    StateSpec,
    build_models,
    load_model_state,
    model_state,
)
from shared.samples import fixed_noise, sample_grid_png
from shared.strategies import LocalSteps, Strategy, Synchronous
from shared.unit_result import UnitMetrics, UnitResult

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
DEFAULT_SCHEDULES = (
    "baseline",
    "textbook",
    "sync-64x1",
    "sync-32x2",
    "sync-320x3",
    "local-h4x3-bf16",
    "local-h16x3-bf16",
    "local-h32x3-bf16",
)
SMOKE_SCHEDULES = (
    "baseline",
    "textbook",
    "sync-64x1",
    "sync-32x2",
    "sync-320x3",
    "local-h4x3",
    "local-h16x3",
    "local-h16x3-bf16",
)
CLASSES = 10


# --- data ------------------------------------------------------------------------------


@dataclass
class Dataset:
    """Labelled images: uint8 (N, 1, 64, 64) for the GAN, labels for the classifier."""

    name: str
    train: Tensor
    train_labels: Tensor
    test: Tensor
    test_labels: Tensor


def read_idx(path: Path, limit: int | None = None) -> np.ndarray:
    """An idx file (gzipped, as Debian ships them) as a uint8 array, first ``limit`` items."""
    with gzip.open(path, "rb") as fh:
        data = fh.read()
    magic = struct.unpack(">I", data[:4])[0]
    if magic >> 8 != 0x08:  # 0x08 = unsigned byte
        raise ValueError(f"{path}: not a uint8 idx file (magic {magic:#x})")
    ndim = magic & 0xFF
    dims = list(struct.unpack(">" + "I" * ndim, data[4 : 4 + 4 * ndim]))
    array = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)
    if limit is not None:
        array = array[:limit]
    return array.copy()  # writable, so torch.from_numpy does not warn


def upscale(images28: np.ndarray) -> Tensor:
    """(N, 28, 28) uint8 to (N, 1, 64, 64) uint8, bilinear, in chunks to bound memory."""
    out = torch.empty(len(images28), 1, 64, 64, dtype=torch.uint8)
    for start in range(0, len(images28), 5000):
        chunk = torch.from_numpy(images28[start : start + 5000]).float().unsqueeze(1)
        big = F.interpolate(chunk, size=(64, 64), mode="bilinear", align_corners=False)
        out[start : start + 5000] = big.round_().clamp_(0, 255).to(torch.uint8)
    return out


def load_fashion_mnist(root: Path, train_limit: int, test_limit: int) -> Dataset:
    """Fashion-MNIST from the Debian package's gzipped idx files, resized to 64x64."""
    train = read_idx(root / "train-images-idx3-ubyte.gz", train_limit)
    train_labels = read_idx(root / "train-labels-idx1-ubyte.gz", train_limit)
    test = read_idx(root / "t10k-images-idx3-ubyte.gz", test_limit)
    test_labels = read_idx(root / "t10k-labels-idx1-ubyte.gz", test_limit)
    return Dataset(
        name=f"Fashion-MNIST ({root})",
        train=upscale(train),
        train_labels=torch.from_numpy(train_labels).long(),
        test=upscale(test),
        test_labels=torch.from_numpy(test_labels).long(),
    )


def synthetic_shapes(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Generated 28x28 labelled images: 5 shapes x 2 sizes, jittered, noisy (10 classes)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, CLASSES, count)
    yy, xx = np.mgrid[0:28, 0:28].astype(np.float32)
    cx = 14 + rng.uniform(-3, 3, (count, 1, 1)).astype(np.float32)
    cy = 14 + rng.uniform(-3, 3, (count, 1, 1)).astype(np.float32)
    size = np.where(labels >= 5, 10.0, 6.0)[:, None, None] * rng.uniform(0.85, 1.15, (count, 1, 1))
    dx, dy = (xx - cx) / size, (yy - cy) / size
    shape = (labels % 5)[:, None, None]
    r = np.sqrt(dx**2 + dy**2)
    masks = [
        (np.abs(dx) < 1) & (np.abs(dy) < 0.6),  # bar
        r < 1,  # disc
        ((np.abs(dx) < 0.2) & (np.abs(dy) < 1)) | ((np.abs(dy) < 0.2) & (np.abs(dx) < 1)),  # cross
        (r > 0.6) & (r < 1),  # ring
        (dy > -1) & (dy < 1) & (np.abs(dx) < (dy + 1) / 2),  # triangle
    ]
    mask = np.select([shape == k for k in range(5)], masks, False)
    intensity = rng.uniform(150, 255, (count, 1, 1))
    images = mask * intensity + rng.normal(0, 12, (count, 28, 28))
    return np.clip(images, 0, 255).astype(np.uint8), labels.astype(np.uint8)


def load_synthetic(train_count: int, test_count: int, seed: int) -> Dataset:
    train, train_labels = synthetic_shapes(train_count, seed)
    test, test_labels = synthetic_shapes(test_count, seed + 1)
    return Dataset(
        name="synthetic shapes (generated)",
        train=upscale(train),
        train_labels=torch.from_numpy(train_labels).long(),
        test=upscale(test),
        test_labels=torch.from_numpy(test_labels).long(),
    )


class TensorImages:
    """An ImageSource over images already in memory (what gan-train-local reads from)."""

    def __init__(self, images: Tensor, name: str) -> None:
        self.images, self.name = images, name

    def __len__(self) -> int:
        return len(self.images)

    def load(self, indices: Sequence[int]) -> Tensor:
        return self.images[torch.as_tensor(list(indices), dtype=torch.long)]


# --- the feature extractor and the Frechet distance ------------------------------------------


class Classifier(nn.Module):
    """A small CNN on 28x28 inputs; ``features`` is its penultimate layer."""

    def __init__(self, width: int, feature_dim: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),  # 14x14
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),  # 7x7
            nn.Flatten(),
            nn.Linear(2 * width * 49, feature_dim),
            nn.ReLU(),
        )
        self.head = nn.Sequential(nn.Dropout(0.3), nn.Linear(feature_dim, CLASSES))

    def features(self, x: Tensor) -> Tensor:
        return self.body(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.body(x))


def classifier_view(images: Tensor) -> Tensor:
    """64x64 images in [-1, 1] (real ones as uint8) to the classifier's 28x28 input."""
    if images.dtype == torch.uint8:
        images = images.float().div(127.5).sub(1.0)
    return F.interpolate(images, size=(28, 28), mode="bilinear", antialias=True)


def train_classifier(
    data: Dataset, *, width: int, feature_dim: int, epochs: int, seed: int, cache: Path
) -> tuple[Classifier, float]:
    """Train (or load from the safetensors cache) the classifier; return it and test accuracy."""
    key = hashlib.sha256(
        json.dumps(
            [data.name, len(data.train), len(data.test), width, feature_dim, epochs, seed]
        ).encode()
    ).hexdigest()[:12]
    path = cache / f"classifier-{key}.safetensors"
    model = Classifier(width, feature_dim)
    if path.exists():
        from safetensors import safe_open

        model.load_state_dict(load_file(path))
        with safe_open(str(path), "pt") as fh:
            accuracy = float(fh.metadata()["test_accuracy"])
        print(f"classifier: loaded {path} (test accuracy {accuracy:.2%})")
        return model.eval(), accuracy
    started = time.perf_counter()
    torch.manual_seed(seed)
    with torch.no_grad():
        inputs = torch.cat([classifier_view(c) for c in data.train.split(5000)])
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    rng = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        for batch in torch.randperm(len(inputs), generator=rng).split(128):
            loss = F.cross_entropy(model(inputs[batch]), data.train_labels[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    model.eval()
    with torch.no_grad():
        predictions = torch.cat(
            [model(classifier_view(c)).argmax(1) for c in data.test.split(2000)]
        )
    accuracy = float((predictions == data.test_labels).float().mean())
    cache.mkdir(parents=True, exist_ok=True)
    save_file(model.state_dict(), str(path), metadata={"test_accuracy": repr(accuracy)})
    print(
        f"classifier: trained {epochs} epoch(s) on {len(inputs)} images in "
        f"{time.perf_counter() - started:.0f} s, test accuracy {accuracy:.2%}; saved {path}"
    )
    return model, accuracy


@torch.no_grad()
def real_features(classifier: Classifier, images: Tensor) -> np.ndarray:
    return (
        torch.cat([classifier.features(classifier_view(c)) for c in images.split(1000)])
        .double()
        .numpy()
    )


@torch.no_grad()
def generated_features(
    classifier: Classifier, generator: nn.Module, count: int, latent_dim: int, seed: int
) -> np.ndarray:
    """Features of ``count`` samples from the generator in eval mode (as the class sees them)."""
    rng = torch.Generator().manual_seed(seed + 0xFD)
    was_training = generator.training
    generator.eval()
    feats = []
    for start in range(0, count, 500):
        z = torch.randn(min(500, count - start), latent_dim, 1, 1, generator=rng)
        feats.append(classifier.features(classifier_view(generator(z))))
    generator.train(was_training)
    return torch.cat(feats).double().numpy()


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """||mu_a - mu_b||^2 + Tr(Ca + Cb - 2 (Ca^1/2 Cb Ca^1/2)^1/2), square roots via eigh."""
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    w, v = np.linalg.eigh(cov_a)
    sqrt_a = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    middle = sqrt_a @ cov_b @ sqrt_a
    trace_sqrt = np.sqrt(np.clip(np.linalg.eigvalsh((middle + middle.T) / 2), 0, None)).sum()
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * trace_sqrt)


# --- schedules -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Schedule:
    """One way of spending the images; ``name`` is also the sample grid's file name."""

    name: str
    mode: str  # "baseline", "sync" or "local"
    unit_images: int
    units_per_step: int = 1
    inner_steps: int = 0
    outer_lr: float = 0.0
    outer_momentum: float = 0.0
    wire: str = "float32"
    seed: int | None = None  # None: --seed
    aggregation: str = "mean"

    def describe(self) -> str:
        seed = "" if self.seed is None else f", seed {self.seed}"
        if self.aggregation != "mean":
            seed = f", {self.aggregation}{seed}"
        if self.mode == "baseline":
            return f"gan-train-local, batch {self.unit_images}{seed}"
        wire = f", {self.wire} results{seed}"
        if self.mode == "sync":
            return (
                f"sync D then G phases, {self.units_per_step} unit(s) of {self.unit_images} "
                f"per step{wire}"
            )
        outer = (
            f"Nesterov lr {self.outer_lr:g} m {self.outer_momentum:g}"
            if self.outer_momentum
            else f"plain SGD lr {self.outer_lr:g}"
        )
        return (
            f"local H={self.inner_steps} ({self.unit_images}-image units), "
            f"{self.units_per_step} per outer step, {outer}{wire}"
        )

    def training_seed(self, default: int) -> int:
        return default if self.seed is None else self.seed


_SUFFIXES = re.compile(r"^(.+?)(?:-(trimmed|median|krum))?(?:-(bf16|fp16))?(?:-s(\d+))?$")
_AGGREGATION = {None: "mean", "trimmed": "trimmed_mean", "median": "median", "krum": "multi_krum"}
_WIRE = {None: "float32", "bf16": "bfloat16", "fp16": "float16"}
_SYNC = re.compile(r"^sync-(\d+)x(\d+)$")
_LOCAL = re.compile(r"^local-h(\d+)x(\d+)(?:-lr([0-9.]+))?(?:-m([0-9.]+))?$")


def parse_schedule(name: str, micro_batch: int, images: int = 60_000) -> Schedule:
    """``baseline``, ``textbook``, ``sync-<U>x<K>`` or ``local-h<H>x<K>[-lr<L>][-m<M>]``,
    then ``[-trimmed|-median|-krum][-bf16|-fp16][-s<N>]`` (see --help)."""
    match = _SUFFIXES.fullmatch(name)
    assert match is not None
    body, robust, wire_name, seed_text = match.groups()
    wire, seed = _WIRE[wire_name], (int(seed_text) if seed_text else None)
    aggregation = _AGGREGATION[robust]
    if body == "baseline" and wire_name is None:
        return Schedule(name, "baseline", micro_batch, seed=seed)
    if body == "textbook" and wire_name is None:
        # One local-steps unit of the whole run, applied as is (outer SGD, lr 1): the
        # pytorch/examples loop, D then G on every micro-batch, one Adam throughout.
        steps = math.ceil(images / micro_batch)
        return Schedule(name, "local", images, 1, steps, 1.0, 0.0, seed=seed)
    if m := _SYNC.match(body):
        return Schedule(name, "sync", int(m[1]), int(m[2]), wire=wire, seed=seed,
                        aggregation=aggregation)  # fmt: skip
    if m := _LOCAL.match(body):
        h, k = int(m[1]), int(m[2])
        lr = float(m[3]) if m[3] else OuterConfig.lr
        momentum = float(m[4]) if m[4] else OuterConfig.momentum
        return Schedule(name, "local", h * micro_batch, k, h, lr, momentum, wire, seed, aggregation)
    raise ValueError(f"unknown schedule {name!r} (see --help for the forms)")


@dataclass
class Outcome:
    """One row of the table."""

    schedule: str
    description: str
    steps: int
    images: int
    wire: str
    up_bytes_per_image: float
    down_bytes_per_image: float
    real_model_up_bytes_per_image: float
    real_model_down_bytes_per_image: float
    frechet_distance: float
    ratio_vs_baseline: float = math.nan
    wall_seconds: float = 0.0
    final_metrics: dict[str, float] = field(default_factory=dict)
    note: str = ""


@dataclass
class Context:
    data: Dataset
    model: ModelConfig
    adam: AdamConfig
    seed: int
    images: int
    micro_batch: int
    work: Path
    middle: Path  # the baseline's mid-run checkpoint, for the fresh-Adam comparison


def strategy_of(ctx: Context, schedule: Schedule) -> Strategy:
    """The strategy the simulated coordinator and workers use for ``schedule``."""
    seed = schedule.training_seed(ctx.seed)
    if schedule.mode == "sync":
        micro = min(schedule.unit_images, ctx.micro_batch)
        return Synchronous(seed, micro, ctx.model.latent_dim, adam=ctx.adam,
                           aggregation=schedule.aggregation)  # type: ignore[arg-type]
    outer = OuterConfig(schedule.outer_lr, schedule.outer_momentum)
    return LocalSteps(seed, ctx.micro_batch, ctx.model.latent_dim, inner=ctx.adam, outer=outer,
                      aggregation=schedule.aggregation)  # type: ignore[arg-type]


def iteration_result_bytes(
    strategy: Strategy, config: ModelConfig, dtype: torch.dtype, num_samples: int
) -> int:
    """Encoded size of one unit's results over a whole iteration (both phases in sync)."""
    spec = StateSpec.from_config(config)
    total = 0
    for version in range(strategy.versions_per_iteration):
        layout = strategy.layout(version, spec)
        blank = UnitResult(
            layout.kind, 0, num_samples,
            {k: torch.zeros(s) for k, s in layout.tensors.items()},
            {k: torch.zeros(s) for k, s in layout.buffers.items()},
            UnitMetrics(0.6931471805599453, 1.3862943611198906, 0.5, 0.5),
            {"inner_steps": "16", "batch_size": "64"},
        )  # fmt: skip
        total += len(encode_result(blank, dtype))
    return total


def iteration_download_bytes(strategy: Strategy, weights: dict[str, Tensor]) -> int:
    """What a worker holding the previous version downloads per iteration: the part a
    fold changed (one network and the buffers in sync), else the whole snapshot."""
    snapshot = encode_snapshot(0, weights)
    total = 0
    for version in range(strategy.versions_per_iteration):
        changed = strategy.changed_networks(version)
        total += len(select_snapshot(snapshot, changed) if len(changed) < 2 else snapshot)
    return total


class Bytes:
    """Running totals of result bytes uploaded and weight bytes downloaded."""

    def __init__(self) -> None:
        self.up = self.down = 0


def run_baseline(ctx: Context, schedule: Schedule) -> tuple[dict[str, Tensor], int]:
    """gan-train-local itself; stops halfway once to keep a mid-run checkpoint for later."""
    seed = schedule.training_seed(ctx.seed)
    run = LocalRun(dataset="bench", batch_size=schedule.unit_images, seed=seed, model=ctx.model)
    source = TensorImages(ctx.data.train, ctx.data.name)
    out = ctx.work / schedule.name
    half = (ctx.images // 2 // schedule.unit_images) * schedule.unit_images
    kwargs = dict(source=source, device=torch.device("cpu"), output=out)
    kwargs.update(sample_every=10**9, checkpoint_every=10**9)
    train(run, total_images=half, **kwargs)  # type: ignore[arg-type]
    middle = ctx.middle if seed == ctx.seed else out / "middle.safetensors"
    shutil.copyfile(out / "checkpoint.safetensors", middle)
    progress = train(run, total_images=ctx.images, resume=middle, **kwargs)  # type: ignore[arg-type]
    _, _, weights, _ = load_checkpoint(out / "checkpoint.safetensors")
    return weights, progress.iteration


def simulate(
    ctx: Context, schedule: Schedule, generator: nn.Module, discriminator: nn.Module
) -> tuple[dict[str, Tensor], int, Bytes, UnitMetrics]:
    """The coordinator's loop: per version K workers compute a unit each from the same
    weights (a synchronous G phase repeats the D phase's units), then one fold."""
    strategy = strategy_of(ctx, schedule)
    weights = model_state(generator, discriminator)
    spec = StateSpec.from_config(ctx.model)
    state = strategy.initial_optimizer({k: weights[k] for k in spec.parameters})
    wire = getattr(torch, schedule.wire)
    seed = schedule.training_seed(ctx.seed)
    size = len(ctx.data.train)
    order = epoch_order(seed, 0, size, size)[: ctx.images]
    totals = Bytes()
    position = version = 0
    units: list[list[int]] = []
    metrics = UnitMetrics()
    while position < len(order) or strategy.repeats_units(version):
        if not strategy.repeats_units(version):
            units = []
            for _ in range(schedule.units_per_step):
                if position < len(order):
                    units.append(order[position : position + schedule.unit_images])
                    position += len(units[-1])
        snapshot = encode_snapshot(version, weights)
        changed = strategy.changed_networks(version)
        download = len(select_snapshot(snapshot, changed) if len(changed) < 2 else snapshot)
        layout = strategy.layout(version, spec)
        results = []
        for indices in units:
            load_model_state(generator, discriminator, weights)
            images = ctx.data.train[torch.as_tensor(indices)]
            result = strategy.compute(
                generator, discriminator, images if strategy.needs_images(version) else None,
                indices, version=version,
            )  # fmt: skip
            body = encode_result(result, wire)  # what the worker would upload
            totals.up += len(body)
            totals.down += download
            results.append(decode_result(body, layout) if wire != torch.float32 else result)
        fold = strategy.fold(weights, state, results, version=version)
        weights, state = fold.weights, fold.optimizer
        metrics = metrics.merged(fold.metrics)
        version += 1
        if not all(torch.isfinite(v).all() for v in weights.values()):
            raise FloatingPointError(f"{schedule.name}: weights diverged at version {version}")
    return weights, version, totals, metrics


def run_schedule(
    ctx: Context,
    schedule: Schedule,
    classifier: Classifier,
    real: np.ndarray,
    fd_samples: int,
    images_dir: Path,
) -> Outcome:
    generator, discriminator = build_models(ctx.model, seed=schedule.training_seed(ctx.seed))
    started = time.perf_counter()
    note = ""
    if schedule.mode == "baseline":
        weights, steps = run_baseline(ctx, schedule)
        # Bytes if the same steps ran through a coordinator: sync units of 64, one per step.
        sync = Synchronous(0, schedule.unit_images, ctx.model.latent_dim)
        units = math.ceil(ctx.images / schedule.unit_images)
        totals = Bytes()
        totals.up = units * iteration_result_bytes(sync, ctx.model, torch.float32, 64)
        totals.down = units * iteration_download_bytes(sync, model_state(generator, discriminator))
        metrics = None
        note = "no network; bytes as if run as sync-64x1 (identical steps)"
    else:
        try:
            weights, steps, totals, metrics = simulate(ctx, schedule, generator, discriminator)
        except FloatingPointError as exc:
            weights, steps, totals, metrics = {}, -1, Bytes(), None
            note = str(exc)
    wall = time.perf_counter() - started
    if weights:
        load_model_state(generator, discriminator, weights)
        distance = frechet_distance(
            generated_features(classifier, generator, fd_samples, ctx.model.latent_dim, ctx.seed),
            real,
        )
    else:
        distance = math.inf
    images_dir.mkdir(parents=True, exist_ok=True)
    noise = fixed_noise(ctx.seed, 64, ctx.model.latent_dim)
    (images_dir / f"local-steps-{schedule.name}.png").write_bytes(sample_grid_png(generator, noise))
    real_model = ModelConfig(channels=3)
    wire = getattr(torch, schedule.wire)
    baseline = schedule.mode == "baseline"
    strategy = Synchronous(0, 64, 100) if baseline else strategy_of(ctx, schedule)
    real_up = iteration_result_bytes(strategy, real_model, wire, schedule.unit_images)
    real_down = iteration_download_bytes(strategy, model_state(*build_models(real_model)))
    outcome = Outcome(
        schedule=schedule.name,
        description=schedule.describe(),
        steps=steps,
        images=ctx.images,
        wire=schedule.wire,
        up_bytes_per_image=totals.up / ctx.images,
        down_bytes_per_image=totals.down / ctx.images,
        real_model_up_bytes_per_image=real_up / schedule.unit_images,
        real_model_down_bytes_per_image=real_down / schedule.unit_images,
        frechet_distance=distance,
        wall_seconds=wall,
        final_metrics=asdict(metrics) if metrics else {},
        note=note,
    )
    return outcome


# --- what a fresh inner Adam costs -----------------------------------------------------------


def _norm(d: dict[str, Tensor], prefix: str) -> float:
    return math.sqrt(sum(float(v.pow(2).sum()) for k, v in d.items() if k.startswith(prefix)))


def _cosine(a: dict[str, Tensor], b: dict[str, Tensor], prefix: str) -> float:
    dot = sum(float((a[k] * b[k]).sum()) for k in a if k.startswith(prefix))
    return dot / max(_norm(a, prefix) * _norm(b, prefix), 1e-30)


def fresh_adam_check(ctx: Context, middle: Path, steps: int = 16) -> dict[str, dict[str, float]]:
    """From the baseline's mid-run checkpoint, ``steps`` steps over the same next images:

    * ``warm``: the baseline's own next steps (textbook steps per micro-batch, warm Adam);
    * ``fresh``: the same steps with Adam reset to zero (isolates the reset);
    * ``local``: one local-steps unit of H = ``steps`` (fresh Adam, D-then-G order).

    Reports the size of each weight change and its cosine with the warm one.
    """
    _, progress, w_mid, adam_mid = load_checkpoint(middle)
    size = len(ctx.data.train)
    order = epoch_order(ctx.seed, 0, size, size)
    indices = order[progress.position : progress.position + steps * ctx.micro_batch]
    spec = StateSpec.from_config(ctx.model)
    generator, discriminator = build_models(ctx.model)
    sync = Synchronous(ctx.seed, ctx.micro_batch, ctx.model.latent_dim, adam=ctx.adam)
    changes: dict[str, dict[str, Tensor]] = {}
    for label, fresh in (("warm", False), ("fresh", True)):
        weights = dict(w_mid)
        params = {k: w_mid[k] for k in spec.parameters}
        state = sync.initial_optimizer(params) if fresh else adam_mid
        for step in range(steps):
            batch = indices[step * ctx.micro_batch : (step + 1) * ctx.micro_batch]
            images = ctx.data.train[torch.as_tensor(batch)]
            for phase in (0, 1):
                version = 2 * (progress.iteration + step) + phase
                load_model_state(generator, discriminator, weights)
                result = sync.compute(generator, discriminator, images, batch, version=version)
                fold = sync.fold(weights, state, [result], version=version)
                weights, state = fold.weights, fold.optimizer
        changes[label] = {k: w_mid[k] - weights[k] for k in spec.parameters}
    load_model_state(generator, discriminator, w_mid)
    local = LocalSteps(ctx.seed, ctx.micro_batch, ctx.model.latent_dim, inner=ctx.adam).compute(
        generator, discriminator, ctx.data.train[torch.as_tensor(indices)], indices,
        version=progress.iteration,
    )  # fmt: skip
    changes["local"] = local.tensors
    report: dict[str, dict[str, float]] = {}
    for label, change in changes.items():
        report[label] = {
            "from_iteration": progress.iteration,
            "steps": steps,
            "g_norm": _norm(change, "generator."),
            "d_norm": _norm(change, "discriminator."),
            "g_cos_vs_warm": _cosine(change, changes["warm"], "generator."),
            "d_cos_vs_warm": _cosine(change, changes["warm"], "discriminator."),
        }
    return report


def merge_results(folders: Sequence[Path], output: Path) -> list[str]:
    """Rows of several runs with equal settings in one results.json; returns their names.

    Their cached files (the classifier, the baseline's mid-run checkpoint) and sample grids
    come along, so the merged folder resumes like a single run's.
    """
    merged: dict | None = None
    rows: dict[str, dict] = {}
    output.mkdir(parents=True, exist_ok=True)
    for folder in folders:
        report = json.loads((folder / "results.json").read_text())
        settings = {k: v for k, v in report.items() if k not in _PER_RUN}
        if merged is None:
            merged = settings
        elif settings != merged:
            raise SystemExit(f"{folder}: other settings than {folders[0]}; cannot merge")
        for row in report["schedules"]:
            rows.setdefault(row["schedule"], row)
        if folder.resolve() != output.resolve():
            for path in [*folder.glob("*.safetensors"), *folder.glob("*.png")]:
                shutil.copyfile(path, output / path.name)
    assert merged is not None
    (output / "results.json").write_text(
        json.dumps({**merged, "schedules": list(rows.values())}, indent=2)
    )
    return list(rows)


_PER_RUN = {"schedules", "table", "total_seconds", "fresh_adam_check"}


# --- output --------------------------------------------------------------------------------


def format_table(outcomes: Sequence[Outcome], reference: str) -> str:
    """A Markdown table of the outcomes; byte ratios are against ``reference`` (sync fp32)."""
    ref = next((o for o in outcomes if o.schedule == reference), None)
    head = (
        "| schedule | coord. steps | wire | up B/img | down B/img | up+down B/img | "
        f"fewer bytes than {reference} (up / up+down) | Frechet distance | "
        "ratio vs baseline | wall s |"
    )
    lines = [head, "|" + "---|" * 10]
    for o in outcomes:
        total = o.up_bytes_per_image + o.down_bytes_per_image
        if ref is not None:
            ref_total = ref.up_bytes_per_image + ref.down_bytes_per_image
            fewer = (
                f"{ref.up_bytes_per_image / o.up_bytes_per_image:.1f}x / {ref_total / total:.1f}x"
            )
        else:
            fewer = "n/a"
        lines.append(
            f"| {o.schedule} | {o.steps} | {o.wire} | {o.up_bytes_per_image:,.0f} | "
            f"{o.down_bytes_per_image:,.0f} | {total:,.0f} | {fewer} | "
            f"{o.frechet_distance:.2f} | {o.ratio_vs_baseline:.2f} | {o.wall_seconds:.0f} |"
        )
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="local_steps_quality.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--smoke",
        action="store_true",
        help="quick plumbing check: 2,000 images, 8 feature maps, a tiny classifier, 512 "
        "samples for the distance; grids go to the output folder unless --images-dir is given",
    )
    p.add_argument(
        "--data",
        choices=("auto", "fashion-mnist", "synthetic"),
        default="auto",
        help="image source: Fashion-MNIST from the Debian package, generated labelled "
        "shapes, or auto (Fashion-MNIST when installed) (default: auto)",
    )
    p.add_argument(
        "--fashion-mnist-dir",
        type=Path,
        default=FASHION_MNIST_DIR,
        help=f"folder of the gzipped idx files (default: {FASHION_MNIST_DIR})",
    )
    p.add_argument(
        "--images",
        type=int,
        default=None,
        help="training images per schedule, the same for all (default: 60000, one epoch; "
        "smoke: 2000)",
    )
    p.add_argument(
        "--schedules",
        default=None,
        help="comma-separated schedules, run in this order (default: "
        f"{','.join(DEFAULT_SCHEDULES)}; smoke: {','.join(SMOKE_SCHEDULES)}); forms: "
        "baseline, sync-<U>x<K>, local-h<H>x<K>[-lr<L>][-m<M>], the last two optionally "
        "followed by -trimmed, -median or -krum (the fold's aggregation), then any of them by "
        "-bf16 or -fp16 and -s<N>",
    )
    p.add_argument(
        "--reference",
        default="sync-320x3",
        help="sync schedule the byte savings are measured against (default: %(default)s)",
    )
    p.add_argument(
        "--micro-batch", type=int, default=64, help="images per micro-batch (default: 64)"
    )
    p.add_argument(
        "--features",
        type=int,
        default=None,
        help="feature maps of G and D, the same for every schedule (default: 64, the class "
        "model's; smoke: 8)",
    )
    p.add_argument("--latent-dim", type=int, default=100, help="G's input size (default: 100)")
    p.add_argument(
        "--fd-samples",
        type=int,
        default=None,
        help="generated and real test images in the Frechet distance (default: 10000; smoke: 512)",
    )
    p.add_argument(
        "--classifier-epochs",
        type=int,
        default=None,
        help="epochs of the feature classifier (default: 2; smoke: 4)",
    )
    p.add_argument(
        "--classifier-width",
        type=int,
        default=16,
        help="feature maps of the classifier's first conv (second has twice as many; its "
        "penultimate layer has 128 features) (default: 16; smoke: 8, with 32 features)",
    )
    p.add_argument("--seed", type=int, default=0, help="seeds everything (default: 0)")
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (default: 1: on a shared machine a second thread mostly "
        "waits for the first)",
    )
    p.add_argument(
        "--output",
        type=Path,
        default=Path("outputs/bench-local-steps"),
        help="results.json, the classifier cache, checkpoints (default: %(default)s)",
    )
    p.add_argument(
        "--images-dir",
        type=Path,
        default=None,
        help="where local-steps-<schedule>.png go (default: docs/images; smoke: --output)",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="keep the rows of an earlier run in <output>/results.json with the same settings "
        "and run only the schedules it lacks",
    )
    p.add_argument(
        "--merge",
        nargs="+",
        type=Path,
        metavar="DIR",
        help="combine the results.json of runs with the same settings (e.g. disjoint "
        "--schedules run in parallel, one per core) into --output, then print the table",
    )
    p.add_argument(
        "--no-adam-check",
        action="store_true",
        help="skip the fresh-vs-warm inner Adam comparison (needs the baseline schedule)",
    )
    return p


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark; returns what it writes to results.json."""
    args = build_parser().parse_args(argv)
    smoke = args.smoke
    images = args.images or (2000 if smoke else 60_000)
    features = args.features or (8 if smoke else 64)
    fd_samples = args.fd_samples or (512 if smoke else 10_000)
    classifier_epochs = args.classifier_epochs or (4 if smoke else 2)
    images_dir = args.images_dir or (args.output if smoke else Path("docs/images"))
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    names = (
        args.schedules.split(",")
        if args.schedules
        else (SMOKE_SCHEDULES if smoke else DEFAULT_SCHEDULES)
    )
    if args.merge:
        merged = merge_results(args.merge, args.output)
        names, args.resume = (names if args.schedules else merged), True
    schedules = [parse_schedule(s.strip(), args.micro_batch, images) for s in names]

    source = args.data
    if source == "auto":
        present = (args.fashion_mnist_dir / "train-images-idx3-ubyte.gz").exists()
        source = "fashion-mnist" if present else "synthetic"
    started = time.perf_counter()
    if source == "fashion-mnist":
        data = load_fashion_mnist(args.fashion_mnist_dir, images, fd_samples)
    else:
        data = load_synthetic(images, fd_samples, args.seed)
    if len(data.train) < images:
        raise SystemExit(f"only {len(data.train)} training images, asked for {images}")
    print(
        f"data: {data.name}, {len(data.train)} train / {len(data.test)} test images at 64x64, "
        f"loaded in {time.perf_counter() - started:.1f} s; torch {torch.__version__}, "
        f"{args.threads} thread(s)"
    )
    args.output.mkdir(parents=True, exist_ok=True)
    width, feature_dim = (8, 32) if smoke else (args.classifier_width, 128)
    classifier, accuracy = train_classifier(
        data,
        width=width,
        feature_dim=feature_dim,
        epochs=classifier_epochs,
        seed=args.seed,
        cache=args.output,
    )
    real = real_features(classifier, data.test)
    model = ModelConfig(
        latent_dim=args.latent_dim,
        generator_features=features,
        discriminator_features=features,
        channels=1,
    )
    reference_distances = {
        "real_train_vs_test": frechet_distance(
            real_features(classifier, data.train[:fd_samples]), real
        ),
    }
    untrained, _ = build_models(model, seed=args.seed)
    reference_distances["untrained_generator"] = frechet_distance(
        generated_features(classifier, untrained, fd_samples, model.latent_dim, args.seed), real
    )
    print(
        f"references: real train vs test {reference_distances['real_train_vs_test']:.2f}, "
        f"untrained G {reference_distances['untrained_generator']:.2f}"
    )
    report: dict = {
        "data": data.name,
        "images": images,
        "model": model.to_dict(),
        "micro_batch": args.micro_batch,
        "seed": args.seed,
        "threads": args.threads,
        "fd_samples": fd_samples,
        "classifier": {"width": width, "feature_dim": feature_dim, "test_accuracy": accuracy},
        "reference_distances": reference_distances,
        "reference_schedule": args.reference,
        "schedules": [],
    }
    settings = {k: v for k, v in report.items() if k != "schedules"}
    outcomes: list[Outcome] = []
    previous = args.output / "results.json"
    if args.resume and previous.exists():
        old = json.loads(previous.read_text())
        if {k: old.get(k) for k in settings} == json.loads(json.dumps(settings)):
            outcomes = [Outcome(**row) for row in old["schedules"]]
            print(f"resuming: kept {', '.join(o.schedule for o in outcomes)}")
        else:
            print("resume: earlier results.json has other settings; starting over")
    middle = args.output / "baseline-middle.safetensors"
    with tempfile.TemporaryDirectory(prefix="local-steps-bench-") as work:
        ctx = Context(
            data, model, AdamConfig(), args.seed, images, args.micro_batch, Path(work), middle
        )
        for schedule in schedules:
            if any(o.schedule == schedule.name for o in outcomes):
                continue
            print(f"== {schedule.name}: {schedule.describe()}", flush=True)
            outcome = run_schedule(ctx, schedule, classifier, real, fd_samples, images_dir)
            outcomes.append(outcome)
            baseline = next((o for o in outcomes if o.schedule == "baseline"), None)
            for o in outcomes:
                if baseline is not None:
                    o.ratio_vs_baseline = o.frechet_distance / baseline.frechet_distance
            print(
                f"   {outcome.steps} steps, Frechet distance {outcome.frechet_distance:.2f}, "
                f"{outcome.wall_seconds:.0f} s",
                flush=True,
            )
            report["schedules"] = [asdict(o) for o in outcomes]
            (args.output / "results.json").write_text(json.dumps(report, indent=2))
        baseline = next((o for o in outcomes if o.schedule == "baseline"), None)
        for o in outcomes:  # rows kept by --resume too
            if baseline is not None:
                o.ratio_vs_baseline = o.frechet_distance / baseline.frechet_distance
        report["schedules"] = [asdict(o) for o in outcomes]
        if middle.exists() and not args.no_adam_check:
            report["fresh_adam_check"] = fresh_adam_check(ctx, middle, 4 if smoke else 16)
    report["table"] = format_table(outcomes, args.reference)
    report["total_seconds"] = time.perf_counter() - started
    (args.output / "results.json").write_text(json.dumps(report, indent=2))
    print()
    print(report["table"])
    print(
        f"\nclassifier test accuracy {accuracy:.2%}; references: "
        + ", ".join(f"{k} {v:.2f}" for k, v in reference_distances.items())
    )
    if "fresh_adam_check" in report:
        steps = report["fresh_adam_check"]["warm"]["steps"]
        print(f"inner Adam, fresh vs warm ({steps} steps from the baseline's mid-run weights):")
        for label, row in report["fresh_adam_check"].items():
            print(
                f"  {label:>5}: |dG| {row['g_norm']:.4f} |dD| {row['d_norm']:.4f} "
                f"cos(G, warm) {row['g_cos_vs_warm']:.3f} cos(D, warm) {row['d_cos_vs_warm']:.3f}"
            )
    print(f"total {report['total_seconds']:.0f} s; results in {args.output / 'results.json'}")
    return report


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(130)
