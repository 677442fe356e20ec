"""A class in virtual time: quality against class minutes, per training mode and class size.

    python bench/class_simulator.py --workers 4 16 --minutes 6        # Fashion-MNIST
    python bench/class_simulator.py --smoke                           # a one-minute check

N simulated workers (laptops at ``--laptop-speed`` images/s of a textbook step, and
``--gpus`` of them ``--gpu-speedup`` times faster) join over the first
``--join-seconds`` (and ``--leave-fraction`` of them leave mid-unit later) and train one
run together through a simulated coordinator, each mode in turn: synchronous phases,
local steps with a barrier, asynchronous local steps (the last two also with dynamic
local updates, ``-dynamic``, and with each worker's inner Adam kept, ``-kept``).
Nothing is re-implemented that the product has: units come from the coordinator's
planner (``plan_epoch``), the aggregator's step rule decides when to fold
(``should_step``), and every unit is really computed and folded by the run's strategy
(``shared.strategies``: the worker's and the coordinator's own code), so the weights at
any virtual moment are the weights such a class would have. What is simulated is time:

* a unit's compute takes its images / the worker's speed (a synchronous phase 0.55 of
  a textbook step per image, measured in docs/training.md: both phases cost 1.07);
* transfers take their bytes at the class model's size (weights 25.4 MB, or the one
  network a synchronous fold changed; results as the run's dtype encodes them) over
  ``--bandwidth`` MB/s; in asynchronous mode the worker claims and downloads its next
  unit while one computes (pipelining), so only what exceeds the compute shows;
* a fold takes ``--fold-seconds`` on the coordinator;
* the claim rules of the coordinator: with a barrier a version leases only the units
  its step needs, its G phase repeats its D phase's units, and a fold ends the leases
  still out (their work is lost); asynchronously every claim gets a unit and a result
  more than ``max_staleness`` versions old is refused; with ``-dynamic`` a claim joins
  fresh units by the coordinator's ``units_per_claim`` at the worker's speed, timed
  from its results as the coordinator times it.

Quality is the Fréchet distance of ``bench/local_steps_quality.py``'s classifier kit,
taken every ``--eval-minutes`` of class time, on a narrower model than the class's
(``--features``) so that a sweep runs in minutes: the model's size changes what a step
costs in real time, not the class minutes charged, which use the laptop speed given.
The reference is one laptop alone running ``gan-train-local`` (the textbook loop, batch
64, no network). It prints, per mode and N: the distance reached, the class minutes to
reach the distance the lone laptop reaches after one epoch of the images, the speed-up
over the lone laptop, how soon the lone laptop first drew as well as the run's last
measurement (a speed-up at equal quality, for runs that stop short of the target), and
the share of worker time spent computing; and writes
``results.json`` and a plot (``quality-vs-minutes.svg``).
"""

from __future__ import annotations

import argparse
import heapq
import importlib.util
import itertools
import json
import math
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import torch

from coordinator_service.db.models import Run, StepReadiness
from coordinator_service.training.aggregator import should_step
from coordinator_service.training.planner import plan_epoch, units_per_claim
from shared.codec import encode_result
from shared.models import ModelConfig, StateSpec, build_models, load_model_state, model_state
from shared.protocol import RunConfig
from shared.strategies import InnerOptimizer, Strategy, strategy_for
from shared.unit_result import UnitMetrics, UnitResult

_spec = importlib.util.spec_from_file_location(
    "local_steps_quality", Path(__file__).with_name("local_steps_quality.py")
)
assert _spec is not None and _spec.loader is not None
quality = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = quality
_spec.loader.exec_module(quality)

MB = 1e6
PHASE_COST = 0.55  # a synchronous phase per image, in textbook steps (both: 1.07)
EPOCH0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
# A local mode's suffixes: -dynamic, dynamic local updates (--unit-seconds); -kept, each
# worker keeps its inner Adam across its units (inner_optimizer per_worker).
SUFFIXES = ("dynamic", "kept")
COLOURS = {"lone laptop": "#888888", "synchronous": "#e6a23c", "local_steps": "#3fa7d6",
           "async_local_steps": "#59c27a", "local_steps-dynamic": "#1d5f8a",
           "async_local_steps-dynamic": "#2b7a3d", "async_local_steps-kept": "#a05cc8",
           "local_steps-kept": "#c85c8e"}  # fmt: skip


