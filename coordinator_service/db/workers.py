"""Workers and join codes: registration, token lookup, revocation, the leaderboard."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

import asyncpg

from coordinator_service.db.models import Worker
from coordinator_service.db.runs import lock_run_shared, return_to_pool
from shared.protocol import HardwareInfo, RevokeResponse

# A worker's standing (revoked, flagged) changes under a lock of its own, taken right
# after the run lock and before any row: both shut the worker out, locking its leases,
# then its results (and, by cascade, their spot checks), and a verdict that flags it
# already holds a spot check of its result. Without this lock an instructor's revoke
# and that verdict took the two in opposite orders and PostgreSQL aborted one.
_WORKER_LOCK_CLASS = 0x574B  # "WK"


async def lock_workers(conn: asyncpg.Connection, worker_ids: Iterable[int]) -> None:
    """Inside a transaction: the standing locks of these workers, in ascending id order
    (so two transactions that each take two never wait on each other in a circle)."""
    for worker_id in sorted(set(worker_ids)):
        await conn.execute(
            "SELECT pg_advisory_xact_lock($1, ($2::bigint % 2147483647)::integer)",
            _WORKER_LOCK_CLASS,
            worker_id,
        )


# An accepted result times its worker: its images over the seconds since the later of
# its lease's start and the worker's previous result (a worker that claims ahead is
# timed by the pace of its results), averaged with the previous figure. Dynamic local
# updates size the worker's next claims by it (planner.units_per_claim).
_RECORD_RESULT = """
UPDATE workers w SET last_heartbeat = now(), last_result_at = clock_timestamp(),
    images_per_second = CASE WHEN w.images_per_second IS NULL THEN t.measured
                             ELSE 0.5 * w.images_per_second + 0.5 * t.measured END
FROM (SELECT $2::float8 / greatest(extract(epoch FROM clock_timestamp()
                 - greatest($3::timestamptz, last_result_at))::float8, 0.001) AS measured
      FROM workers WHERE worker_id = $1) t
WHERE w.worker_id = $1
"""


async def record_result(
    conn: asyncpg.Connection, worker_id: int, images: int, leased_at: datetime
) -> None:
    """The worker's result was accepted: it is alive, and this is its latest speed."""
    await conn.execute(_RECORD_RESULT, worker_id, images, leased_at)


WORKER_COLUMNS = (
    "worker_id, name, revoked_at, total_images, total_work_units, last_heartbeat, flagged_at"
)


