"""Run the compose file's services as plain processes, the way their containers would.

A service's process gets what its container gets: the image's ``ENV`` (from its
Dockerfile) overlaid with the service's resolved ``environment`` (``docker-compose
config`` does the interpolation, from ``.env.example`` plus the test secrets below),
its ``command`` and its working directory. Only what cannot exist on this machine is
mapped, and only here:

* ``DATABASE_URL`` names the test PostgreSQL instead of the ``db`` service;
* paths under the ``/data`` volume live in a temporary directory, ``/app`` is the repo;
* ``serve --host 0.0.0.0 --port 8000`` listens on 127.0.0.1 and a free port instead
  (the machine is shared), and the healthcheck URL follows it; so does the address
  other services use for it, ``http://coordinator:8000``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.conftest import REPO_ROOT, free_port
from tests.deploy.test_static import COMPOSE, ENV_EXAMPLE, tool

# What an instructor puts in .env: real secrets (8+ characters, no placeholder).
TEST_SECRETS = {
    "POSTGRES_PASSWORD": "compose-test-db-password",
    "GAN_ADMIN_TOKEN": "compose-test-admin-token",
    "GAN_JOIN_CODE": "blue-otter-42",  # the guides' example code
    "GAN_TORCH_THREADS": "1",  # two cores are shared by everything in the test run
}
CONTAINER_PORT = "8000"


def resolved_compose() -> dict[str, Any]:
    """``docker-compose config`` of the repo's compose file with .env.example + TEST_SECRETS."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GAN_", "POSTGRES_"))}
    env.update(TEST_SECRETS)
    result = subprocess.run(
        [tool("docker-compose"), "--project-directory", str(REPO_ROOT), "-f", str(COMPOSE),
         "--env-file", str(ENV_EXAMPLE), "config"],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    config: dict[str, Any] = yaml.safe_load(result.stdout)
    return config


def image_config(dockerfile: Path) -> tuple[dict[str, str], str]:
    """The ``ENV`` variables and the final ``WORKDIR`` of a Dockerfile."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    env: dict[str, str] = {}
    workdir = "/"
    for line in text.splitlines():
        word, _, rest = line.strip().partition(" ")
        if word == "ENV":
            env.update(dict(re.findall(r"(\w+)=(\S+)", rest)))
        elif word == "WORKDIR":
            workdir = rest.strip()
    return env, workdir


@dataclass
class ServiceProcess:
    """How to run one compose service here: argv, environment and working directory."""

    argv: list[str]
    env: dict[str, str]
    cwd: Path
    healthcheck: list[str] | None


def service_process(
    config: dict[str, Any], name: str, *, database_url: str, data_dir: Path, port: int
) -> ServiceProcess:
    """The process a compose service would run, mapped as the module docstring says."""
    service = config["services"][name]
    image_env, workdir = image_config(REPO_ROOT / service["build"]["dockerfile"])

    def local(value: str) -> str:
        if value == f"http://coordinator:{CONTAINER_PORT}":
            return f"http://127.0.0.1:{port}"
        if value == "/data" or value.startswith("/data/"):
            return str(data_dir) + value[len("/data") :]
        if value.startswith("/app/"):
            return str(REPO_ROOT) + value[len("/app") :]
        return value

    env = {k: v for k, v in os.environ.items() if not k.startswith("GAN_") and k != "DATABASE_URL"}
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env.update({k: local(v) for k, v in image_env.items()})
    env.update({k: local(str(v)) for k, v in service.get("environment", {}).items()})
    if "DATABASE_URL" in service.get("environment", {}):
        assert env["DATABASE_URL"].startswith("postgresql://gan:")  # the db service's user
        env["DATABASE_URL"] = database_url

    # `docker-compose config` writes a literal $ as $$ again; the container sees one $.
    argv = [str(a).replace("$$", "$") for a in service.get("entrypoint", [])]
    argv += [str(a).replace("$$", "$") for a in service.get("command", [])]
    for flag, container_value, here in (("--host", "0.0.0.0", "127.0.0.1"),
                                        ("--port", CONTAINER_PORT, str(port))):  # fmt: skip
        if flag in argv:
            i = argv.index(flag) + 1
            assert argv[i] == container_value, f"{name}: {flag} {argv[i]}"
            argv[i] = here
    healthcheck = None
    if "healthcheck" in service:
        test = [str(a) for a in service["healthcheck"]["test"]]
        assert test[0] == "CMD"
        healthcheck = [
            sys.executable
            if a == "python"
            else local(a).replace(f":{CONTAINER_PORT}/", f":{port}/")
            for a in test[1:]
        ]
    cwd = Path(local(service.get("working_dir", workdir)))
    if not (cwd.is_relative_to(data_dir) or cwd.is_relative_to(REPO_ROOT)):
        cwd = data_dir.parent / "container-fs" / cwd.relative_to("/")  # e.g. /home/gan
    cwd.mkdir(parents=True, exist_ok=True)
    return ServiceProcess(argv=argv, env=env, cwd=cwd, healthcheck=healthcheck)


@dataclass
class ComposeCoordinator:
    """The compose file's coordinator, running as a process against a test database."""

    url: str
    process: subprocess.Popen[bytes]
    serve: ServiceProcess
    migrate: ServiceProcess
    migrate_output: str
    log_path: Path
    data_dir: Path
    config: dict[str, Any]
    port: int

    def service(self, name: str) -> ServiceProcess:
        """Another service of the compose file, mapped onto this coordinator."""
        return service_process(
            self.config, name, database_url=self.serve.env["DATABASE_URL"],
            data_dir=self.data_dir, port=self.port,
        )  # fmt: skip

    @property
    def admin_token(self) -> str:
        return self.serve.env["GAN_ADMIN_TOKEN"]

    @property
    def join_code(self) -> str:
        return self.serve.env["GAN_JOIN_CODE"]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=30)


def start_compose_coordinator(
    database_url: str, workdir: Path, wait: Callable[[float], None] = time.sleep
) -> ComposeCoordinator:
    """Run the migrate service to completion, then the coordinator service until healthy."""
    config = resolved_compose()
    data_dir = workdir / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    kw: dict[str, Any] = {"database_url": database_url, "data_dir": data_dir, "port": port}
    migrate = service_process(config, "migrate", **kw)
    done = subprocess.run(
        migrate.argv, env=migrate.env, cwd=migrate.cwd, capture_output=True, text=True,
        timeout=300, check=False,
    )  # fmt: skip
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"migrate failed:\n{output}"
    serve = service_process(config, "coordinator", **kw)
    log_path = workdir / "coordinator.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            serve.argv, env=serve.env, cwd=serve.cwd, stdout=log, stderr=subprocess.STDOUT
        )
    running = ComposeCoordinator(
        url=f"http://127.0.0.1:{port}", process=process, serve=serve, migrate=migrate,
        migrate_output=output, log_path=log_path, data_dir=data_dir, config=config, port=port,
    )  # fmt: skip
    deadline = time.monotonic() + 90
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"the coordinator exited early:\n{running.log()}")
        try:
            if httpx.get(running.url + "/healthz", timeout=2).status_code == 200:
                return running
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            running.stop()
            raise RuntimeError(f"the coordinator did not become healthy:\n{running.log()}")
        wait(0.1)