def mode_parts(mode: str) -> tuple[str, list[str]]:
    """``async_local_steps-dynamic-kept`` -> the run's result kind and its suffixes."""
    kind, *suffixes = mode.split("-")
    if kind not in ("synchronous", "local_steps", "async_local_steps") or not set(
            suffixes) <= set(SUFFIXES) or (suffixes and kind == "synchronous"):  # fmt: skip
        raise SystemExit(f"unknown mode {mode!r} (see --modes in --help)")
    return kind, suffixes


@dataclass(eq=False)
class SimWorker:
    name: str
    speed: float  # images/s of a textbook step
    bandwidth: float  # bytes/s to and from the coordinator
    joins: float  # virtual seconds
    leaves: float = math.inf  # virtual seconds: its lease expires lease_seconds later
    computing: float = 0.0  # seconds spent computing
    waiting: bool = False
    first: bool = True
    inner: InnerOptimizer = field(default_factory=InnerOptimizer)  # kept: its inner Adam
    measured: float | None = None  # images/s as the coordinator measures it
    last_result: float | None = None  # when its last result was accepted


@dataclass(eq=False)
class Lease:
    worker: SimWorker
    unit: int  # index into Class.units
    version: int
    result: UnitResult | None  # None: --timing-only
    seconds_computing: float
    started: float = 0.0


@dataclass
class Class:
    """The simulated coordinator's state for one run."""

    config: RunConfig
    strategy: Strategy
    weights: dict[str, torch.Tensor]
    optimizer: Any
    units: list[list[int]] = field(default_factory=list)  # every unit so far, by index
    status: dict[int, str] = field(default_factory=dict)  # unit -> pending/leased/done
    epoch_units: list[int] = field(default_factory=list)  # the current epoch's
    pinned: list[int] = field(default_factory=list)  # a G phase's units (D's again)
    results: list[tuple[int, Lease]] = field(default_factory=list)  # open: (unit, lease)
    version: int = 0
    epoch: int = 0
    started: float = 0.0  # when the current version began
    out: dict[int, list[Lease]] = field(default_factory=dict)  # unit -> active leases
    leased_before: set[int] = field(default_factory=set)
    images: int = 0  # images folded


def class_model_bytes(config: RunConfig) -> dict[str, float]:
    """Bytes per transfer at the class model's size (what time is charged for)."""
    real = ModelConfig()
    spec = StateSpec.from_config(real)
    strategy = strategy_for(config)
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16,
             "float16": torch.float16}[config.result_dtype]  # fmt: skip
    sizes: dict[str, float] = {"weights": 4.0 * spec.numel()}
    for version in range(strategy.versions_per_iteration):
        layout = strategy.layout(version, spec)
        zeros = [{k: torch.zeros(s) for k, s in part.items()}
                 for part in (layout.tensors, layout.buffers)]  # fmt: skip
        blank = UnitResult(layout.kind, 0, 1, zeros[0], zeros[1], UnitMetrics())
        sizes[f"result{version}"] = float(len(encode_result(blank, dtype)))
        changed = strategy.changed_networks(version)
        part = sum(4 * math.prod(s) for k, s in {**spec.parameters, **spec.buffers}.items()
                   if k.split(".")[0] in changed or k.endswith(("running_mean", "running_var")))
        sizes[f"download{version}"] = float(part)  # fmt: skip
    return sizes


