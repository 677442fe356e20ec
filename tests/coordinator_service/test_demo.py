"""`gan-coordinator demo` runs the real programs end to end and leaves a generator behind."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from PIL import Image


def test_demo_trains_with_two_worker_processes_and_exports(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "coordinator_service.cli",
            "demo",
            "--iterations",
            "2",
            "--features",
            "8",
            "--images-per-unit",
            "16",
            "--batch-size",
            "8",
            "--output",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env={k: v for k, v in os.environ.items() if k != "DATABASE_URL"},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Dashboard: http://127.0.0.1:" in proc.stdout
    assert "iteration    2/2" in proc.stdout
    with Image.open(out / "samples_final.png") as grid:
        assert grid.size == (8 * 66 + 2, 8 * 66 + 2)
    assert (out / "generator.safetensors").stat().st_size > 10_000
    logs = [(out / f"worker-{n}.log").read_text() for n in (1, 2)]
    assert any("completed successfully" in log for log in logs), logs
