"""Spot checks (BOINC's replication, sampled): a share of accepted results is computed
again by another worker and compared.

A check is ``open`` from the moment its result is accepted (the worker cannot tell
which of its results will be checked), ``leased`` while a check lease is out, and then
``agreed`` or ``disagreed``; ``lapsed`` if the checked version's weights are pruned
before anyone took it. A check lease is a lease with ``check_of`` set, for the checked
result's version: it outlives the steps after it, since comparing needs that version
and nothing else. A worker is flagged when its results disagreed with those of two
different workers since the instructor last cleared it: one disagreement cannot say
which of the two lied, a second partner can.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from uuid import UUID

import asyncpg

from coordinator_service.db.models import Run
from coordinator_service.db.runs import lock_run_shared
from coordinator_service.db.workers import WorkersRepo, lock_workers

FLAG_PARTNERS = 2  # distinct workers a worker's results must disagree with to be flagged

# Check leases that ended without an upload (expired, released, revoked) free their check.
_REOPEN = """
UPDATE spot_checks c SET status = 'open', checker_lease_id = NULL
FROM leases l
WHERE c.run_id = $1 AND c.status = 'leased' AND l.lease_id = c.checker_lease_id
  AND l.status <> 'active'
"""

# The oldest open check of another worker whose version is still served. ``status`` is
# this row's own column, so two claims racing for one check cannot both get it.
_LEASE = """
WITH picked AS (
    SELECT c.check_id, c.result_lease_id, c.unit_id, c.iteration FROM spot_checks c
    WHERE c.run_id = $1 AND c.status = 'open' AND c.worker_id <> $2
      AND EXISTS (SELECT 1 FROM run_states s
                  WHERE s.run_id = c.run_id AND s.iteration = c.iteration)
    ORDER BY c.check_id LIMIT 1
    FOR UPDATE OF c SKIP LOCKED
), lease AS (
    INSERT INTO leases (unit_id, worker_id, run_id, iteration, deadline, check_of, claim_id)
    SELECT unit_id, $2, $1, iteration, now() + make_interval(secs => $3), result_lease_id, $4
    FROM picked
    RETURNING lease_id, unit_id, iteration, deadline, is_backup, check_of,
              extract(epoch FROM deadline - clock_timestamp())::double precision AS seconds_left
), marked AS (
    UPDATE spot_checks c SET status = 'leased', checker_lease_id = lease.lease_id
    FROM lease WHERE c.result_lease_id = lease.check_of
)
SELECT l.lease_id, l.unit_id, l.iteration, l.deadline, l.is_backup, l.seconds_left,
       u.epoch, u.image_indices
FROM lease l JOIN work_units u USING (unit_id)
"""

# Distinct workers whose results disagreed with this worker's since its flag was cleared.
_PARTNERS = """
SELECT count(DISTINCT CASE WHEN c.worker_id = $1 THEN c.checker_worker_id
                           ELSE c.worker_id END)
FROM spot_checks c, workers w
WHERE w.worker_id = $1 AND c.status = 'disagreed'
  AND (c.worker_id = $1 OR c.checker_worker_id = $1)
  AND c.decided_at > coalesce(w.flag_cleared_at, '-infinity')
"""


@dataclass(frozen=True)
class CheckTarget:
    """What a check lease's upload is compared with."""

    check_id: int
    status: str
    checker_lease_id: UUID | None
    worker_id: int  # who computed the checked result
    body: bytes | None


@dataclass(frozen=True)
class Verdict:
    agreed: bool
    flagged: list[int]  # workers flagged by this verdict
    duplicate: bool = False  # a repeat upload of a check already decided


