"""Finding a pending unit of the version's pool costs a few index entries, not an epoch.

A synchronous G phase repeats the D phase's units as copies pinned to its version,
inserted after the whole epoch. A claim, and the step rule at every aggregator tick,
look for a pending unit of that pool. With the pending units indexed by unit id alone,
both walked every pending unit of the epoch before reaching the pinned ones (30,200
index entries and 5 ms per claim on the load bench's million-image epoch), and the
rule counted them all four times a second in every mode. PostgreSQL's own counters
(pg_stat_user_indexes) say how many entries the pending index handed out.
"""

from __future__ import annotations

import asyncpg

from coordinator_service.db.leases import LeasesRepo
from coordinator_service.db.pool import connect
from coordinator_service.db.runs import RunsRepo
from coordinator_service.db.workers import WorkersRepo
from coordinator_service.training.presets import resolve
from shared.protocol import HardwareInfo
from tests.conftest import NARROW_RUN

EPOCH_UNITS = 3000


async def _pending_index_reads(conn: asyncpg.Connection) -> int:
    """Entries the pending-unit index has returned so far (this backend's included: it
    reports them when asked to, before the next statement)."""
    await conn.execute("SELECT pg_stat_force_next_flush()")
    return int(await conn.fetchval(
        "SELECT idx_tup_read FROM pg_stat_user_indexes WHERE indexrelname = 'work_units_pending'"
    ))  # fmt: skip


async def test_a_g_phase_claim_and_the_step_rule_read_a_few_entries(database_url: str) -> None:
    conn = await connect(database_url)
    try:
        run = await RunsRepo(conn).create(
            config=resolve(None, NARROW_RUN), weights=b"w0", weights_etag="e0", checkpoint=b"c0",
            units=[(0, [2 * i, 2 * i + 1]) for i in range(EPOCH_UNITS)],
        )  # fmt: skip
        # A G phase of version 0: copies of three units pinned to it, inserted last, as
        # the step that publishes a D phase does.
        await conn.execute(
            "INSERT INTO work_units (run_id, epoch, shard, image_indices, pinned_iteration) "
            "SELECT run_id, epoch, shard, image_indices, 0 FROM work_units "
            "WHERE run_id = $1 ORDER BY unit_id LIMIT 3",
            run.run_id,
        )
        worker = await WorkersRepo(conn).register(
            name="ada", token_hash="hash-of-ada", hardware=HardwareInfo()
        )
        runs, leases = RunsRepo(conn), LeasesRepo(conn)

        before = await _pending_index_reads(conn)
        claimed = await leases.claim(worker_id=worker.worker_id, cached_shards=[])
        ready = await runs.readiness(run_id=run.run_id)
        reads = await _pending_index_reads(conn) - before

        assert claimed.unit is not None and claimed.unit.image_indices == [0, 1]  # pinned
        pinned = await conn.fetchval(
            "SELECT pinned_iteration FROM work_units WHERE unit_id = $1", claimed.unit.unit_id
        )
        assert pinned == 0
        assert ready.accepted == 0 and ready.any_pending and ready.any_leased
        assert reads < 20, reads  # unit order alone: more than the epoch's 3,000 units
    finally:
        await conn.close()
