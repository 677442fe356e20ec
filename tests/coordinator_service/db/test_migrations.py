"""The schema comes only from alembic, and every migration is reversible."""

from __future__ import annotations

import asyncio

import asyncpg

from coordinator_service.db import migrations


async def _tables(database_url: str) -> set[str]:
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        revision = await migrations.current_revision(conn)
    finally:
        await conn.close()
    return {r["tablename"] for r in rows} | {f"@{revision}"}


def test_upgrade_downgrade_upgrade(database_url: str) -> None:
    at_head = asyncio.run(_tables(database_url))
    assert {"runs", "run_states", "work_units", "leases", "results", "workers", "history",
            "samples", "join_codes", f"@{migrations.head_revision()}"} <= at_head  # fmt: skip
    migrations.downgrade(database_url, "base")
    assert asyncio.run(_tables(database_url)) == {"alembic_version", "@None"}
    migrations.upgrade(database_url)
    assert asyncio.run(_tables(database_url)) == at_head
