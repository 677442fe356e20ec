"""A student's install: the worker runs with only the project's default dependencies.

The environment is built from the installed distributions' own metadata: the closure of
``ganns-with-friends``'s requirements without extras, each distribution's top-level
files linked into one folder beside the project's three packages (what ``pip install
ganns-with-friends`` puts in site-packages), and a Python started with ``-I -S`` that
sees that folder and the standard library. A coordinator package that crept into the
worker's imports, or a worker dependency missing from ``pyproject.toml``, fails here.
"""

from __future__ import annotations

import os
import subprocess
import sys
from importlib.metadata import Distribution, distribution
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from coordinator_service.cli import COORDINATOR_PACKAGES
from tests.conftest import NARROW_RUN, REPO_ROOT, RunningCoordinator

PROJECT = "ganns-with-friends"
BOOT = "import sys; sys.path[:0] = [{site!r}]; "


def _closure(name: str, extras: frozenset[str] = frozenset()) -> dict[str, Distribution]:
    """``name`` and every distribution it requires (markers evaluated here), by name."""
    found: dict[str, Distribution] = {}
    todo = [(name, extras)]
    while todo:
        current, wanted = todo.pop()
        dist = distribution(current)
        found[dist.metadata["Name"].lower()] = dist
        for line in dist.requires or []:
            requirement = Requirement(line)
            environments = [{"extra": extra} for extra in wanted] or [{"extra": ""}]
            if requirement.marker and not any(
                requirement.marker.evaluate(env) for env in environments
            ):
                continue
            if requirement.name.lower() not in found:
                todo.append((requirement.name, frozenset(requirement.extras)))
    return found


@pytest.fixture(scope="module")
def worker_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding the project's packages and exactly its default dependencies."""
    site = tmp_path_factory.mktemp("worker-site")
    dists = _closure(PROJECT)
    dists.pop(PROJECT)  # installed editable: its packages are linked one by one below
    for dist in dists.values():
        root = Path(str(dist.locate_file("")))
        tops = {Path(str(f)).parts[0] for f in dist.files or []}
        for top in sorted(tops - {"..", "__pycache__"}):
            if (root / top).exists() and not (site / top).exists():
                (site / top).symlink_to(root / top)
    for package in ("shared", "worker_client", "coordinator_service"):
        (site / package).symlink_to(REPO_ROOT / package)
    return site


def _python(site: Path, code: str, *args: str, **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-I", "-S", "-c", BOOT.format(site=str(site)) + code, *args],
        capture_output=True, text=True, cwd=site.parent, **kw,  # type: ignore[arg-type]
    )  # fmt: skip


def test_the_worker_environment_lacks_every_coordinator_package(worker_site: Path) -> None:
    probe = _python(
        worker_site,
        "import importlib.util as u; import torch, httpx, safetensors, worker_client.cli; "
        f"print([m for m in {sorted(COORDINATOR_PACKAGES)!r} if u.find_spec(m)])",
    )
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.strip() == "[]"


def test_a_worker_with_only_its_own_dependencies_trains(
    coordinator: RunningCoordinator, worker_site: Path, tmp_path: Path
) -> None:
    coordinator.start_run(**NARROW_RUN, units_per_step=1, max_iterations=1)
    env = {k: v for k, v in os.environ.items() if not k.startswith("GAN_")}
    env |= {"GAN_WORKER_TORCH_THREADS": "1", "GAN_WORKER_STATE_DIR": str(tmp_path / "state")}
    worker = _python(
        worker_site,
        "from worker_client.cli import main; sys.exit(main())",
        "--url", coordinator.url, "--join-code", coordinator.join_code, "--name", "light",
        "--no-progress", "--poll-interval", "0.1", "--max-poll-interval", "0.5",
        env=env, timeout=300,
    )  # fmt: skip
    assert worker.returncode == 0, worker.stdout + worker.stderr
    assert "The training run is finished" in worker.stdout + worker.stderr
    board = {row["name"]: row for row in coordinator.client().get("/leaderboard").json()}
    assert board["light"]["total_work_units"] == 2  # the D phase's unit and the G phase's
    assert coordinator.client().get("/status").json()["state"] == "finished"

    # The instructor's commands that need only HTTP work here too; the server says what
    # to install.
    cli = "from coordinator_service.cli import main; sys.exit(main())"
    exported = _python(
        worker_site, cli, "export", "--url", coordinator.url, "--admin-token",
        coordinator.admin_token, "-o", "g.st", env=env,
    )  # fmt: skip
    assert exported.returncode == 0, exported.stderr
    assert "Wrote the generator of run" in exported.stdout
    serve = _python(worker_site, cli, "serve", env=env | {"GAN_DATA_DIR": str(tmp_path / "d")})
    assert serve.returncode == 2
    assert "pip install 'ganns-with-friends[coordinator]'" in serve.stderr
