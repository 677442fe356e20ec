"""One worker through the coordinator on loopback vs local training, same machine, one run.

    python bench/worker_vs_local.py [--units 5] [--images-per-unit 320] [--batch-size 64]
    python bench/worker_vs_local.py --result-kind async_local_steps   # no barrier

What is compared (real model size, built-in faces, CPU):

* **worker**: ``gan-coordinator serve`` (embedded PostgreSQL in a temporary folder) with a
  run of one unit per step (``--result-kind``: synchronous phases, local steps with a
  barrier, or asynchronous local steps, where the worker never waits for a fold), and
  one ``gan-worker`` process. Throughput is measured on
  the coordinator's side, steady state: images of the steps between the first and the
  last one, over the time between them (claim, weights download, image rendering,
  gradients, upload, averaging, Adam, publishing the next weights: everything).
* **local, same units**: the same first units of the coordinator's epoch plan, each
  computed and folded by the run's strategy (synchronous: D phase and its fold, G phase
  and its fold; local steps: H textbook steps and the outer step), micro-batches of
  ``--batch-size``: the very math of the distributed run, without the network and the
  database.
* **gan-train-local**: ``shared.local_training.train`` with ``--batch-size`` images per
  step over as many images (a step per micro-batch, as a student would train alone).

The worker gets ``--threads`` torch threads (default: every core), as do the local runs;
the coordinator gets one (it only averages, steps and encodes between units).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import get_args

import httpx
import psutil
import torch

from coordinator_service.training.planner import plan_epoch
from shared.builtin_faces import BuiltinFaces
from shared.local_training import LocalRun, train
from shared.models import ModelConfig, StateSpec, build_models, load_model_state, model_state
from shared.protocol import ResultKind, RunConfig
from shared.strategies import strategy_for

BIN = Path(sys.executable).parent
ADMIN = "bench-admin-token"
JOIN = "bench-join-code"

# gan-worker flags per --polling choice.
POLLING = {"default": [], "fast": ["--poll-interval", "0.05", "--max-poll-interval", "0.2"]}


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_healthy(url: str, process: subprocess.Popen[bytes], timeout: float = 120) -> None:
    """Until GET /healthz answers 200 (fail if the process dies)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError("the coordinator exited during startup")
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError("the coordinator did not come up")


def through_coordinator(args: argparse.Namespace, workdir: Path) -> tuple[float, int, float]:
    """(images/s, images, seconds) of one worker process through a real coordinator."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("GAN_")}
    env.update(
        GAN_DATA_DIR=str(workdir / "pg"),
        GAN_ADMIN_TOKEN=ADMIN,
        GAN_JOIN_CODE=JOIN,
        GAN_TORCH_THREADS="1",
        GAN_AGGREGATOR_TICK_SECONDS="0.05",
    )
    log = (workdir / "coordinator.log").open("wb")
    coordinator = subprocess.Popen(
        [str(BIN / "gan-coordinator"), "serve", "--port", str(port), "--log-level", "warning"],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    worker: subprocess.Popen[bytes] | None = None
    try:
        wait_healthy(url, coordinator)
        api = httpx.Client(base_url=url + "/api/v1", timeout=60)
        config = run_config(args).model_dump(mode="json", exclude_none=True)
        started = api.post("/admin/runs", json={"config": {**config, "max_iterations": args.units}},
                           headers={"Authorization": f"Bearer {ADMIN}"})  # fmt: skip
        started.raise_for_status()
        worker_env = {k: v for k, v in os.environ.items() if not k.startswith("GAN_WORKER_")}
        worker_env["GAN_WORKER_TORCH_THREADS"] = str(args.threads)
        worker = subprocess.Popen(
            [str(BIN / "gan-worker"), "--url", url, "--join-code", JOIN, "--name", "bench",
             "--state-dir", str(workdir / "worker"),
             "--no-progress", *POLLING[args.polling]],
            env=worker_env, stdout=(workdir / "worker.log").open("wb"), stderr=subprocess.STDOUT,
        )  # fmt: skip
        # A synchronous iteration is two versions (D phase, G phase), each counting the
        # unit's images; a local-steps unit is one version. Polled twice a second: the
        # window is measured by the coordinator's own fold times, and a faster poll
        # would take CPU from the two processes measured.
        per_unit = strategy_for(run_config(args)).versions_per_iteration
        last = per_unit * args.units
        cpu = CpuClock(coordinator.pid, worker.pid)
        while api.get("/status").json()["iteration"] < last:
            if worker.poll() is not None:
                raise RuntimeError((workdir / "worker.log").read_text())
            cpu.sample()
            time.sleep(0.5)
        # A history row is the fold from its iteration to the next version.
        folds = [h for h in api.get("/history").json() if per_unit <= h["iteration"] + 1 <= last]
        assert [h["iteration"] + 1 for h in folds] == list(range(per_unit, last + 1)), folds
        images = sum(h["num_images"] for h in folds[1:]) // per_unit
        seconds = (_instant(folds[-1]) - _instant(folds[0])).total_seconds()
        if worker.wait(timeout=60) != 0:
            raise RuntimeError((workdir / "worker.log").read_text())
        output = (workdir / "worker.log").read_text()
        print(
            f"worker: {output.count('completed successfully!')} units accepted, "
            f"{output.count('is not needed any more')} computed but refused as stale (409); "
            f"CPU seconds per unit over the whole run: {cpu.per_unit(args.units)}"
        )
        return images / seconds, images, seconds
    finally:
        for process in (worker, coordinator):
            if process is not None and process.poll() is None:
                process.terminate()
                process.wait(timeout=30)
        log.close()


def _instant(fold: dict[str, str]) -> datetime:
    return datetime.fromisoformat(fold["created_at"])


class CpuClock:
    """CPU seconds of the coordinator (with its embedded PostgreSQL) and of the worker:
    where the two cores went, since they are shared with the training measured."""

    def __init__(self, coordinator: int, worker: int) -> None:
        self.roots = {"coordinator": psutil.Process(coordinator), "worker": psutil.Process(worker)}
        self.seconds: dict[str, dict[int, float]] = {name: {} for name in self.roots}

    def sample(self) -> None:
        """Each process tree's CPU time so far (children counted while they live)."""
        for name, root in self.roots.items():
            with contextlib.suppress(psutil.Error):
                for process in [root, *root.children(recursive=True)]:
                    with contextlib.suppress(psutil.Error):
                        times = process.cpu_times()
                        self.seconds[name][process.pid] = times.user + times.system

    def per_unit(self, units: int) -> str:
        return ", ".join(
            f"{name} {sum(seconds.values()) / units:.1f}" for name, seconds in self.seconds.items()
        )


