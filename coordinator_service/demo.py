"""``gan-coordinator demo``: a whole class on one machine, in one command.

It runs the real programs, as separate processes talking HTTP over loopback: one
``gan-coordinator serve`` on a throw-away embedded PostgreSQL with the built-in faces,
and N ``gan-worker`` processes. Nothing is simulated, so what a student sees in a lab
is what the demo shows; when the budget is spent the generator is exported and a
sample grid drawn from it.
"""

from __future__ import annotations

import argparse
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx

from shared.protocol import API_PREFIX

FINISHED_STATES = {"finished", "stopped"}


def add_demo_parser(subparsers: Any) -> None:
    """The ``demo`` sub-command and its options."""
    demo = subparsers.add_parser(
        "demo",
        help="a coordinator and N local workers train together on the built-in faces",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    demo.add_argument("--workers", type=int, default=2, help="local worker processes")
    demo.add_argument(
        "--iterations", type=int, default=900,
        help="training iterations (each a D phase and a G phase); the default draws faces, "
        "about 16 min on 2 cores (300: heads in outline, 5 min)",
    )  # fmt: skip
    demo.add_argument("--images-per-unit", type=int, default=32, help="images in a work unit")
    demo.add_argument(
        "--units-per-step", type=int, default=2,
        help="units per phase: the global batch is this x --images-per-unit (64, DCGAN's)",
    )  # fmt: skip
    demo.add_argument(
        "--features", type=int, default=32,
        help="feature maps of G and D (the class model has 64: at 32 a fold costs a quarter, "
        "so two laptop workers show faces within minutes)",
    )  # fmt: skip
    demo.add_argument(
        "--batch-size", type=int, default=32, help="the run's micro-batch (every worker's)"
    )
    demo.add_argument("--port", type=int, default=0, help="dashboard port (0: a free one)")
    demo.add_argument("--output", type=Path, default=Path("outputs/demo"), help="output folder")
    demo.add_argument("--torch-threads", type=int, default=1, help="torch threads per worker")
    demo.set_defaults(handler=cmd_demo)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_healthy(url: str, process: subprocess.Popen[bytes], timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError("the coordinator exited during start-up; see its log")
        try:
            if httpx.get(f"{url}/healthz", timeout=2.0).is_success:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"the coordinator did not answer on {url} within {timeout:.0f} s")


def _stop(process: subprocess.Popen[bytes], sig: int, timeout: float) -> None:
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _iteration(status: dict[str, Any]) -> int:
    """Training iterations done (a synchronous one publishes two versions: D, then G)."""
    return int(status["iteration"]) // int(status.get("versions_per_iteration") or 1)


def _latest(history: list[dict[str, Any]], key: str) -> float | None:
    """The newest value of a metric (a synchronous phase reports only its own losses)."""
    return next((h[key] for h in reversed(history) if h[key] is not None), None)


def _progress_line(status: dict[str, Any], history: list[dict[str, Any]], total: int) -> str:
    line = f"iteration {_iteration(status):>4}/{total}"
    g_loss, d_loss = _latest(history, "g_loss"), _latest(history, "d_loss")
    if g_loss is not None and d_loss is not None:
        line += f" | G_loss {g_loss:.3f} | D_loss {d_loss:.3f}"
    rate = status.get("throughput", {}).get("images_per_second") or 0.0
    return line + f" | {status['active_workers']} workers | {rate:.0f} img/s"


def cmd_demo(args: argparse.Namespace) -> int:
    """Run the demo; the exit code."""
    if args.workers < 1 or args.iterations < 1:
        print(
            "gan-coordinator demo: --workers and --iterations must be at least 1", file=sys.stderr
        )
        return 2
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one progress line, not every poll
    output: Path = args.output
    output.mkdir(parents=True, exist_ok=True)
    port = args.port or _free_port()
    url = f"http://127.0.0.1:{port}"
    admin_token, join_code = secrets.token_urlsafe(24), f"demo-{secrets.token_hex(3)}"
    with ExitStack() as stack:
        state = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="gan-demo-")))
        env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "GAN_DATABASE_URL")}
        env.update(
            GAN_DATA_DIR=str(state / "coordinator"),
            GAN_ADMIN_TOKEN=admin_token,
            GAN_JOIN_CODE=join_code,
            GAN_ENVIRONMENT="development",
            GAN_SAMPLE_EVERY="5",
        )
        coordinator_log = (output / "coordinator.log").open("wb")
        stack.callback(coordinator_log.close)
        print(f"Starting the coordinator on {url} (log: {output / 'coordinator.log'})")
        command = [sys.executable, "-m", "coordinator_service.cli"]
        coordinator = subprocess.Popen(
            [*command, "serve", "--port", str(port), "--log-level", "warning"],
            env=env,
            stdout=coordinator_log,
            stderr=subprocess.STDOUT,
        )
        stack.callback(_stop, coordinator, signal.SIGTERM, 30)
        _wait_healthy(url, coordinator)
        api = stack.enter_context(httpx.Client(base_url=url + API_PREFIX, timeout=30.0))
        run = {
            "images_per_unit": args.images_per_unit,
            "units_per_step": args.units_per_step,
            "max_iterations": args.iterations,
            "generator_features": args.features,
            "discriminator_features": args.features,
            "batch_size": args.batch_size,
            "step_timeout": 120.0,
        }
        api.post(
            "/admin/runs",
            json={"config": run},
            headers={"Authorization": f"Bearer {admin_token}"},
        ).raise_for_status()
        workers = []
        for number in range(1, args.workers + 1):
            log = (output / f"worker-{number}.log").open("wb")
            stack.callback(log.close)
            worker = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "worker_client",
                    "--url",
                    url,
                    "--join-code",
                    join_code,
                    "--name",
                    f"demo-worker-{number}",
                    "--state-dir",
                    str(state / f"worker-{number}"),
                    "--torch-threads",
                    str(args.torch_threads),
                    "--device",
                    "cpu",
                    "--no-progress",
                ],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            stack.callback(_stop, worker, signal.SIGINT, 60)
            workers.append(worker)
        print(f"{args.workers} workers started (logs: {output}/worker-N.log)")
        print(f"Dashboard: {url}/   API docs: {url}/docs   (Ctrl+C stops the demo)")
        try:
            started, printed = time.monotonic(), -1
            while True:
                status = api.get("/status").json()
                if _iteration(status) != printed:  # a line per iteration, not per poll
                    history = api.get("/history").json()
                    print(_progress_line(status, history, args.iterations), flush=True)
                    printed = _iteration(status)
                if status["state"] in FINISHED_STATES:
                    break
                if all(w.poll() is not None for w in workers):
                    print("every worker has exited; see their logs", file=sys.stderr)
                    return 1
                time.sleep(2.0)
        except KeyboardInterrupt:
            print("\nStopping the demo...")
            return 130
        print(f"Trained {args.iterations} iterations in {time.monotonic() - started:.0f} s")
        for worker in workers:
            _stop(worker, signal.SIGINT, 60)
        _stop(coordinator, signal.SIGTERM, 30)
        # The coordinator has stopped its embedded PostgreSQL; `export` starts it again
        # on the same data folder, exactly as an instructor would after class.
        generator = output / "generator.safetensors"
        grid = output / "samples_final.png"
        for step in (
            ["export", "--output", str(generator)],
            ["sample", str(generator), "--output", str(grid)],
        ):
            done = subprocess.run([*command, *step], env=env, capture_output=True, text=True)
            if done.returncode != 0:
                print(done.stdout + done.stderr, file=sys.stderr)
                return done.returncode
        print(f"Final generator: {generator}\nFinal sample grid: {grid}")
    return 0
