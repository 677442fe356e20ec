"""What a student's and an instructor's ``pip install`` cost, PyTorch left out.

    python bench/install_footprint.py

Downloads the wheels once into a temporary wheelhouse (not timed), then installs each
set from those local files into a fresh virtual environment and prints its wall time
and the size it adds to site-packages. torch and torchvision are excluded: they are the
same for both, and their size depends on the build (CPU, CUDA) more than on this
project. "worker" is the default install; "coordinator" adds the ``[coordinator]`` extra.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import tomllib

REPO = Path(__file__).resolve().parent.parent
EXCLUDED = ("torch", "torchvision")


def _requirements() -> dict[str, list[str]]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    worker = [r for r in project["dependencies"] if not r.startswith(EXCLUDED)]
    coordinator = worker + project["optional-dependencies"]["coordinator"]
    return {"worker": worker, "coordinator": coordinator}


def _size(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file() and not f.is_symlink())


def _pip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", "--quiet", *args], check=True)


def main() -> int:
    sets = _requirements()
    with tempfile.TemporaryDirectory(prefix="install-footprint-") as tmp:
        root = Path(tmp)
        wheels = root / "wheels"
        print("downloading the wheels (not timed) ...", flush=True)
        _pip("download", "--dest", str(wheels), *sets["coordinator"])
        rows = []
        for name, requirements in sets.items():
            venv = root / name
            subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
            site = next(venv.glob("lib/python*/site-packages"))
            empty = _size(site)
            started = time.perf_counter()
            _pip("--python", str(venv / "bin" / "python"), "install", "--no-index",
                 "--find-links", str(wheels), *requirements)  # fmt: skip
            seconds = time.perf_counter() - started
            packages = len(list(site.glob("*.dist-info")))
            rows.append((name, packages, (_size(site) - empty) / 1e6, seconds))
            shutil.rmtree(venv)
    print(f"\n{'install':<12} {'packages':>8} {'size MB':>8} {'time s':>7}   (torch excluded)")
    for name, packages, megabytes, seconds in rows:
        print(f"{name:<12} {packages:>8} {megabytes:>8.1f} {seconds:>7.1f}")
    worker, coordinator = rows
    print(f"\nthe coordinator extra adds {coordinator[2] - worker[2]:.1f} MB and "
          f"{coordinator[1] - worker[1]} packages to a worker's install")  # fmt: skip
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PIP_DISABLE_PIP_VERSION_CHECK", "1")
    sys.exit(main())