class SpotChecksRepo:
    """Queries on ``spot_checks`` (and the check leases they hand out)."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    async def open(self, *, result_lease_id: UUID) -> None:
        """Check the result just accepted (inside the accepting transaction)."""
        await self.conn.execute(
            "INSERT INTO spot_checks (run_id, result_lease_id, unit_id, iteration, worker_id) "
            "SELECT run_id, lease_id, unit_id, iteration, worker_id FROM results "
            "WHERE lease_id = $1",
            result_lease_id,
        )

    async def lease(
        self, run: Run, worker_id: int, claim_id: UUID | None = None
    ) -> dict[str, Any] | None:
        """A check lease for another worker's result, inside the claim's transaction."""
        await self.conn.execute(_REOPEN, run.run_id)
        row = await self.conn.fetchrow(
            _LEASE, run.run_id, worker_id, run.config.lease_seconds, claim_id
        )
        return dict(row) if row else None

    async def target(self, *, result_lease_id: UUID) -> CheckTarget | None:
        record = await self.conn.fetchrow(
            "SELECT c.check_id, c.status, c.checker_lease_id, c.worker_id, r.body "
            "FROM spot_checks c JOIN results r ON r.lease_id = c.result_lease_id "
            "WHERE c.result_lease_id = $1",
            result_lease_id,
        )
        return CheckTarget(**dict(record)) if record else None

    async def decide(
        self, *, lease_id: UUID, worker_id: int, distance: float, tolerance: float
    ) -> Verdict | None:
        """Record a check lease's verdict; flag whoever has now disagreed with two
        partners. None if the lease is no longer this worker's active check lease."""
        async with self.conn.transaction():
            # The order of an upload (run, lease, rows): flagging drops open results.
            run_id = await self.conn.fetchval(
                "SELECT run_id FROM leases WHERE lease_id = $1", lease_id
            )
            if run_id is None:
                return None
            await lock_run_shared(self.conn, run_id)
            # Either worker may be flagged below: their standing locks before any row.
            checked = await self.conn.fetchval(
                "SELECT r.worker_id FROM leases l JOIN results r ON r.lease_id = l.check_of "
                "WHERE l.lease_id = $1",
                lease_id,
            )
            await lock_workers(self.conn, [worker_id] if checked is None else [worker_id, checked])
            lease = await self.conn.fetchrow(
                "SELECT status, check_of FROM leases "
                "WHERE lease_id = $1 AND worker_id = $2 AND check_of IS NOT NULL FOR UPDATE",
                lease_id,
                worker_id,
            )
            if lease is None:
                return None
            check = await self.conn.fetchrow(
                "SELECT check_id, status, worker_id, checker_lease_id FROM spot_checks "
                "WHERE result_lease_id = $1 FOR UPDATE",
                lease["check_of"],
            )
            if check is None:  # the checked result was dropped (its worker revoked)
                return None
            if lease["status"] == "completed" and check["checker_lease_id"] == lease_id:
                agreed = check["status"] == "agreed"
                return Verdict(agreed=agreed, flagged=[], duplicate=True)
            if lease["status"] != "active" or check["checker_lease_id"] != lease_id:
                return None
            agreed = distance <= tolerance
            await self.conn.execute(
                "UPDATE leases SET status = 'completed', ended_at = now() WHERE lease_id = $1",
                lease_id,
            )
            await self.conn.execute(
                "UPDATE spot_checks SET status = $2, distance = $3, checker_worker_id = $4, "
                "decided_at = clock_timestamp() WHERE check_id = $1",
                check["check_id"],
                "agreed" if agreed else "disagreed",
                distance,
                worker_id,
            )
            flagged: list[int] = []
            if not agreed:
                for suspect in (check["worker_id"], worker_id):
                    partners = await self.conn.fetchval(_PARTNERS, suspect)
                    if partners >= FLAG_PARTNERS and await WorkersRepo(self.conn).flag(
                        worker_id=suspect,
                        reason=f"its results disagreed with {partners} other workers' "
                        "recomputations of the same units",
                    ):
                        flagged.append(suspect)
        return Verdict(agreed=agreed, flagged=flagged)

    async def lapse_unservable(self, *, run_id: int) -> None:
        """Open checks of versions whose weights are gone can never be computed."""
        await self.conn.execute(
            "UPDATE spot_checks c SET status = 'lapsed', decided_at = now() "
            "WHERE c.run_id = $1 AND c.status = 'open' AND NOT EXISTS "
            "(SELECT 1 FROM run_states s WHERE s.run_id = c.run_id AND s.iteration = c.iteration)",
            run_id,
        )
