"""Alembic environment: hand-written migrations run over SQLAlchemy's asyncpg driver.

The URL comes from ``config.attributes["database_url"]`` (set by
``coordinator_service.db.migrations``) or from the coordinator's Settings, so the same
URL forms work everywhere, including embedded PostgreSQL's Unix-socket URIs.
"""

from __future__ import annotations

import asyncio

from sqlalchemy import pool
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from alembic import context

config = context.config


def _url() -> str:
    url = config.attributes.get("database_url")
    if not url:
        from coordinator_service.settings import Settings

        url = Settings().database_url
    if not url:
        raise SystemExit("no database: set DATABASE_URL or use `gan-coordinator migrate`")
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+asyncpg://" + url[len(prefix) :]
    return url


def _run(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=None, transaction_per_migration=True)
    with context.begin_transaction():
        context.run_migrations()


async def _run_online() -> None:
    engine = create_async_engine(_url(), poolclass=pool.NullPool)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_run)
            await connection.commit()
    finally:
        await engine.dispose()


if context.is_offline_mode():
    context.configure(url=_url(), literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    asyncio.run(_run_online())
