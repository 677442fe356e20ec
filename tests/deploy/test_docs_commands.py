"""Every command in the student and instructor guides, run against a live coordinator.

The fence convention is in tests/deploy/docs.py. The ```bash and ```python blocks of a
guide run in order, each in a fresh ``bash -euo pipefail`` (or Python) in one sandbox
folder: the instructor's copy of the repository (``.env`` made from ``.env.example`` with
the test secrets, ``config.yaml.template``) and a private ``HOME``. The coordinator is the
compose file's own (tests/deploy/compose.py), and the one documented substitution is
the address: ``http://192.168.1.10:8000`` (what students type) and
``http://localhost:8000`` (what the instructor types) become the live coordinator's
URL. ``docker compose exec|cp`` go through tests/deploy/docker_shim.py. The join code is
the guides' own example, ``blue-otter-42``. Each worker command does one work unit
(``GAN_WORKER_MAX_UNITS=1`` in the sandbox, as a student could set it) on one torch thread.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from coordinator_service.export import load_generator
from tests.conftest import NARROW_RUN, REPO_ROOT
from tests.deploy import docs
from tests.deploy.compose import TEST_SECRETS, ComposeCoordinator

DOCS = REPO_ROOT / "docs"
GUIDES = [DOCS / "worker.md", DOCS / "instructor.md"]
PLACEHOLDER_URLS = ("http://192.168.1.10:8000", "http://localhost:8000")
SHIM = Path(__file__).with_name("docker_shim.py")


@pytest.mark.parametrize("guide", GUIDES, ids=lambda p: p.name)
def test_every_fence_says_whether_it_runs(guide: Path) -> None:
    known = docs.RUN + docs.CHECK_ONLY + docs.SHOWN
    for block in docs.blocks(guide):
        assert block.lang in known, (
            f"{block.where}: mark the fence as one of {', '.join(known)} (see tests/deploy/docs.py)"
        )
        if block.lang in docs.RUN:  # never install packages in a test
            assert not re.search(r"\bpip3? install\b", block.text), (
                f"{block.where}: installs packages; mark the fence ```console"
            )


@pytest.mark.parametrize("guide", GUIDES, ids=lambda p: p.name)
def test_every_gan_command_in_the_guide_parses(guide: Path) -> None:
    calls = [
        (block.where, call)
        for block in docs.blocks(guide)
        if block.lang in ("bash", "console", "ipython")
        for line in docs.logical_lines(block.text)
        for call in docs.program_calls(line)
    ]
    calls += [(f"{guide.name} (inline)", call) for call in docs.inline_calls(guide)]
    assert calls
    for where, (program, args) in calls:
        problem = docs.parse_error(program, args)
        assert problem is None, f"{where}: `{program} {' '.join(args)}`: {problem}"


def _sandbox(root: Path, c: ComposeCoordinator) -> tuple[Path, dict[str, str]]:
    """The instructor's folder, a private HOME and PATH with the docker shim first."""
    sandbox, home, bin_dir = root / "sandbox", root / "home", root / "bin"
    for d in (sandbox, home, bin_dir):
        d.mkdir(parents=True)
    env_file = (REPO_ROOT / ".env.example").read_text()
    for key, value in TEST_SECRETS.items():
        env_file = re.sub(rf"^{key}=.*$", f"{key}={value}", env_file, flags=re.M)
    (sandbox / ".env").write_text(env_file)
    shutil.copy(REPO_ROOT / "config.yaml.template", sandbox)
    description = {
        "url": c.url,
        "coordinator_env": c.serve.env,
        "coordinator_cwd": str(c.serve.cwd),
        "data_dir": str(c.data_dir),
        "database_url": c.serve.env["DATABASE_URL"],
        "gan_coordinator": str(Path(sys.executable).with_name("gan-coordinator")),
    }
    (root / "sandbox.json").write_text(json.dumps(description))
    docker = bin_dir / "docker"
    docker.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{SHIM}" "$@"\n')
    docker.chmod(0o755)
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("GAN_", "XDG_")) and k not in ("DATABASE_URL", "PYTHONPATH")
    }
    env.update(
        PATH=os.pathsep.join([str(bin_dir), str(Path(sys.executable).parent), env["PATH"]]),
        HOME=str(home),
        DOCS_SANDBOX=str(root / "sandbox.json"),
        GAN_WORKER_MAX_UNITS="1",
        GAN_WORKER_TORCH_THREADS="1",
        PYTHONPATH=str(REPO_ROOT),
    )
    return sandbox, env


