"""Real ``gan-worker`` processes for end-to-end tests, and what they printed."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

GAN_WORKER = str(Path(sys.executable).with_name("gan-worker"))
TOTALS = re.compile(r"Totals: (\d+) units, (\d+) images")


@dataclass
class WorkerProcess:
    """One ``gan-worker`` subprocess; its stdout and stderr go to a log file."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def output(self) -> str:
        """Everything printed so far."""
        return self.log_path.read_text(errors="replace")

    def wait_for(self, text: str, timeout: float = 60.0) -> None:
        """Block until ``text`` appears in the output (fail if the process ends first)."""
        deadline = time.monotonic() + timeout
        while text not in self.output():
            if self.process.poll() is not None and text not in self.output():
                raise AssertionError(
                    f"{self.name} exited before printing {text!r}:\n{self.output()}"
                )
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name} did not print {text!r}:\n{self.output()}")
            time.sleep(0.02)

    def wait(self, timeout: float = 120.0) -> int:
        """The exit code (fail with the output if it takes longer than ``timeout``)."""
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise AssertionError(f"{self.name} did not exit:\n{self.output()}") from None

    def images_done(self) -> int:
        """Images of the last ``Totals:`` line (0 if none)."""
        found = TOTALS.findall(self.output())
        return int(found[-1][1]) if found else 0


class WorkerLauncher:
    """Starts workers against one coordinator; kills any still running at teardown."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.started: list[WorkerProcess] = []

    def start(self, url: str, name: str, *args: str, join_code: str | None = None) -> WorkerProcess:
        """``gan-worker --url URL --name NAME ARGS...`` with one torch thread and fast polling."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("GAN_")}
        env["GAN_WORKER_TORCH_THREADS"] = "1"  # two cores for coordinator and workers
        env["GAN_WORKER_STATE_DIR"] = str(self.tmp_path / f"state-{name}")
        command = [GAN_WORKER, "--url", url, "--name", name, "--no-progress",
                   "--poll-interval", "0.1", "--max-poll-interval", "0.5", *args]  # fmt: skip
        if join_code:
            command += ["--join-code", join_code]
        log_path = self.tmp_path / f"worker-{name}-{len(self.started)}.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=self.tmp_path
            )
        worker = WorkerProcess(name, process, log_path)
        self.started.append(worker)
        return worker

    def close(self) -> None:
        """Kill whatever is still running."""
        for worker in self.started:
            if worker.process.poll() is None:
                worker.process.kill()
                worker.process.wait(timeout=30)
