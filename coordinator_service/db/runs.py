"""Runs: creation with their first state and epoch, status changes, progress counters."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from coordinator_service.db.large_rows import copy_row, int4, int8
from coordinator_service.db.models import Run, StepReadiness
from coordinator_service.errors import CoordinatorError
from shared.protocol import RunConfig, UnitCounts

_RUN_COLUMNS = (
    "run_id, status, config, iteration, epoch, iteration_started_at, created_at, finished_at, "
    "problem"
)

PlannedUnit = tuple[int, list[int]]  # (shard, image indices)

# Claims, uploads and revocations hold a run's lock shared, a step holds it exclusively.
# An advisory (heavyweight) lock and not FOR SHARE on the run row: PostgreSQL queues a
# waiting exclusive request ahead of later shared ones, so a busy class can never starve
# a step, which a row lock under a constant stream of FOR SHARE lockers can.
_RUN_LOCK_CLASS = 0x4741  # "GA"


async def lock_run_shared(conn: asyncpg.Connection, run_id: int) -> None:
    """Inside a transaction: no step of this run commits until the transaction ends."""
    await conn.execute("SELECT pg_advisory_xact_lock_shared($1, $2)", _RUN_LOCK_CLASS, run_id)


async def lock_live_run_shared(
    conn: asyncpg.Connection, *, wait_for_disk: bool = True
) -> int | None:
    """Inside a transaction: the live (active or paused) run's id, with its lock held
    shared as by ``lock_run_shared``, in one round trip. Read the run's row after this,
    in a statement of its own: only that one sees a step that committed meanwhile.
    Without ``wait_for_disk`` the transaction commits without waiting for the
    write-ahead log to reach the disk (a claim's: see ``leases``), set in the same trip."""
    no_wait = "" if wait_for_disk else ", set_config('synchronous_commit', 'off', true)"
    return await conn.fetchval(
        f"SELECT run_id, pg_advisory_xact_lock_shared($1, run_id::integer){no_wait} "
        "FROM runs WHERE status IN ('active', 'paused')",
        _RUN_LOCK_CLASS,
    )


async def lock_run_exclusive(conn: asyncpg.Connection, run_id: int) -> None:
    """Inside a transaction: waits for claims and uploads in flight, holds off new ones."""
    await conn.execute("SELECT pg_advisory_xact_lock($1, $2)", _RUN_LOCK_CLASS, run_id)


# Claims that count what a step already has in or out and then lease take this too:
# without it a burst of claims (every long-polling worker wakes when a version is
# published) each counts before any leases, and the step gets leases it cannot use.
_CLAIM_GATE_CLASS = 0x434C  # "CL"


async def lock_claim_gate(conn: asyncpg.Connection, run_id: int) -> None:
    """Inside a claim's transaction: one claim at a time counts and leases (a few ms)."""
    await conn.execute("SELECT pg_advisory_xact_lock($1, $2)", _CLAIM_GATE_CLASS, run_id)


# Which units an iteration hands out: its pinned ones (the repeats of a synchronous G
# phase, by their ``pinned_iteration``), or the epoch's pool (-1). Over a `runs` row.
UNIT_POOL = (
    "CASE WHEN EXISTS (SELECT 1 FROM work_units u WHERE u.run_id = runs.run_id "
    "AND u.pinned_iteration = runs.iteration) THEN runs.iteration ELSE -1 END"
)


async def return_to_pool(conn: asyncpg.Connection, unit_ids: Sequence[int]) -> int:
    """Leased units left with no active lease go back to pending (inside a transaction)."""
    if not unit_ids:
        return 0
    result = await conn.execute(
        "UPDATE work_units u SET status = 'pending' "
        "WHERE u.unit_id = ANY($1::bigint[]) AND u.status = 'leased' AND NOT EXISTS "
        "(SELECT 1 FROM leases l WHERE l.unit_id = u.unit_id AND l.status = 'active')",
        list(unit_ids),
    )
    return int(result.split()[-1])


class RunsRepo:
    """Queries on ``runs`` and the per-run counters over ``work_units`` and ``results``."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    async def create(
        self,
        *,
        config: RunConfig,
        weights: bytes,
        weights_etag: str,
        checkpoint: bytes,
        units: Sequence[PlannedUnit],
    ) -> Run:
        """Insert the run, its iteration-0 state and epoch-0 units in one transaction."""
        async with self.conn.transaction():
            try:
                record = await self.conn.fetchrow(
                    f"INSERT INTO runs (status, config) VALUES ('active', $1) "
                    f"RETURNING {_RUN_COLUMNS}",
                    config.model_dump(mode="json"),
                )
            except asyncpg.UniqueViolationError:
                raise CoordinatorError("run_active") from None
            run = Run.of(record)
            await insert_state(
                self.conn, run_id=run.run_id, iteration=0, weights=weights,
                weights_etag=weights_etag, checkpoint=checkpoint,
            )  # fmt: skip
            await insert_units(self.conn, run_id=run.run_id, epoch=0, units=units)
        return run

    async def get(self, *, run_id: int) -> Run | None:
        record = await self.conn.fetchrow(
            f"SELECT {_RUN_COLUMNS} FROM runs WHERE run_id = $1", run_id
        )
        return Run.of(record) if record else None

    async def live(self) -> Run | None:
        """The active or paused run, if any."""
        record = await self.conn.fetchrow(
            f"SELECT {_RUN_COLUMNS} FROM runs WHERE status IN ('active', 'paused')"
        )
        return Run.of(record) if record else None

    async def latest(self) -> Run | None:
        """The live run, else the most recent one."""
        record = await self.conn.fetchrow(
            f"SELECT {_RUN_COLUMNS} FROM runs "
            "ORDER BY status IN ('active', 'paused') DESC, run_id DESC LIMIT 1"
        )
        return Run.of(record) if record else None

    async def report_problem(self, *, run_id: int, problem: str | None) -> None:
        """Say why the aggregator cannot advance this run (None: it can again)."""
        await self.conn.execute(
            "UPDATE runs SET problem = $2 WHERE run_id = $1 AND problem IS DISTINCT FROM $2",
            run_id,
            problem,
        )

    async def all(self) -> list[Run]:
        records = await self.conn.fetch(f"SELECT {_RUN_COLUMNS} FROM runs ORDER BY run_id")
        return [Run.of(r) for r in records]

    async def set_status(self, *, run_id: int, status: str) -> Run:
        """Pause, resume or stop a live run; finished/stopped runs stay as they are."""
        async with self.conn.transaction():
            record = await self.conn.fetchrow(
                f"UPDATE runs SET status = $2, "
                "finished_at = CASE WHEN $2 IN ('finished', 'stopped') THEN now() END "
                f"WHERE run_id = $1 AND status IN ('active', 'paused') RETURNING {_RUN_COLUMNS}",
                run_id,
                status,
            )
            if record is None:
                raise CoordinatorError("run_not_live")
            if status == "stopped":
                # Nothing will consume these any more: end the leases, drop the blobs,
                # keep the history.
                await self.conn.execute(
                    "UPDATE leases SET status = 'stale', ended_at = now() "
                    "WHERE run_id = $1 AND status = 'active'",
                    run_id,
                )
                await self.conn.execute(
                    "UPDATE results SET body = NULL WHERE run_id = $1 AND consumed_at IS NULL",
                    run_id,
                )
        return Run.of(record)

    async def readiness(self, *, run_id: int) -> StepReadiness:
        """What the aggregator's step rule looks at."""
        record = await self.conn.fetchrow(
            f"""
            SELECT
              (SELECT count(*) FROM results
                WHERE run_id = $1 AND consumed_at IS NULL) AS accepted,
              EXISTS (SELECT 1 FROM work_units WHERE run_id = $1 AND status = 'pending'
                AND coalesce(pinned_iteration, -1) =
                    (SELECT {UNIT_POOL} FROM runs WHERE run_id = $1)) AS any_pending,
              EXISTS (SELECT 1 FROM work_units WHERE run_id = $1 AND status = 'leased')
                AS any_leased
            """,
            run_id,
        )
        return StepReadiness.of(record)

    async def unit_counts(self, *, run_id: int, epoch: int) -> UnitCounts:
        records = await self.conn.fetch(
            # The epoch's images: a G phase's repeats of them are not more work to plan.
            "SELECT status, count(*) AS n, sum(cardinality(image_indices)) AS images "
            "FROM work_units WHERE run_id = $1 AND epoch = $2 AND pinned_iteration IS NULL "
            "GROUP BY status",
            run_id,
            epoch,
        )
        counts = {r["status"]: r["n"] for r in records}
        done = sum(r["images"] for r in records if r["status"] == "done")
        return UnitCounts(**counts, done_images=done)


async def insert_state(
    conn: asyncpg.Connection,
    *,
    run_id: int,
    iteration: int,
    weights: bytes | None,
    weights_etag: str,
    checkpoint: bytes | None,
) -> None:
    """Add a version's ``run_states`` row (call inside the caller's transaction), streamed:
    at the class model it is 13 MB of weights and, with a checkpoint, 75 MB of Adam state."""
    await copy_row(conn, "run_states", {
        "run_id": int8(run_id), "iteration": int4(iteration), "weights": weights,
        "weights_etag": weights_etag.encode(), "checkpoint": checkpoint,
    })  # fmt: skip


async def insert_units(
    conn: asyncpg.Connection, *, run_id: int, epoch: int, units: Sequence[PlannedUnit]
) -> None:
    """Add an epoch's planned units (call inside the caller's transaction)."""
    # COPY: a CelebA-sized epoch is hundreds of units, a big built-in one tens of thousands.
    await conn.copy_records_to_table(
        "work_units",
        records=[(run_id, epoch, shard, indices) for shard, indices in units],
        columns=["run_id", "epoch", "shard", "image_indices"],
    )