class WorkersRepo:
    """Queries on ``workers`` and ``join_codes``."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    async def join_code_valid(self, *, code: str) -> bool:
        return bool(
            await self.conn.fetchval(
                "SELECT 1 FROM join_codes WHERE code = $1 AND revoked_at IS NULL", code
            )
        )

    async def current_join_code(self) -> str | None:
        return await self.conn.fetchval(
            "SELECT code FROM join_codes WHERE revoked_at IS NULL ORDER BY created_at DESC LIMIT 1"
        )

    async def ensure_join_code(self, *, code: str) -> str:
        """Seed the join code from settings on first start; rotation later wins over it."""
        async with self.conn.transaction():
            await self.conn.execute("LOCK TABLE join_codes IN EXCLUSIVE MODE")
            current = await self.current_join_code()
            if current is not None:
                return current
            await self.conn.execute(
                "INSERT INTO join_codes (code) VALUES ($1) "
                "ON CONFLICT (code) DO UPDATE SET revoked_at = NULL",
                code,
            )
        return code

    async def rotate_join_code(self, *, code: str) -> str:
        """Revoke every join code and make ``code`` the only valid one."""
        async with self.conn.transaction():
            await self.conn.execute(
                "UPDATE join_codes SET revoked_at = now() WHERE revoked_at IS NULL"
            )
            await self.conn.execute("INSERT INTO join_codes (code) VALUES ($1)", code)
        return code

    async def register(self, *, name: str, token_hash: str, hardware: HardwareInfo) -> Worker:
        record = await self.conn.fetchrow(
            "INSERT INTO workers (name, token_hash, last_heartbeat, hostname, platform, "
            "python_version, torch_version, device, device_name, cpu_cores, ram_gb, gpu_count, "
            "gpu_vram_gb) VALUES ($1, $2, now(), $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) "
            f"RETURNING {WORKER_COLUMNS}",
            name,
            token_hash,
            hardware.hostname,
            hardware.platform,
            hardware.python_version,
            hardware.torch_version,
            hardware.device,
            hardware.device_name,
            hardware.cpu_cores,
            hardware.ram_gb,
            hardware.gpu_count,
            hardware.gpu_vram_gb,
        )
        return Worker.of(record)

    async def by_token_hash(self, *, token_hash: str) -> Worker | None:
        record = await self.conn.fetchrow(
            f"SELECT {WORKER_COLUMNS} FROM workers WHERE token_hash = $1", token_hash
        )
        return Worker.of(record) if record else None

    async def revoke(self, *, worker_id: int) -> RevokeResponse | None:
        """Revoke a worker: end its leases, drop its unconsumed results, in one transaction."""
        async with self.conn.transaction():
            live = await self.conn.fetchval(
                "SELECT run_id FROM runs WHERE status IN ('active', 'paused')"
            )
            if live is not None:  # the lock order of a step: run, then rows
                await lock_run_shared(self.conn, live)
            await lock_workers(self.conn, [worker_id])
            if not await self.conn.fetchval(
                "SELECT EXISTS (SELECT 1 FROM workers WHERE worker_id = $1)", worker_id
            ):
                return None
            ended, dropped = await self._shut_out(worker_id)
            await self.conn.execute(
                "UPDATE workers SET revoked_at = coalesce(revoked_at, now()) WHERE worker_id = $1",
                worker_id,
            )
        return RevokeResponse(worker_id=worker_id, leases_ended=ended, results_dropped=dropped)

    async def _shut_out(self, worker_id: int) -> tuple[int, int]:
        """End the worker's active leases and drop its unconsumed results, their units
        back in the pool (inside a transaction holding the run lock shared). Returns how
        many leases ended and results were dropped."""
        leases = await self.conn.fetch(
            "UPDATE leases SET status = 'revoked', ended_at = now() "
            "WHERE worker_id = $1 AND status = 'active' RETURNING unit_id, check_of",
            worker_id,
        )
        # Its leases just ended, so no result of it can be accepted before this commits.
        dropped = [r["unit_id"] for r in await self.conn.fetch(
            "SELECT unit_id FROM results WHERE worker_id = $1 AND consumed_at IS NULL", worker_id
        )]  # fmt: skip
        # A dropped result's unit is not done after all: back to the pool.
        await self.conn.execute(
            "UPDATE work_units SET status = 'leased', done_iteration = NULL "
            "WHERE unit_id = ANY($1::bigint[])",
            dropped,
        )
        units = [r["unit_id"] for r in leases if r["check_of"] is None]
        await return_to_pool(self.conn, units + dropped)
        await self.conn.execute(
            "DELETE FROM results WHERE worker_id = $1 AND consumed_at IS NULL", worker_id
        )
        return len(leases), len(dropped)

    async def flag(self, *, worker_id: int, reason: str) -> bool:
        """Flag a worker whose results spot checks found wrong (inside a transaction
        holding the run lock shared and the worker's :func:`lock_workers`): it gets 403
        ``worker_flagged`` until the instructor clears or revokes it, and its results
        not yet folded are quarantined, i.e. dropped, their images back in the pool for
        others. False if already flagged."""
        if await self.conn.fetchval(
            "SELECT flagged_at IS NOT NULL FROM workers WHERE worker_id = $1", worker_id
        ):
            return False
        await self._shut_out(worker_id)
        await self.conn.execute(
            "UPDATE workers SET flagged_at = coalesce(flagged_at, now()), flag_reason = $2 "
            "WHERE worker_id = $1",
            worker_id,
            reason,
        )
        return True

    async def clear_flag(self, *, worker_id: int) -> bool:
        """The instructor trusts the worker again: its disagreements so far stop counting."""
        found = await self.conn.fetchval(
            "UPDATE workers SET flagged_at = NULL, flag_reason = NULL, flag_cleared_at = now() "
            "WHERE worker_id = $1 RETURNING worker_id",
            worker_id,
        )
        return found is not None

    async def counts(self, *, active_since: datetime) -> tuple[int, int]:
        """(workers heard from since ``active_since``, all non-revoked workers)."""
        record = await self.conn.fetchrow(
            "SELECT count(*) FILTER (WHERE last_heartbeat >= $1) AS active, count(*) AS total "
            "FROM workers WHERE revoked_at IS NULL",
            active_since,
        )
        return int(record["active"]), int(record["total"])