class Simulation:
    """One run of one mode with one class, in virtual time."""

    def __init__(self, args: argparse.Namespace, mode: str, workers: list[SimWorker],
                 data: Any, evaluate: Any, target: float | None = None,
                 **overrides: Any) -> None:  # fmt: skip
        self.args, self.mode, self.workers, self.data, self.evaluate = (
            args, mode, workers, data, evaluate)  # fmt: skip
        self.target = target  # stop once the distance is at most this
        kind, suffixes = mode_parts(mode)
        extra: dict[str, Any] = {}
        if kind == "synchronous":
            extra = {"images_per_unit": args.sync_unit, "units_per_step": len(workers)}
        else:
            extra = {"images_per_unit": args.inner_steps * args.micro_batch,
                     "units_per_step": args.async_k if kind == "async_local_steps"
                     else min(len(workers), args.units_per_step), "result_dtype": "bfloat16"}
            if kind == "async_local_steps":
                extra["outer_momentum_delay"] = args.momentum_delay
            for name in ("inner_lr", "outer_lr", "outer_momentum"):
                if getattr(args, name) is not None:
                    extra[name] = getattr(args, name)
        if "dynamic" in suffixes:  # small planned units, joined per claim to a worker's speed
            extra.update(images_per_unit=args.base_inner_steps * args.micro_batch,
                         unit_seconds=args.unit_seconds)  # fmt: skip
        if "kept" in suffixes:
            extra["inner_optimizer"] = "per_worker"
        self.config = RunConfig(
            result_kind=kind, batch_size=args.micro_batch, seed=args.seed,
            latent_dim=args.latent_dim, generator_features=args.features,
            discriminator_features=args.features, step_timeout=args.step_timeout,
            dataset={"size": len(data.train), "shard_size": min(1000, len(data.train))},
            **{**extra, **overrides},
        )  # fmt: skip
        self.model = ModelConfig(latent_dim=args.latent_dim, generator_features=args.features,
                                 discriminator_features=args.features, channels=1)
        generator, discriminator = build_models(self.model, seed=args.seed)
        self.nets = (generator, discriminator)
        weights = model_state(generator, discriminator)
        strategy = strategy_for(self.config)
        params = {k: weights[k] for k in StateSpec.from_config(self.model).parameters}
        self.run = Class(self.config, strategy, weights, strategy.initial_optimizer(params))
        self.sizes = class_model_bytes(self.config)
        self.events: list[tuple[float, int, str, Any]] = []
        self.seq = itertools.count()
        self.curve: list[tuple[float, float]] = []
        self.expired = 0  # leases of workers that left, ended by expiry
        self.refused = 0  # results whose lease a fold had ended: computed for nothing
        self.staleness: list[int] = []  # of every folded result
        self.new_epoch()

    # --- the coordinator ------------------------------------------------------------------

    def add_units(self, units: list[list[int]]) -> list[int]:
        run = self.run
        first = len(run.units)
        run.units += units
        for u in range(first, len(run.units)):
            run.status[u] = "pending"
        return list(range(first, len(run.units)))

    def new_epoch(self) -> None:
        run = self.run
        left = [u for u in run.epoch_units if run.status[u] != "done"]  # still out
        units = self.add_units([indices for _, indices in plan_epoch(self.config, run.epoch)])
        run.epoch_units = left + units
        run.pinned = []

    def pool(self) -> list[int]:
        """The units the current version hands out, in unit order."""
        run = self.run
        units = run.pinned or run.epoch_units
        return [u for u in units if run.status[u] == "pending"]

    def claim(self, worker: SimWorker) -> int | None:
        run = self.run
        pending = self.pool()
        if not pending:
            return None
        if self.config.staleness_bound() == 0 and not run.pinned:  # the claim gate
            out = sum(1 for leases in run.out.values() for lease in leases
                      if lease.version == run.version)  # fmt: skip
            if len(run.results) + out >= self.config.units_per_step:
                return None
        unit = pending[0]
        joins = units_per_claim(self.config, worker.measured)
        if joins > 1 and not run.pinned and not run.leased_before.intersection(pending):
            # The coordinator's joined claim: fresh units, in unit order, become the first.
            picked = pending[:joins]
            run.units[unit] = [i for u in picked for i in run.units[u]]
            for u in picked[1:]:
                run.status[u] = "joined"
                run.epoch_units.remove(u)
        run.status[unit] = "leased"
        run.leased_before.add(unit)
        return unit

    def readiness(self) -> StepReadiness:
        run = self.run
        return StepReadiness(accepted=len(run.results), any_pending=bool(self.pool()),
                             any_leased="leased" in run.status.values())  # fmt: skip

    def maybe_fold(self, now: float) -> bool:
        run = self.run
        state = Run(run_id=1, status="active", config=self.config, iteration=run.version,
                    epoch=run.epoch, iteration_started_at=EPOCH0 + timedelta(seconds=run.started),
                    created_at=EPOCH0, finished_at=None)  # fmt: skip
        if not should_step(state, self.readiness(), EPOCH0 + timedelta(seconds=now)):
            return False
        ordered = sorted(run.results, key=lambda item: item[0])  # the aggregator's unit order
        if not self.args.timing_only:
            fold = run.strategy.fold(run.weights, run.optimizer,
                                     [lease.result for _, lease in ordered], version=run.version)
            run.weights, run.optimizer = fold.weights, fold.optimizer
        if not run.strategy.repeats_units(run.version + 1):  # each image once (not D and G)
            run.images += sum(len(run.units[unit]) for unit, _ in ordered)
        folded = [unit for unit, _ in ordered]
        self.staleness += [run.version - lease.version for _, lease in ordered]
        run.results = []
        run.version += 1
        run.started = now
        # Leases whose results could not be accepted any more end: with a barrier all of
        # them, else those left more than max_staleness behind; their images go back.
        oldest = run.version - self.config.staleness_bound()
        for unit, leases in run.out.items():
            leases[:] = [lease for lease in leases if lease.version >= oldest]
            if not leases and run.status[unit] == "leased":
                run.status[unit] = "pending"
        if run.strategy.repeats_units(run.version):  # a G phase: the D phase's units again
            run.pinned = self.add_units([run.units[u] for u in folded])
        else:
            run.pinned = []
            # The next epoch is planned once this one is all in; without a barrier, once
            # none of it is left to hand out (the coordinator's rule, StatesRepo.commit_step).
            barrier = self.config.staleness_bound() == 0
            if all(run.status[u] != "pending" if not barrier else run.status[u] == "done"
                   for u in run.epoch_units):  # fmt: skip
                run.epoch += 1
                self.new_epoch()
        self.push(now + self.args.fold_seconds, "publish", None)
        return True

    # --- events ---------------------------------------------------------------------------

    def push(self, at: float, kind: str, payload: Any) -> None:
        heapq.heappush(self.events, (at, next(self.seq), kind, payload))

    def start(self, worker: SimWorker, now: float) -> None:
        run = self.run
        if now >= worker.leaves:
            return
        unit = self.claim(worker)
        if unit is None:
            worker.waiting = True
            return
        worker.waiting = False
        indices = run.units[unit]
        load_model_state(*self.nets, run.weights)
        strategy = run.strategy
        images = self.data.train[torch.as_tensor(indices)] if strategy.needs_images(
            run.version) else None  # fmt: skip
        result = None if self.args.timing_only else strategy.compute(
            *self.nets, images, indices, version=run.version, inner=worker.inner)  # fmt: skip
        phase = run.version % strategy.versions_per_iteration
        kind = self.config.result_kind
        cost = PHASE_COST if kind == "synchronous" else 1.0
        computing = len(indices) * cost / worker.speed
        transfer = (self.sizes[f"download{phase}"] if kind == "synchronous"
                    else self.sizes["weights"]) + self.sizes[f"result{phase}"]  # fmt: skip
        transfer /= worker.bandwidth
        if kind == "async_local_steps" and not worker.first:
            transfer = max(0.0, transfer - computing)  # pipelined behind the compute
        worker.first = False
        lease = Lease(worker, unit, run.version, result, computing, now)
        run.out.setdefault(unit, []).append(lease)
        self.push(now + computing + transfer, "done", lease)

    def done(self, lease: Lease, now: float) -> None:
        run, worker = self.run, lease.worker
        worker.computing += max(0.0, min(lease.seconds_computing, worker.leaves - lease.started))
        if now > worker.leaves:  # it left mid-unit: nothing comes, the lease will expire
            return
        leases = run.out.get(lease.unit, [])
        if lease not in leases:  # ended by a fold: refused (409), its images already back
            self.refused += 1
            self.start(worker, now)
            return
        leases.remove(lease)
        if run.status[lease.unit] == "leased":  # else another copy came first
            run.status[lease.unit] = "done"
            # Timed as the coordinator times it (workers.record_result).
            since = max(lease.started, worker.last_result or lease.started)
            pace = len(run.units[lease.unit]) / max(now - since, 1e-3)
            worker.measured = pace if worker.measured is None else (worker.measured + pace) / 2
            worker.last_result = now
            run.results.append((lease.unit, lease))
            self.maybe_fold(now)
        self.start(worker, now)

    def expire(self, worker: SimWorker) -> None:
        """The coordinator's expiry of a worker that left: its units go back to the pool."""
        run = self.run
        for unit, leases in run.out.items():
            kept = [lease for lease in leases if lease.worker is not worker]
            self.expired += len(leases) - len(kept)
            leases[:] = kept
            if not leases and run.status[unit] == "leased":
                run.status[unit] = "pending"

    def simulate(self) -> dict[str, Any]:
        end = self.args.minutes * 60
        for worker in self.workers:
            self.push(worker.joins, "join", worker)
            if worker.leaves < end:
                self.push(worker.leaves + self.config.lease_seconds, "expire", worker)
        step = self.args.eval_minutes * 60
        for k in range(0 if self.args.timing_only else int(end // step) + 1):
            self.push(k * step, "eval", None)
        self.push(0.0, "tick", None)
        started = time.perf_counter()
        while self.events:
            now, _, kind, payload = heapq.heappop(self.events)
            if now > end:
                break
            if kind == "join":
                self.start(payload, now)
            elif kind == "done":
                self.done(payload, now)
            elif kind == "expire":
                self.expire(payload)
            elif kind in ("publish", "tick"):
                if kind == "tick":
                    self.maybe_fold(now)
                    self.push(now + 1.0, "tick", None)
                for worker in self.workers:
                    if worker.waiting and worker.joins <= now:
                        self.start(worker, now)
            elif kind == "eval":
                load_model_state(*self.nets, self.run.weights)
                self.curve.append((now / 60, self.evaluate(self.nets[0])))
                print(f"  {self.mode} x {len(self.workers)}: {now / 60:.2f} class minutes, "
                      f"distance {self.curve[-1][1]:.1f}", flush=True)  # fmt: skip
                reached = (self.target is not None and self.run.version > 0
                           and self.curve[-1][1] <= self.target)  # fmt: skip
                if reached or self.run.epoch >= self.args.max_epochs:
                    end = now
                    break
        def share(workers: list[SimWorker]) -> float | None:
            alive = sum(max(0.0, min(end, w.leaves) - w.joins) for w in workers)
            return sum(w.computing for w in workers) / alive if alive else None

        fast = [w for w in self.workers if w.speed > self.args.laptop_speed]
        return {"mode": self.mode, "workers": len(self.workers), "curve": self.curve,
                "images": self.run.images, "versions": self.run.version,
                "epochs": self.run.epoch, "expired": self.expired, "refused": self.refused,
                "mean_staleness": sum(self.staleness) / max(1, len(self.staleness)),
                "computing_share": share(self.workers) or 0.0,
                "gpu_computing_share": share(fast),
                "real_seconds": time.perf_counter() - started}  # fmt: skip


def lone_laptop(args: argparse.Namespace, data: Any, evaluate: Any) -> dict[str, Any]:
    """``gan-train-local`` on one laptop: the textbook loop, batch 64, no network (its
    steps are a synchronous run's with one unit of 64, bit for bit), at 1.07 textbook
    steps per image."""
    workers = [SimWorker("alone", args.laptop_speed, float("inf"), 0.0)]
    alone = argparse.Namespace(**{**vars(args), "fold_seconds": 0.0, "minutes": max(
        args.minutes, len(data.train) * 2 * PHASE_COST / args.laptop_speed / 60)})
    sim = Simulation(alone, "synchronous", workers, data, evaluate,
                     images_per_unit=args.micro_batch, units_per_step=1)  # fmt: skip
    result = sim.simulate()
    result["mode"] = "lone laptop"
    return result


def rounded(curve: list[tuple[float, float]]) -> list[tuple[float, float]]:
    return [(round(m, 1), round(d, 1)) for m, d in curve]


def minutes_to(curve: list[tuple[float, float]], target: float) -> float | None:
    """The first class minute at which the distance is at most ``target``."""
    return next((m for m, d in curve if d <= target), None)


def plot(results: list[dict[str, Any]], path: Path) -> None:
    """Distance against class minutes, one line per run: a small SVG, no plotting library."""
    width, height, left, bottom = 760, 420, 60, 40
    curves = [r["curve"] for r in results]
    top_minute = max(m for c in curves for m, _ in c) or 1.0
    top = max(d for c in curves for _, d in c) * 1.05
    x = lambda m: left + (width - left - 20) * m / top_minute  # noqa: E731
    y = lambda d: height - bottom - (height - bottom - 20) * d / top  # noqa: E731
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             'font-family="sans-serif" font-size="12">',
             f'<rect width="{width}" height="{height}" fill="white"/>',
             f'<line x1="{left}" y1="{height - bottom}" x2="{width - 20}" y2="{height - bottom}" '
             'stroke="black"/>',
             f'<line x1="{left}" y1="20" x2="{left}" y2="{height - bottom}" stroke="black"/>',
             f'<text x="{width / 2}" y="{height - 8}" text-anchor="middle">class minutes</text>',
             f'<text x="14" y="{height / 2}" transform="rotate(-90 14 {height / 2})" '
             'text-anchor="middle">Fréchet distance (lower is better)</text>']  # fmt: skip
    for tick in range(5):
        value = top * tick / 4
        parts.append(f'<text x="{left - 6}" y="{y(value) + 4}" '
                     f'text-anchor="end">{value:.0f}</text>')  # fmt: skip
        minute = top_minute * tick / 4
        parts.append(f'<text x="{x(minute)}" y="{height - bottom + 16}" '
                     f'text-anchor="middle">{minute:.1f}</text>')  # fmt: skip
    dashes = {4: "", 16: "6,3", 64: "2,2"}
    for index, result in enumerate(results):
        colour = COLOURS.get(result["mode"], "#000000")
        dash = dashes.get(result["workers"], "4,2") if result["mode"] != "lone laptop" else ""
        points = " ".join(f"{x(m):.1f},{y(d):.1f}" for m, d in result["curve"])
        parts.append(f'<polyline points="{points}" fill="none" stroke="{colour}" '
                     f'stroke-width="2" stroke-dasharray="{dash}"/>')  # fmt: skip
        label = result["mode"] + ("" if result["mode"] == "lone laptop"
                                  else f", {result['workers']} workers")  # fmt: skip
        ly = 30 + 16 * index
        parts.append(f'<line x1="{width - 350}" y1="{ly}" x2="{width - 320}" y2="{ly}" '
                     f'stroke="{colour}" stroke-width="2" stroke-dasharray="{dash}"/>')
        parts.append(f'<text x="{width - 314}" y="{ly + 4}">{label}</text>')
    parts.append("</svg>")
    path.write_text("\n".join(parts))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true",
                   help="a quick plumbing check: synthetic shapes, tiny model and class")
    p.add_argument("--workers", type=int, nargs="+", default=[4, 16],
                   help="class sizes to simulate (default: 4 16)")
    p.add_argument("--modes", nargs="+", default=["synchronous", "local_steps",
                   "async_local_steps"], help="modes to simulate: synchronous, local_steps, "
                   "async_local_steps, the last two followed by -dynamic (dynamic local "
                   "updates) and/or -kept (each worker keeps its inner Adam) (default: the "
                   "first three)")
    p.add_argument("--minutes", type=float, default=6.0, help="class minutes (default: 6)")
    p.add_argument("--timing-only", action="store_true",
                   help="time alone: no unit is computed and no distance taken, so large "
                   "classes simulate in seconds (the share of worker time spent computing)")
    p.add_argument("--run-to-end", action="store_true",
                   help="compare class runs at equal class minutes: each runs all --minutes "
                   "(or --max-epochs) instead of stopping at the lone laptop's one-epoch "
                   "distance, and the lone laptop is not run")
    p.add_argument("--max-epochs", type=int, default=3,
                   help="a class's run also stops after this many epochs (default: 3)")
    p.add_argument("--eval-minutes", type=float, default=0.5,
                   help="class minutes between quality measurements (default: 0.5)")
    p.add_argument("--laptop-speed", type=float, default=80.0,
                   help="a laptop's textbook-step images/s (default: 80, measured on 2 cores)")
    p.add_argument("--gpus", type=int, default=0,
                   help="how many of each class's workers are GPUs (default: 0)")
    p.add_argument("--gpu-speedup", type=float, default=15.0,
                   help="a GPU's speed over a laptop's (default: 15)")
    p.add_argument("--bandwidth", type=float, default=10.0,
                   help="MB/s between each worker and the coordinator (default: 10)")
    p.add_argument("--join-seconds", type=float, default=30.0,
                   help="workers join evenly over this many seconds (default: 30)")
    p.add_argument("--leave-fraction", type=float, default=0.0,
                   help="this share of each class leaves during the run, mid-unit, never to "
                   "return; its leases expire lease_seconds later (default: 0)")
    p.add_argument("--fold-seconds", type=float, default=0.5,
                   help="the coordinator's time per fold at class size (default: 0.5)")
    p.add_argument("--step-timeout", type=float, default=120.0,
                   help="the runs' step timeout in class seconds (default: 120)")
    p.add_argument("--sync-unit", type=int, default=64,
                   help="a synchronous unit's images; one unit per worker and phase (default: 64)")
    p.add_argument("--inner-steps", type=int, default=32,
                   help="H of both local-steps modes (default: 32)")
    p.add_argument("--units-per-step", type=int, default=3,
                   help="local steps with a barrier: units per outer step, at most N (default: 3)")
    p.add_argument("--unit-seconds", type=float, default=26.0,
                   help="modes ending in -dynamic: a claim joins planned units of "
                   "--base-inner-steps to about this many seconds at the worker's measured "
                   "speed (default: 26, H = 32 on a laptop)")
    p.add_argument("--base-inner-steps", type=int, default=8,
                   help="modes ending in -dynamic: H of a planned unit (default: 8)")
    p.add_argument("--async-k", type=int, default=1,
                   help="asynchronous: results per fold (default: 1)")
    p.add_argument("--momentum-delay", type=int, default=1,
                   help="asynchronous: Delayed Nesterov's N, folds per outer momentum "
                   "update (default: 1, Nesterov at every fold)")
    p.add_argument("--inner-lr", type=float, default=None,
                   help="both local-steps modes: the inner Adam's learning rate (default: "
                   "the runs' 2e-4)")
    p.add_argument("--outer-lr", type=float, default=None,
                   help="both local-steps modes: the outer learning rate (default: the "
                   "runs' 0.7)")
    p.add_argument("--outer-momentum", type=float, default=None,
                   help="both local-steps modes: the outer Nesterov momentum, 0 for none "
                   "(default: the runs' 0.9)")
    p.add_argument("--micro-batch", type=int, default=64, help="micro-batch (default: 64)")
    p.add_argument("--features", type=int, default=16,
                   help="G and D feature maps of the simulated model (default: 16)")
    p.add_argument("--latent-dim", type=int, default=100, help="latent size (default: 100)")
    p.add_argument("--images", type=int, default=60_000,
                   help="training images of Fashion-MNIST (default: 60000)")
    p.add_argument("--fd-samples", type=int, default=2000,
                   help="samples per Fréchet distance (default: 2000)")
    p.add_argument("--seed", type=int, default=0, help="run seed (default: 0)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default: 1)")
    p.add_argument("--output", type=Path, default=Path("outputs/class-simulator"),
                   help="results.json and the plot go here (default: outputs/class-simulator)")
    return p  # fmt: skip


