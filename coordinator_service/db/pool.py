"""The asyncpg pool: created and closed in one place (the app's lifespan), JSON codecs set.

Also the schema guard: the app never creates tables, it only checks that alembic has
brought the database to head and refuses to start otherwise.
"""

from __future__ import annotations

import json
import os

import asyncpg

from coordinator_service.db import migrations


async def _init_connection(conn: asyncpg.Connection) -> None:
    for type_name in ("json", "jsonb"):
        await conn.set_type_codec(
            type_name, encoder=json.dumps, decoder=json.loads, schema="pg_catalog"
        )


def application_name() -> str:
    """How this process's connections appear in ``pg_stat_activity`` (and its locks in
    ``pg_locks``): which of several API processes holds what."""
    return f"gan-coordinator[{os.getpid()}]"


async def _keep_session(conn: asyncpg.Connection) -> None:
    """What a connection needs before it goes back to the pool: nothing beyond asyncpg's
    own rollback of a transaction left open. Pool connections never change session state
    (no SET, LISTEN or session-level advisory lock: the aggregator's lock and the
    notification listener have connections of their own), so the default reset query
    would only be one more round trip on every request (measured: a seventh of the
    coordinator's socket writes under load)."""


async def create_pool(database_url: str, *, min_size: int = 2, max_size: int = 20) -> asyncpg.Pool:
    """A pool whose connections speak JSON for json/jsonb columns."""
    pool = await asyncpg.create_pool(
        database_url,
        min_size=min_size,
        max_size=max_size,
        init=_init_connection,
        reset=_keep_session,
        server_settings={"application_name": application_name()},
    )
    assert pool is not None
    return pool


async def connect(database_url: str) -> asyncpg.Connection:
    """One connection with the same codecs (the aggregator's advisory-lock holder, the CLI)."""
    conn = await asyncpg.connect(
        database_url, server_settings={"application_name": application_name()}
    )
    await _init_connection(conn)
    return conn


class SchemaBehindError(RuntimeError):
    """The database is not at the newest migration; ``serve`` refuses to start."""


async def check_schema(pool: asyncpg.Pool) -> None:
    """Raise SchemaBehindError unless the database is at alembic head."""
    head = migrations.head_revision()
    async with pool.acquire() as conn:
        current = await migrations.current_revision(conn)
    if current != head:
        raise SchemaBehindError(
            f"the database schema is at {current or 'nothing (empty database)'}, "
            f"this coordinator needs {head}: run `gan-coordinator migrate` first"
        )