def _run_guide(guide: Path, sandbox: Path, env: dict[str, str], url: str) -> list[str]:
    """Run the guide's bash and python blocks in order; return their outputs."""
    outputs = []
    runnable = [block for block in docs.blocks(guide) if block.lang in docs.RUN]
    for block in runnable:  # checked before anything runs
        # Never install packages in a test: such blocks are ```console.
        assert not re.search(r"\bpip3? install\b", block.text), (
            f"{block.where}: installs packages; mark the fence ```console"
        )
    for block in runnable:
        text = block.text
        for placeholder in PLACEHOLDER_URLS:
            text = text.replace(placeholder, url)
        if block.lang == "bash":
            argv = ["bash", "-euo", "pipefail", "-c", text]
        else:
            argv = [sys.executable, "-c", text]
        done = subprocess.run(
            argv, cwd=sandbox, env=env, capture_output=True, text=True, timeout=600
        )
        output = done.stdout + done.stderr
        assert done.returncode == 0, f"{block.where} failed ({done.returncode}):\n{text}\n{output}"
        outputs.append(output)
    assert outputs, f"{guide.name} has no runnable block"
    return outputs


def test_student_guide_commands_run(
    compose_coordinator: ComposeCoordinator, tmp_path: Path
) -> None:
    c = compose_coordinator
    # The instructor has started a run (a narrow model keeps the test quick).
    started = httpx.post(
        c.url + "/api/v1/admin/runs",
        json={"config": {**NARROW_RUN, "units_per_step": 1}},
        headers={"Authorization": f"Bearer {c.admin_token}"},
    )
    assert started.status_code == 201, started.text
    sandbox, env = _sandbox(tmp_path, c)
    output = "\n".join(_run_guide(DOCS / "worker.md", sandbox, env, c.url))
    assert "completed successfully" in output
    names = [e["name"] for e in httpx.get(c.url + "/api/v1/leaderboard").json()]
    assert "ada" in names


def test_instructor_guide_commands_run(
    compose_coordinator: ComposeCoordinator, tmp_path: Path
) -> None:
    c = compose_coordinator
    sandbox, env = _sandbox(tmp_path, c)
    output = "\n".join(_run_guide(DOCS / "instructor.md", sandbox, env, c.url))
    assert '"status":"ok"' in output.replace(" ", "")
    # What the guide promised is there: a run that was stopped, the exported generator
    # and its samples, the grading CSV, the test worker revoked, a new join code.
    status = httpx.get(c.url + "/api/v1/status").json()
    assert status["run"]["status"] == "stopped"
    generator, metadata = load_generator((sandbox / "generator.safetensors").read_bytes())
    assert metadata["run_id"] == str(status["run"]["run_id"])
    assert (sandbox / "samples.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    csv_header = (sandbox / "leaderboard.csv").read_text().splitlines()[0]
    assert "name" in csv_header and "total_images" in csv_header
    assert "instructor-test" in output
    join = httpx.get(
        c.url + "/api/v1/admin/join-code", headers={"Authorization": f"Bearer {c.admin_token}"}
    )
    assert join.json()["join_code"] != c.join_code


@pytest.mark.parametrize(
    "page", ["instructor.md", "architecture.md", "faq.md", "configuration.md", "worker.md"]
)
def test_relative_links_resolve(page: str) -> None:
    path = DOCS / page
    for target in re.findall(r"\]\(([^)\s]+)\)", docs.prose(path)):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue
        file, _, anchor = target.partition("#")
        assert (path.parent / file).exists(), f"{page}: broken link {target}"
        if anchor and file.endswith(".md"):
            headings = re.findall(r"^#+ (.+)$", (path.parent / file).read_text(), flags=re.M)
            slugs = {re.sub(r"[^\w\- ]", "", h).strip().lower().replace(" ", "-") for h in headings}
            assert anchor in slugs, f"{page}: no heading for #{anchor} in {file}"
