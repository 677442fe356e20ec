"""Least privilege: after ``gan-coordinator migrate`` with GAN_APP_ROLE, the app role
can do every row operation the coordinator needs and nothing that changes the schema.

Each test gets two fresh roles on the test server, like docker-compose.yml's: an owner
(here deliberately not a superuser, so the grant is shown to need only ownership) that
owns a fresh, empty database and runs the real CLI, and an app role that starts with no
privileges. Roles are cluster-wide and the server may be shared, so their names are
unique and they are dropped at teardown.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx
import pytest
from pydantic import ValidationError

from coordinator_service.db import roles
from coordinator_service.embedded import with_database
from coordinator_service.settings import Settings
from shared.protocol import HardwareInfo
from tests.conftest import (
    NARROW_RUN,
    TEST_ADMIN_TOKEN,
    TEST_JOIN_CODE,
    SpawnedCoordinator,
    _admin_execute,
    _unique,
    coordinator_env,
)
from tests.coordinator_service.helpers import (
    api_client,
    claim_when_ready,
    fake_body,
    stored_checkpoint,
    upload,
)
from tests.deploy.compose import with_user

ROW_PRIVILEGES = ("SELECT", "INSERT", "UPDATE", "DELETE")
OTHER_PRIVILEGES = ("TRUNCATE", "REFERENCES", "TRIGGER")
# What the app role must never manage; each statement fails with 42501.
SCHEMA_CHANGES = [
    "CREATE TABLE intruder (id int)",
    "ALTER TABLE results ADD COLUMN intruder int",
    "DROP TABLE runs",
    "CREATE INDEX intruder ON workers (name)",
    "TRUNCATE leases",
    "CREATE VIEW intruder AS SELECT 1 AS one",
    "CREATE FUNCTION intruder() RETURNS int LANGUAGE sql AS 'SELECT 1'",
    "CREATE SCHEMA intruder",
    "ALTER TABLE workers DROP COLUMN name",
    "UPDATE alembic_version SET version_num = 'elsewhere'",
    "DELETE FROM alembic_version",
]


@dataclass
class TwoRoles:
    """A fresh database owned by ``owner``, and ``app``, a login role with no privileges."""

    owner: str
    app: str
    database: str
    admin_url: str  # the database as the test server's superuser
    owner_url: str
    app_url: str


@pytest.fixture
def two_roles(pg_server_url: str) -> Iterator[TwoRoles]:
    """The roles and database of the module docstring, removed again at teardown."""
    owner, app, name = _unique("gan_owner"), _unique("gan_app"), _unique("gan_roles")
    asyncio.run(_admin_execute(
        pg_server_url, f'CREATE ROLE "{owner}" LOGIN', f'CREATE ROLE "{app}" LOGIN',
        f'CREATE DATABASE "{name}" OWNER "{owner}"',
    ))  # fmt: skip
    database = with_database(pg_server_url, name)
    try:
        yield TwoRoles(owner, app, name, database, with_user(database, owner, None),
                       with_user(database, app, None))  # fmt: skip
    finally:
        asyncio.run(_admin_execute(
            pg_server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)',
            f'DROP ROLE IF EXISTS "{owner}", "{app}"',
        ))  # fmt: skip


def migrate(database_url: str, app_role: str) -> subprocess.CompletedProcess[str]:
    """The real ``gan-coordinator migrate`` with GAN_APP_ROLE."""
    return subprocess.run(
        [str(Path(sys.executable).with_name("gan-coordinator")), "migrate"],
        env=coordinator_env(database_url, GAN_APP_ROLE=app_role),
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip


def migrated(two: TwoRoles) -> None:
    done = migrate(two.owner_url, two.app)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"role {two.app} may use the tables; it cannot change the schema" in done.stdout


async def _fetch(url: str, query: str, *args: object) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(url)
    try:
        return list(await conn.fetch(query, *args))
    finally:
        await conn.close()


def tables(two: TwoRoles) -> list[str]:
    rows = asyncio.run(_fetch(
        two.admin_url, "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1"
    ))  # fmt: skip
    return [r["tablename"] for r in rows]


def privileges(two: TwoRoles) -> dict[str, set[str]]:
    """Every table-level privilege the app role holds, through any grant, per table."""
    kinds = ROW_PRIVILEGES + OTHER_PRIVILEGES
    rows = asyncio.run(_fetch(
        two.admin_url,
        "SELECT tablename, kind FROM pg_tables, unnest($2::text[]) AS kind "
        "WHERE schemaname = 'public' AND has_table_privilege($1, 'public.' || "
        "quote_ident(tablename), kind)",
        two.app, list(kinds),
    ))  # fmt: skip
    out: dict[str, set[str]] = {}
    for row in rows:
        out.setdefault(row["tablename"], set()).add(row["kind"])
    return out


def expected_privileges(two: TwoRoles) -> dict[str, set[str]]:
    """Rows of every table; alembic_version may only be read."""
    return {t: {"SELECT"} if t == "alembic_version" else set(ROW_PRIVILEGES) for t in tables(two)}


def schema_fingerprint(two: TwoRoles) -> list[tuple[object, ...]]:
    """Every column (information_schema.columns), index and function of the schema."""
    columns = asyncio.run(_fetch(
        two.admin_url,
        "SELECT table_name, column_name, ordinal_position, data_type, is_nullable, "
        "column_default FROM information_schema.columns WHERE table_schema = 'public' "
        "ORDER BY table_name, ordinal_position",
    ))  # fmt: skip
    indexes = asyncio.run(_fetch(
        two.admin_url, "SELECT indexdef FROM pg_indexes WHERE schemaname = 'public' ORDER BY 1"
    ))  # fmt: skip
    functions = asyncio.run(_fetch(
        two.admin_url,
        "SELECT proname FROM pg_proc WHERE pronamespace = 'public'::regnamespace ORDER BY 1",
    ))  # fmt: skip
    schemas = asyncio.run(_fetch(two.admin_url, "SELECT nspname FROM pg_namespace ORDER BY 1"))
    return [tuple(r.values()) for r in [*columns, *indexes, *functions, *schemas]]


async def _row_operations(url: str, table_names: list[str]) -> None:
    """SELECT, INSERT, UPDATE and DELETE on each table and nextval on each sequence, as
    the app role. Privileges are checked when a statement starts, whatever rows it
    touches, so statements that match no row prove the right without changing data."""
    conn = await asyncpg.connect(url)
    try:
        for table in table_names:
            column = await conn.fetchval(
                "SELECT column_name FROM information_schema.columns WHERE table_schema = "
                "'public' AND table_name = $1 ORDER BY ordinal_position LIMIT 1",
                table,
            )
            await conn.fetch(f'SELECT * FROM "{table}" LIMIT 1')
            if table == "alembic_version":
                continue  # SELECT only: tested with SCHEMA_CHANGES
            await conn.execute(f'INSERT INTO "{table}" SELECT * FROM "{table}" WHERE false')
            await conn.execute(f'UPDATE "{table}" SET "{column}" = "{column}" WHERE false')
            await conn.execute(f'DELETE FROM "{table}" WHERE false')
        sequences = await conn.fetch(
            "SELECT sequencename FROM pg_sequences WHERE schemaname = 'public'"
        )
        assert sequences  # the bigserial ids
        for row in sequences:
            assert await conn.fetchval("SELECT nextval($1::regclass)", row["sequencename"]) >= 1
        async with conn.transaction():  # what a join-code rotation takes
            await conn.execute("LOCK TABLE join_codes IN EXCLUSIVE MODE")
    finally:
        await conn.close()


async def _not_refused(url: str, statements: list[str]) -> list[str]:
    """The statements that did not fail with InsufficientPrivilegeError (empty: all did)."""
    conn = await asyncpg.connect(url)
    allowed = []
    try:
        for statement in statements:
            try:
                await conn.execute(statement)
            except asyncpg.InsufficientPrivilegeError:
                continue
            allowed.append(statement)
    finally:
        await conn.close()
    return allowed


def test_the_app_role_may_use_every_table_and_not_change_the_schema(two_roles: TwoRoles) -> None:
    two = two_roles
    # Without GAN_APP_ROLE migrate grants nothing: the app role cannot even read, so it is
    # the grant that allows what follows.
    plain = migrate(two.owner_url, "")
    assert plain.returncode == 0 and "role" not in plain.stdout, plain.stdout + plain.stderr
    assert privileges(two) == {}
    assert asyncio.run(_not_refused(two.app_url, ["SELECT * FROM workers"])) == []
    migrated(two)
    names = tables(two)
    assert {"runs", "run_states", "workers", "join_codes", "work_units", "leases", "results",
            "history", "samples", "alembic_version"} <= set(names)  # fmt: skip
    assert privileges(two) == expected_privileges(two)
    asyncio.run(_row_operations(two.app_url, names))

    before = schema_fingerprint(two)
    assert asyncio.run(_not_refused(two.app_url, SCHEMA_CHANGES)) == []
    assert schema_fingerprint(two) == before
    version = asyncio.run(_fetch(two.admin_url, "SELECT version_num FROM alembic_version"))
    assert [r["version_num"] for r in version] != ["elsewhere"] and len(version) == 1


def test_every_migrate_restores_exactly_the_grant(two_roles: TwoRoles) -> None:
    two = two_roles
    migrated(two)
    # Privileges given by hand since (or left by an older grant) do not survive a migrate.
    asyncio.run(_admin_execute(
        two.owner_url, f'GRANT TRUNCATE, TRIGGER ON leases TO "{two.app}"',
        f'GRANT CREATE ON SCHEMA public TO "{two.app}"',
        "GRANT CREATE ON SCHEMA public TO PUBLIC",
        f'GRANT CREATE ON DATABASE "{two.database}" TO "{two.app}"',
    ))  # fmt: skip
    assert "TRUNCATE" in privileges(two)["leases"]
    migrated(two)
    assert privileges(two) == expected_privileges(two)
    assert asyncio.run(_not_refused(two.app_url, SCHEMA_CHANGES)) == []


def test_migrate_refuses_a_role_it_cannot_restrict(two_roles: TwoRoles) -> None:
    two = two_roles
    missing = _unique("gan_nobody")
    done = migrate(two.owner_url, missing)
    assert done.returncode == 2
    assert f"GAN_APP_ROLE={missing}: no such PostgreSQL role" in done.stderr
    assert "database migrated to head" in done.stdout  # the schema is there all the same

    # The owner itself, or a role that inherits it, would keep every right.
    with pytest.raises(roles.AppRoleError, match="inherits"):
        asyncio.run(roles.grant_app_role(two.owner_url, role=two.owner))
    asyncio.run(_admin_execute(two.admin_url, f'GRANT "{two.owner}" TO "{two.app}"'))
    with pytest.raises(roles.AppRoleError, match="inherits"):
        asyncio.run(roles.grant_app_role(two.owner_url, role=two.app))
    asyncio.run(_admin_execute(two.admin_url, f'REVOKE "{two.owner}" FROM "{two.app}"'))
    superuser = asyncio.run(_fetch(two.admin_url, "SELECT current_user AS name"))[0]["name"]
    with pytest.raises(roles.AppRoleError, match="superuser"):
        asyncio.run(roles.grant_app_role(two.owner_url, role=superuser))
    # A failed grant changes nothing: the app role still has no privilege at all.
    assert privileges(two) == {}


def test_an_app_role_name_is_a_plain_identifier() -> None:
    assert Settings(app_role="gan_app").app_role == "gan_app"
    assert Settings().app_role == ""  # default: nothing to grant
    for bad in ('gan"; DROP TABLE runs; --', "Gan", "gan app", "1gan", "g" * 64):
        with pytest.raises(ValidationError):
            Settings(app_role=bad)
    assert roles.quote_ident('a"b') == '"a""b"'


def test_a_coordinator_connected_as_the_app_role_serves_a_run(
    two_roles: TwoRoles, spawn_coordinator: Callable[..., SpawnedCoordinator]
) -> None:
    two = two_roles
    # A hardened server: PUBLIC may not create temporary tables, so the grant must.
    asyncio.run(_admin_execute(
        two.admin_url, f'REVOKE TEMPORARY ON DATABASE "{two.database}" FROM PUBLIC'
    ))  # fmt: skip
    migrated(two)
    # `serve` checks alembic_version as the app role; every version gets its Adam state.
    served = spawn_coordinator(two.app_url, GAN_SNAPSHOT_SECONDS="0")
    admin = api_client(served.url, TEST_ADMIN_TOKEN)
    anyone = api_client(served.url)
    body = {"join_code": TEST_JOIN_CODE, "name": "least-privilege",
            "hardware": HardwareInfo().model_dump()}  # fmt: skip
    registered = anyone.post("/workers", json=body)
    assert registered.status_code == 201, registered.text
    worker = api_client(served.url, registered.json()["token"])
    started = admin.post("/admin/runs", json={"config": {**NARROW_RUN, "units_per_step": 1}})
    assert started.status_code == 201, started.text

    unit = claim_when_ready(worker)
    accepted = upload(worker, unit, fake_body(unit))
    assert accepted.status_code == 200 and accepted.json()["accepted"] is True, accepted.text
    # The aggregator, also as the app role, folds it and publishes the next version.
    deadline = time.monotonic() + 120
    while worker.get("/status").json()["run"]["iteration"] < 1:
        assert time.monotonic() < deadline, served.log()
        time.sleep(0.1)
    assert stored_checkpoint(two.admin_url, 1, 1), served.log()  # by a temporary table
    # A join-code rotation locks its table (LOCK TABLE needs UPDATE, granted).
    rotated = admin.post("/admin/join-code/rotate")
    assert rotated.status_code == 200, rotated.text
    assert admin.post("/admin/runs/current/pause").status_code == 200
    # Revoking deletes the worker's unconsumed results and ends its leases.
    worker_id = registered.json()["worker_id"]
    assert admin.post(f"/admin/workers/{worker_id}/revoke").status_code == 200
    assert worker.post("/workers/me/heartbeat", json={}).status_code == 403
    for client in (admin, anyone, worker):
        client.close()
    assert httpx.get(served.url + "/healthz").json() == {"status": "ok"}
    assert "Traceback" not in served.log(), served.log()