def _share(value: float | None) -> str:
    return "—" if value is None else f"{value:.0%}"


def class_of(args: argparse.Namespace, n: int) -> list[SimWorker]:
    """N workers, the first ``--gpus`` of them GPUs, joining evenly over ``--join-seconds``;
    the last ``--leave-fraction`` of them leave at even times after that, mid-unit."""
    speeds = [args.laptop_speed * (args.gpu_speedup if i < args.gpus else 1.0) for i in range(n)]
    workers = [SimWorker(f"w{i}", speed, args.bandwidth * MB, args.join_seconds * i / n)
               for i, speed in enumerate(speeds)]  # fmt: skip
    leaving = workers[n - round(args.leave_fraction * n):]
    span = args.minutes * 60 - args.join_seconds
    for k, worker in enumerate(leaving):
        worker.leaves = args.join_seconds + span * (k + 1) / (len(leaving) + 1)
    return workers


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    args = build_parser().parse_args(argv)
    for mode in args.modes:
        mode_parts(mode)
    if args.smoke:
        args = argparse.Namespace(**{**vars(args), "workers": [2], "minutes": 0.5,
                                     "eval_minutes": 0.25, "features": 8, "images": 1024,
                                     "fd_samples": 256, "inner_steps": 2, "micro_batch": 16,
                                     "sync_unit": 16, "laptop_speed": 200.0,
                                     "bandwidth": 1000.0, "fold_seconds": 0.1})  # fmt: skip
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)  # the classifier's initial weights come from here
    present = (quality.FASHION_MNIST_DIR / "train-images-idx3-ubyte.gz").exists()
    if present and not args.smoke:
        data = quality.load_fashion_mnist(quality.FASHION_MNIST_DIR, args.images, args.fd_samples)
    else:
        data = quality.load_synthetic(args.images, args.fd_samples, args.seed)
    args.output.mkdir(parents=True, exist_ok=True)
    results: list[dict[str, Any]] = []
    if args.timing_only:
        for n in args.workers:
            for mode in args.modes:
                results.append(Simulation(args, mode, class_of(args, n), data, None).simulate())
        print("| mode | workers | images trained | versions | computing share | GPUs' share "
              "| mean staleness | refused results |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|")
        for r in results:
            print(f"| {r['mode']} | {r['workers']} | {r['images']} | {r['versions']} | "
                  f"{r['computing_share']:.1%} | {_share(r['gpu_computing_share'])} | "
                  f"{r['mean_staleness']:.1f} | {r['refused']} |")  # fmt: skip
        (args.output / "timing.json").write_text(json.dumps(results, indent=1))
        return results

    width, feature_dim = (8, 32) if args.smoke else (32, 128)
    classifier, _ = quality.train_classifier(
        data, width=width, feature_dim=feature_dim, epochs=4 if args.smoke else 2,
        seed=args.seed, cache=args.output,
    )  # fmt: skip
    real = quality.real_features(classifier, data.test)

    def evaluate(generator: torch.nn.Module) -> float:
        fake = quality.generated_features(classifier, generator, args.fd_samples,
                                          args.latent_dim, args.seed)  # fmt: skip
        return quality.frechet_distance(fake, real)

    # One epoch of gan-train-local: 1.1 textbook steps per image (the two phases).
    epoch_minutes = len(data.train) * 2 * PHASE_COST / args.laptop_speed / 60
    alone: dict[str, Any] | None = None
    target: float | None = None
    if not args.run_to_end:
        results.append(alone := lone_laptop(args, data, evaluate))
        target = next((d for m, d in alone["curve"] if m >= epoch_minutes),
                      alone["curve"][-1][1])  # fmt: skip
        print(f"target: the lone laptop's distance after one epoch ({epoch_minutes:.1f} class "
              f"minutes): {target:.1f}; its curve {rounded(alone['curve'])}", flush=True)
    for n in args.workers:
        for mode in args.modes:
            results.append(
                Simulation(args, mode, class_of(args, n), data, evaluate, target).simulate()
            )
            last = results[-1]
            print(f"{mode} x {n}: done in {last['real_seconds']:.0f} s, curve "
                  f"{rounded(last['curve'])}", flush=True)
            save(args, results)  # a sweep stopped midway keeps what it measured
    print("| mode | workers | final distance | class minutes to target | sooner than alone "
          "| alone's minutes to the final distance | computing share | GPUs' share | versions |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        reached = (epoch_minutes if r is alone
                   else None if target is None else minutes_to(r["curve"], target))  # fmt: skip
        faster = epoch_minutes / reached if reached else None
        # A run that stops short of the target still gets a speed-up at the quality it
        # reached: when the lone laptop first drew as well, against when this run did.
        minute, distance = r["curve"][-1]
        lone = None if alone is None or r is alone else minutes_to(alone["curve"], distance)
        equal = lone / minute if lone is not None and minute > 0 else None
        r.update(target=target, minutes_to_target=reached, speedup=faster,
                 alone_minutes_to_final=lone, speedup_at_final=equal)  # fmt: skip
        print(f"| {r['mode']} | {r['workers']} | {distance:.1f} | "
              f"{'—' if reached is None else f'{reached:.1f}'} | "
              f"{'—' if faster is None else f'{faster:.1f}x'} | "
              f"{'—' if equal is None else f'{lone:.1f} ({equal:.1f}x)'} | "
              f"{r['computing_share']:.0%} | {_share(r.get('gpu_computing_share'))} | "
              f"{r['versions']} |")  # fmt: skip
    save(args, results)
    print(f"\nwrote {args.output / 'results.json'} and {args.output / 'quality-vs-minutes.svg'}")
    return results


def save(args: argparse.Namespace, results: list[dict[str, Any]]) -> None:
    """results.json and the plot of the runs so far."""
    (args.output / "results.json").write_text(json.dumps(
        {"settings": {k: str(v) for k, v in vars(args).items()}, "runs": results}, indent=1))
    plot(results, args.output / "quality-vs-minutes.svg")


if __name__ == "__main__":
    main()
