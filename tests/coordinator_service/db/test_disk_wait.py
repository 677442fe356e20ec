"""Claims and heartbeats commit without waiting for the disk, and only they do.

Both switch ``synchronous_commit`` off with ``set_config(..., true)`` inside a statement
(a heartbeat has no explicit transaction at all). Were the setting to outlive their own
transaction, the pooled connection's next accepted result would be answered before it
is durable. So: the session's setting is ``on`` after each, and their commits write the
write-ahead log far less often than as many ordinary commits do (pg_stat_wal, or
pg_stat_io from PostgreSQL 18, counts the writes, whether or not the server fsyncs).
"""

from __future__ import annotations

import asyncio

import asyncpg

from coordinator_service.db.leases import LeasesRepo
from coordinator_service.db.pool import connect
from coordinator_service.db.runs import RunsRepo
from coordinator_service.db.workers import WorkersRepo
from coordinator_service.training.presets import resolve
from shared.protocol import HardwareInfo
from tests.conftest import NARROW_RUN

BEATS = 60


async def _wal_writes(conn: asyncpg.Connection) -> int:
    """WAL writes so far, this backend's own included (it flushes them when asked)."""
    await conn.execute("SELECT pg_stat_force_next_flush()")
    await asyncio.sleep(0.3)  # the WAL writer reports its own writes on its next round
    if int(await conn.fetchval("SHOW server_version_num")) >= 180000:  # moved in 18
        return int(await conn.fetchval("SELECT sum(writes) FROM pg_stat_io WHERE object = 'wal'"))
    return int(await conn.fetchval("SELECT wal_write FROM pg_stat_wal"))


async def _check(database_url: str) -> None:
    conn = await connect(database_url)
    try:
        await RunsRepo(conn).create(
            config=resolve(None, NARROW_RUN), weights=b"w0", weights_etag="e0",
            checkpoint=b"c0", units=[(0, [0, 1]), (0, [2, 3])],
        )  # fmt: skip
        worker = await WorkersRepo(conn).register(
            name="ada", token_hash="hash-of-ada", hardware=HardwareInfo()
        )
        leases = LeasesRepo(conn)
        claimed = await leases.claim(worker_id=worker.worker_id, cached_shards=[])
        assert claimed.unit is not None
        assert await conn.fetchval("SHOW synchronous_commit") == "on"

        before = await _wal_writes(conn)
        for _ in range(BEATS):
            beat = await leases.heartbeat(token_hash="hash-of-ada")
            assert beat is not None and beat.leases_extended == 1
        beats = await _wal_writes(conn) - before
        assert await conn.fetchval("SHOW synchronous_commit") == "on"

        before = await _wal_writes(conn)
        for _ in range(BEATS):  # the same rows, committed as every other request does
            await conn.execute(
                "UPDATE workers SET last_heartbeat = now() WHERE worker_id = $1", worker.worker_id
            )
        ordinary = await _wal_writes(conn) - before
        assert ordinary >= BEATS, ordinary  # each ordinary commit writes before it answers
        assert beats < BEATS // 4, (beats, ordinary)
    finally:
        await conn.close()


def test_claims_and_heartbeats_skip_the_disk_wait_and_nothing_else_does(
    database_url: str,
) -> None:
    asyncio.run(_check(database_url))