def run_config(args: argparse.Namespace) -> RunConfig:
    """The coordinator's run: one unit per step, the real model, the bench's unit size."""
    return RunConfig(images_per_unit=args.images_per_unit, units_per_step=1, seed=args.seed,
                     batch_size=args.batch_size, result_kind=args.result_kind)


def local_same_units(args: argparse.Namespace) -> tuple[float, int, float]:
    """(images/s, images, seconds) of the coordinator's math on its first units, locally."""
    run = run_config(args)
    units = [indices for _, indices in plan_epoch(run, 0)[: args.units]]
    config = ModelConfig()
    generator, discriminator = build_models(config, seed=args.seed)
    weights = model_state(generator, discriminator)
    spec = StateSpec.from_config(config)
    strategy = strategy_for(run)
    per_unit = strategy.versions_per_iteration
    optimizer = strategy.initial_optimizer({k: weights[k] for k in spec.parameters})
    faces = BuiltinFaces(run.dataset.size, 0)  # the default built-in dataset, seed 0
    started, images = 0.0, 0
    for number, indices in enumerate(units):
        if number == 1:  # the first unit warms up, as the coordinator's first step does
            started = time.perf_counter()
        pixels = faces.load(indices)
        for version in range(per_unit * number, per_unit * (number + 1)):
            result = strategy.compute(generator, discriminator, pixels, indices, version=version)
            fold = strategy.fold(weights, optimizer, [result], version=version)
            weights, optimizer = fold.weights, fold.optimizer
            load_model_state(generator, discriminator, weights)
        if number >= 1:
            images += len(indices)
    seconds = time.perf_counter() - started
    return images / seconds, images, seconds


def gan_train_local(args: argparse.Namespace, workdir: Path) -> tuple[float, int, float]:
    """(images/s, images, seconds) of ``gan-train-local``'s loop over as many images."""
    total = args.units * args.images_per_unit
    run = LocalRun(batch_size=args.batch_size, seed=args.seed)
    started = time.perf_counter()
    train(run, source=BuiltinFaces(20_000, 0), total_images=total, device=torch.device("cpu"),
          output=workdir / "local", sample_every=10**9, checkpoint_every=10**9)  # fmt: skip
    seconds = time.perf_counter() - started
    return total / seconds, total, seconds


def main() -> None:
    """Run the three measurements and print their images/s and ratios."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--units", type=int, default=5, help="units (= steps) per measurement")
    parser.add_argument("--images-per-unit", type=int, default=320)
    parser.add_argument("--batch-size", type=int, default=64, help="micro-batch size")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--polling", choices=sorted(POLLING), default="default",
        help="the worker's polling: its own defaults, as a student runs it, or 50-200 ms "
        "(default: default)",
    )  # fmt: skip
    parser.add_argument(
        "--result-kind", choices=get_args(ResultKind), default="synchronous",
        help="how the run trains (default: synchronous)",
    )  # fmt: skip
    parser.add_argument("--keep", action="store_true", help="keep the logs' temporary folder")
    args = parser.parse_args()
    if args.units < 2:
        parser.error("--units must be at least 2 (the first one is the warm-up)")
    torch.set_num_threads(args.threads)
    workdir = Path(tempfile.mkdtemp(prefix="gan-bench-"))
    try:
        rows = [
            ("worker via coordinator", through_coordinator(args, workdir)),
            ("local, same units", local_same_units(args)),
            ("gan-train-local", gan_train_local(args, workdir)),
        ]
    finally:
        if args.keep:
            print(f"logs kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    print(
        f"torch {torch.__version__}, {args.threads} thread(s), {args.result_kind}, units of "
        f"{args.images_per_unit} images, micro-batch {args.batch_size}, {args.units} units, "
        "real model size"
    )
    worker_rate = rows[0][1][0]
    for name, (rate, images, seconds) in rows:
        print(f"  {name:24s} {rate:7.1f} images/s  ({images} images in {seconds:.1f} s)")
    for name, (rate, _, _) in rows[1:]:
        print(f"  ratio worker / {name}: {worker_rate / rate:.3f}")


if __name__ == "__main__":
    main()
