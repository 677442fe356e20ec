"""Accepted results: acceptance (first valid result wins), lookup of repeats, the open set."""

from __future__ import annotations

from collections.abc import Sequence
from uuid import UUID

import asyncpg

from coordinator_service.db.large_rows import copy_row, float4_array, float8, int4, int8
from coordinator_service.db.models import AcceptedResult, OpenResult, ResultMetrics
from coordinator_service.db.runs import lock_run_shared
from coordinator_service.db.spot_checks import SpotChecksRepo
from coordinator_service.db.workers import record_result
from coordinator_service.errors import CoordinatorError
from coordinator_service.notifications import RESULTS, notify

# Why a lease that is no longer active was refused, by its status.
_ENDED_LEASE_CODES = {
    "expired": "lease_expired",
    "stale": "stale_iteration",
    "superseded": "unit_completed",
    "released": "lease_lost",
    "revoked": "lease_lost",
}


class ResultsRepo:
    """Writes and reads of ``results`` (and the lease/unit rows an acceptance touches)."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    async def previous_answer(self, *, lease_id: UUID) -> AcceptedResult | None:
        """The answer given to the first upload of this lease, if one was accepted."""
        record = await self.conn.fetchrow(
            "SELECT unit_id, iteration, num_samples FROM results WHERE lease_id = $1", lease_id
        )
        return AcceptedResult.of(record) if record else None

    async def accept(
        self,
        *,
        lease_id: UUID,
        run_id: int,
        worker_id: int,
        kind: str,
        num_samples: int,
        body: bytes,
        metrics: ResultMetrics,
        norms: Sequence[float] = (),
        spot_check: bool = False,
        max_staleness: int = 0,
    ) -> AcceptedResult:
        """Store a validated result if its lease is still active and its version at most
        ``max_staleness`` versions behind the run's (0: the run's own, a barrier mode's).

        Re-checks everything under row locks: the upload was validated outside any
        transaction, and a step, an expiry or a backup's result may have happened since.
        A simultaneous repeat of an upload of this lease waits on the lease's row lock and
        then gets the first upload's answer, marked ``duplicate``. With ``spot_check``
        another worker will recompute the unit and the two are compared.
        """
        async with self.conn.transaction():
            # Lock order run -> lease -> unit, the same as a step's, so they never deadlock.
            await lock_run_shared(self.conn, run_id)
            # The run's version is read after the lock: no step commits until this ends.
            lease = await self.conn.fetchrow(
                "SELECT l.unit_id, l.run_id, l.iteration, l.status, l.created_at, "
                "r.iteration AS run_iteration FROM leases l JOIN runs r USING (run_id) "
                "WHERE l.lease_id = $1 AND l.worker_id = $2 AND l.run_id = $3 FOR UPDATE OF l",
                lease_id,
                worker_id,
                run_id,
            )
            if lease is None:
                raise CoordinatorError("lease_lost")
            run_iteration = lease["run_iteration"]
            if lease["status"] == "completed":  # a repeat that waited for the first upload
                previous = await self.previous_answer(lease_id=lease_id)
                if previous is not None:
                    return previous.model_copy(update={"duplicate": True})
            if lease["status"] != "active":
                raise CoordinatorError(_ENDED_LEASE_CODES.get(lease["status"], "lease_lost"))
            if run_iteration - lease["iteration"] > max_staleness:
                raise CoordinatorError("stale_iteration")
            unit_status = await self.conn.fetchval(
                "SELECT status FROM work_units WHERE unit_id = $1 FOR UPDATE", lease["unit_id"]
            )
            if unit_status == "done":
                raise CoordinatorError("unit_completed")
            # Streamed: the body is 13 MB at the class model (accepted_at: the default,
            # the database's clock now, migration 0012).
            await copy_row(self.conn, "results", {
                "lease_id": lease_id.bytes, "unit_id": int8(lease["unit_id"]),
                "run_id": int8(lease["run_id"]), "worker_id": int8(worker_id),
                "iteration": int4(lease["iteration"]), "kind": kind.encode(),
                "num_samples": int4(num_samples), "body": body, "body_bytes": int8(len(body)),
                "norms": float4_array(norms) if norms else None,
                **{name: None if value is None else float8(value)  # a G phase has no D loss
                   for name, value in metrics.model_dump().items()},
            })  # fmt: skip
            await self.conn.execute(
                "UPDATE leases SET status = CASE WHEN lease_id = $1 THEN 'completed' "
                "ELSE 'superseded' END, ended_at = now() "
                "WHERE unit_id = $2 AND status = 'active' AND check_of IS NULL",
                lease_id,
                lease["unit_id"],
            )
            await self.conn.execute(
                "UPDATE work_units SET status = 'done', done_iteration = $2 WHERE unit_id = $1",
                lease["unit_id"],
                lease["iteration"],
            )
            await record_result(self.conn, worker_id, num_samples, lease["created_at"])
            if spot_check:
                await SpotChecksRepo(self.conn).open(result_lease_id=lease_id)
            await notify(self.conn, RESULTS)  # the aggregator, in whichever process
        return AcceptedResult(
            unit_id=lease["unit_id"], iteration=lease["iteration"], num_samples=num_samples
        )

    async def drop_replayed_bodies(self, *, run_id: int, checkpoint: int) -> None:
        """Drop the bodies a committed checkpoint of version ``checkpoint`` made needless
        for replay, except those open spot checks still compare against.

        Its own transaction, after the step's: freeing thirty seconds of results held the
        run's lock exclusively for 70-114 ms (8 feature maps), and every claim and upload
        waited. Lost in a crash, it happens at the next checkpoint, which covers these
        too; no spot check opens on a folded result (they open when a result is accepted).
        """
        await self.conn.execute(
            "UPDATE results r SET body = NULL WHERE run_id = $1 "
            "AND folded_version < $2 AND body IS NOT NULL AND NOT EXISTS "
            "(SELECT 1 FROM spot_checks c WHERE c.result_lease_id = r.lease_id "
            " AND c.status IN ('open', 'leased'))",
            run_id,
            checkpoint,
        )

    async def recent_norms(self, *, run_id: int, kind: str, limit: int) -> list[list[float]]:
        """The norms of the run's latest accepted results of one kind, newest first."""
        records = await self.conn.fetch(
            "SELECT norms FROM results WHERE run_id = $1 AND kind = $2 AND norms IS NOT NULL "
            "ORDER BY accepted_at DESC LIMIT $3",
            run_id,
            kind,
            limit,
        )
        return [list(r["norms"]) for r in records]

    async def open_for(self, *, run_id: int) -> list[OpenResult]:
        """Accepted, unconsumed results, in unit order (a fixed sum order). With a barrier
        they are all of the run's version; an asynchronous run's may be older."""
        records = await self.conn.fetch(
            "SELECT lease_id, unit_id, worker_id, num_samples FROM results "
            "WHERE run_id = $1 AND consumed_at IS NULL ORDER BY unit_id",
            run_id,
        )
        return [OpenResult.of(r) for r in records]

    async def folded_into(self, *, run_id: int, version: int) -> list[bytes | None]:
        """The bodies the committed fold of ``version`` consumed, in its sum order (None
        where a later checkpoint already dropped one)."""
        records = await self.conn.fetch(
            "SELECT body FROM results WHERE run_id = $1 AND folded_version = $2 "
            "ORDER BY unit_id",
            run_id,
            version,
        )
        return [r["body"] for r in records]

    async def bodies(self, *, lease_ids: Sequence[UUID]) -> dict[UUID, bytes]:
        """The uploaded bodies of some accepted results."""
        records = await self.conn.fetch(
            "SELECT lease_id, body FROM results WHERE lease_id = ANY($1::uuid[])", list(lease_ids)
        )
        return {r["lease_id"]: r["body"] for r in records}

    async def count_open(self, *, run_id: int) -> int:
        """Results waiting for the next fold."""
        return int(
            await self.conn.fetchval(
                "SELECT count(*) FROM results WHERE run_id = $1 AND consumed_at IS NULL",
                run_id,
            )
        )
