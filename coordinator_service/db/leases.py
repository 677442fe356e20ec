"""Work units and their leases: claims with SKIP LOCKED, heartbeats, releases, expiry.

A unit is ``pending`` (in the pool), ``leased`` (at least one active lease) or ``done``
(a result was accepted). Every path that ends a lease calls :func:`return_to_pool`, so a
unit whose last active lease ends without a result is back in the pool in the same
transaction: no image of an epoch is ever skipped.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, NamedTuple
from uuid import UUID

import asyncpg

from coordinator_service.db.models import ClaimOutcome, Lease, LeasedUnit, Run, Worker
from coordinator_service.db.runs import (
    _RUN_COLUMNS,
    UNIT_POOL,
    lock_claim_gate,
    lock_live_run_shared,
    lock_run_shared,
    return_to_pool,
)
from coordinator_service.db.spot_checks import SpotChecksRepo
from coordinator_service.db.workers import WORKER_COLUMNS
from coordinator_service.training.planner import units_per_claim

# A claim's last part: the lease of the unit its ``picked`` CTE (unit_id, epoch,
# image_indices) marked leased, for worker $2 at iteration $3, lasting $4 seconds,
# granted under the worker's claim id $5; and the worker's row stamped as heard from,
# last (the lock order: it reads ``lease``, so it runs after the rows above).
_LEASE_PICKED = """
lease AS (
    INSERT INTO leases (unit_id, worker_id, run_id, iteration, deadline, claim_id)
    SELECT unit_id, $2, $1, $3, now() + make_interval(secs => $4), $5 FROM picked
    RETURNING lease_id, unit_id, iteration, deadline, is_backup,
              extract(epoch FROM deadline - clock_timestamp())::double precision AS seconds_left
), stamped AS (
    UPDATE workers SET last_heartbeat = now()
    WHERE worker_id = $2 AND EXISTS (SELECT 1 FROM lease)
)
SELECT l.lease_id, l.unit_id, l.iteration, l.deadline, l.is_backup, l.seconds_left,
       p.epoch, p.image_indices
FROM lease l JOIN picked p USING (unit_id)
"""

_CLAIM = """
WITH picked AS (
    UPDATE work_units SET status = 'leased'
    WHERE unit_id = (
        SELECT unit_id FROM work_units
        WHERE run_id = $1 AND status = 'pending'
          AND coalesce(pinned_iteration, -1) = $6 {shard_filter}
        ORDER BY unit_id
        FOR UPDATE SKIP LOCKED
        LIMIT 1)
    RETURNING unit_id, epoch, image_indices
),""" + _LEASE_PICKED
# Both forms walk a partial index in unit order and stop at the first unlocked row.
_CLAIM_ANY = _CLAIM.format(shard_filter="")
_CLAIM_CACHED = _CLAIM.format(shard_filter="AND shard = ANY($7::integer[])")

# Dynamic local updates: up to $6 pending units of the oldest epoch with pending work,
# never leased before, in unit order, become the first of them, holding all their images
# in that order; the others are deleted. The joined unit is then leased like any other:
# recomputable from its row, returned to the pool whole if its lease ends. While a unit
# that came back waits (it keeps its size and its lease history), nothing is joined:
# the plain claim hands that one out first.
_CLAIM_JOINED = """
WITH returned AS (
    SELECT 1 FROM work_units u
    WHERE run_id = $1 AND status = 'pending' AND pinned_iteration IS NULL
      AND EXISTS (SELECT 1 FROM leases l WHERE l.unit_id = u.unit_id)
    LIMIT 1
), fresh AS (
    SELECT unit_id, image_indices FROM work_units u
    WHERE run_id = $1 AND status = 'pending' AND pinned_iteration IS NULL
      AND epoch = (SELECT min(epoch) FROM work_units
                   WHERE run_id = $1 AND status = 'pending' AND pinned_iteration IS NULL)
      AND NOT EXISTS (SELECT 1 FROM leases l WHERE l.unit_id = u.unit_id)
      AND NOT EXISTS (SELECT 1 FROM returned)
    ORDER BY unit_id
    FOR UPDATE SKIP LOCKED
    LIMIT $6
), head AS (
    SELECT min(unit_id) AS unit_id FROM fresh
), joined AS (
    SELECT array_agg(t.image ORDER BY f.unit_id, t.place) AS image_indices
    FROM fresh f, unnest(f.image_indices) WITH ORDINALITY AS t(image, place)
), dropped AS (
    DELETE FROM work_units
    WHERE unit_id IN (SELECT unit_id FROM fresh) AND unit_id <> (SELECT unit_id FROM head)
), picked AS (
    UPDATE work_units SET status = 'leased', image_indices = (SELECT image_indices FROM joined)
    WHERE unit_id = (SELECT unit_id FROM head)
    RETURNING unit_id, epoch, image_indices
),""" + _LEASE_PICKED

# Results of the current iteration accepted and not yet consumed, plus first leases still
# out for it: what the next step is already waiting for.
_RESULTS_IN_OR_OUT = """
SELECT (SELECT count(*) FROM results
        WHERE run_id = $1 AND iteration = $2 AND consumed_at IS NULL)
     + (SELECT count(*) FROM leases
        WHERE run_id = $1 AND iteration = $2 AND status = 'active' AND NOT is_backup)
"""

# The oldest outstanding unit with a single active lease (not this worker's) that has
# been out longer than backup_after: a straggler worth computing twice.
_PICK_BACKUP = """
SELECT u.unit_id, u.epoch, u.image_indices FROM work_units u
WHERE u.run_id = $1 AND u.status = 'leased'
  AND (SELECT count(*) FROM leases l WHERE l.unit_id = u.unit_id AND l.status = 'active') = 1
  AND NOT EXISTS (SELECT 1 FROM leases l
                  WHERE l.unit_id = u.unit_id AND l.status = 'active' AND l.worker_id = $2)
  AND (SELECT min(l.created_at) FROM leases l
       WHERE l.unit_id = u.unit_id AND l.status = 'active') < now() - make_interval(secs => $3)
ORDER BY (SELECT min(l.created_at) FROM leases l
          WHERE l.unit_id = u.unit_id AND l.status = 'active')
LIMIT 1
FOR UPDATE OF u SKIP LOCKED
"""


# The live run $1 as a claim sees it: its row, the iteration whose pinned units are
# the pool (or -1), the active lease worker $2's claim id $3 was already granted, and
# the worker's measured speed (images a second; NULL before its first result).
_LIVE_RUN = f"""
SELECT {_RUN_COLUMNS}, {UNIT_POOL} AS pool,
       (SELECT lease_id FROM leases
        WHERE worker_id = $2 AND claim_id = $3 AND status = 'active') AS granted,
       (SELECT images_per_second FROM workers WHERE worker_id = $2) AS speed
FROM runs WHERE run_id = $1 AND status IN ('active', 'paused')
"""

# A granted lease $1, as a claim answers it.
_GRANTED = """
SELECT l.lease_id, l.unit_id, l.iteration, l.deadline, l.is_backup,
       extract(epoch FROM l.deadline - clock_timestamp())::double precision AS seconds_left,
       u.epoch, u.image_indices
FROM leases l JOIN work_units u USING (unit_id)
WHERE l.lease_id = $1
"""


class _LeaseArgs(NamedTuple):
    """What every lease a claim grants is made of: the parameters $1 to $5 of the
    claim statements, in this order."""

    run_id: int
    worker_id: int
    iteration: int
    lease_seconds: float
    claim_id: UUID | None


# Claims and heartbeats commit without waiting for the write-ahead log to reach the disk
# (about 4 ms of a claim's 11 on this machine's disk). Only a crash of PostgreSQL itself
# could lose such a commit, and at worst a lease: a worker's result for it is then
# refused and its images go back to the pool. Accepting a result and publishing a
# version wait for the disk, and their flush carries every earlier commit with it, so
# nothing they depend on can be lost.
# The heartbeat, the most frequent request, is one statement and one round trip: it
# finds the worker by its token, and only if the worker is not revoked extends its
# leases and stamps its row, committing without waiting for the disk (set_config's
# ``true``: for this statement's own transaction, which ends at its Sync). Leases before
# the worker row (the lock order in docs/coordinator.md): PostgreSQL runs a WITH's
# data-modifying parts in no fixed order (and always to the end), but the worker row's
# UPDATE reads `extended` in its WHERE, so it cannot reach the row before every lease
# is extended.
_HEARTBEAT = f"""
WITH me AS (
    SELECT {WORKER_COLUMNS} FROM workers WHERE token_hash = $1
), extended AS (
    UPDATE leases l SET deadline = now() + make_interval(
        secs => (r.config->>'lease_seconds')::double precision)
    FROM runs r, me
    WHERE l.worker_id = me.worker_id AND me.revoked_at IS NULL AND l.status = 'active'
      AND r.run_id = l.run_id AND l.deadline >= now()
    RETURNING l.deadline,
              extract(epoch FROM l.deadline - clock_timestamp())::double precision AS seconds_left
), stamped AS (
    UPDATE workers w SET last_heartbeat = now() FROM me
    WHERE w.worker_id = me.worker_id AND me.revoked_at IS NULL
      AND (SELECT count(*) FROM extended) >= 0
)
SELECT me.*, e.*, set_config('synchronous_commit', 'off', true)
FROM me, (SELECT count(*)::integer AS leases_extended, max(deadline) AS lease_deadline,
                 max(seconds_left) AS lease_seconds_left FROM extended) e
"""


class Heartbeat(NamedTuple):
    """What a heartbeat did: for whom (refused if revoked; then nothing changed), how
    many leases it extended, the latest new deadline, and its seconds left by the
    database's clock (what the worker paces by, so that its own clock never needs to
    agree with this one)."""

    worker: Worker
    leases_extended: int
    lease_deadline: datetime | None
    lease_seconds_left: float | None


class LeasesRepo:
    """Claims, heartbeats, releases and expiry over ``work_units`` and ``leases``."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    async def claim(
        self,
        *,
        worker_id: int,
        cached_shards: Sequence[int],
        claim_id: UUID | None = None,
        backup: bool = True,
    ) -> ClaimOutcome:
        """Lease a pending unit of the live run, else a backup copy of a straggler, else
        a spot check of another worker's result. A claim repeating ``claim_id`` gets the
        active lease that id was granted, if any: its first answer was lost."""
        try:
            return await self._claim(worker_id, cached_shards, claim_id, backup)
        except asyncpg.UniqueViolationError:
            # The same claim id is being answered right now in another request (a repeat
            # sent while the original still ran): the lease it grants is the answer.
            return await self._claim(worker_id, cached_shards, claim_id, backup)

    async def _claim(
        self, worker_id: int, cached_shards: Sequence[int], claim_id: UUID | None, backup: bool
    ) -> ClaimOutcome:
        async with self.conn.transaction():
            # The run's shared lock: a step waits for claims in flight and claims wait for
            # the step, so a lease is always for the current iteration. The run is read
            # again after the lock, when a step that was committing is visible.
            run_id = await lock_live_run_shared(self.conn, wait_for_disk=False)
            record = None
            if run_id is not None:
                record = await self.conn.fetchrow(_LIVE_RUN, run_id, worker_id, claim_id)
            if record is None:
                latest = await self.conn.fetchval("SELECT max(run_id) FROM runs")
                return ClaimOutcome(status="finished" if latest else "no_run")
            run = Run.of(record)
            if record["granted"] is not None:  # a repeat: the lease its first answer held
                granted = await self.conn.fetchrow(_GRANTED, record["granted"])
                return ClaimOutcome(status="leased", run=run, unit=LeasedUnit.of(granted))
            if run.status == "paused":
                return ClaimOutcome(status="nothing", run=run)
            pool, speed = record["pool"], record["speed"]
            args = _LeaseArgs(
                run.run_id, worker_id, run.iteration, run.config.lease_seconds, claim_id
            )
            row = await self._claim_for_step(run, args, cached_shards, pool, speed)
            if row is None and await self.expire(run_id=run.run_id):
                row = await self._claim_for_step(run, args, cached_shards, pool, speed)
            if row is None:
                if backup:
                    row = await self._claim_backup(run, args)
                if row is None:  # nothing this step needs: recompute a result to check it
                    row = await SpotChecksRepo(self.conn).lease(run, worker_id, claim_id)
                if row is None:
                    return ClaimOutcome(status="nothing", run=run)
                # (A pending unit's lease stamps the worker row in its own statement.)
                await self.conn.execute(
                    "UPDATE workers SET last_heartbeat = now() WHERE worker_id = $1", worker_id
                )
        return ClaimOutcome(status="leased", run=run, unit=LeasedUnit.of(row))

    async def _claim_for_step(
        self,
        run: Run,
        args: _LeaseArgs,
        cached_shards: Sequence[int],
        pool: int,
        speed: float | None,
    ) -> asyncpg.Record | None:
        """A pending unit, unless the results this step needs are already in or out;
        from a shard the worker caches if there is one; with dynamic local updates, as
        many fresh units joined into one as the worker's ``speed`` (images a second) fits.

        A unit leased beyond the step's need would be computed on weights about to be
        replaced and refused as stale: better the worker waits for the new weights (or
        takes a backup copy of a straggler). A version of pinned units needs every one of
        them. An asynchronous run has no such step: any pending unit, against the newest
        weights.
        """
        if pool < 0 and run.config.staleness_bound() == 0:  # no gate without a barrier
            await lock_claim_gate(self.conn, run.run_id)  # count and lease as one
            in_or_out = await self.conn.fetchval(_RESULTS_IN_OR_OUT, run.run_id, run.iteration)
            if in_or_out >= run.config.units_per_step:
                return None
        if run.config.unit_seconds is not None and pool < 0:
            joins = units_per_claim(run.config, speed)
            if joins > 1:
                row = await self.conn.fetchrow(_CLAIM_JOINED, *args, joins)
                if row is not None:
                    return row
        if cached_shards:
            row = await self.conn.fetchrow(_CLAIM_CACHED, *args, pool, list(cached_shards))
            if row is not None:
                return row
        return await self.conn.fetchrow(_CLAIM_ANY, *args, pool)

    async def _claim_backup(self, run: Run, args: _LeaseArgs) -> dict[str, Any] | None:
        unit = await self.conn.fetchrow(
            _PICK_BACKUP, run.run_id, args.worker_id, run.config.backup_after_seconds
        )
        if unit is None:
            return None
        lease = await self.conn.fetchrow(
            "INSERT INTO leases (unit_id, worker_id, run_id, iteration, deadline, claim_id, "
            "is_backup) VALUES ($1, $3, $2, $4, now() + make_interval(secs => $5), $6, true) "
            "RETURNING lease_id, unit_id, iteration, deadline, is_backup, "
            "extract(epoch FROM deadline - clock_timestamp())::double precision AS seconds_left",
            unit["unit_id"],
            *args,
        )
        return {**dict(lease), "epoch": unit["epoch"], "image_indices": unit["image_indices"]}

    async def expire(self, *, run_id: int) -> int:
        """End leases past their deadline; their units go back to the pool. Returns how many."""
        async with self.conn.transaction():
            await lock_run_shared(self.conn, run_id)
            rows = await self.conn.fetch(
                "UPDATE leases SET status = 'expired', ended_at = now() WHERE lease_id IN "
                "(SELECT lease_id FROM leases WHERE run_id = $1 AND status = 'active' "
                " AND deadline < now() FOR UPDATE SKIP LOCKED) RETURNING unit_id",
                run_id,
            )
            await return_to_pool(self.conn, [r["unit_id"] for r in rows])
        return len(rows)

    async def heartbeat(self, *, token_hash: str) -> Heartbeat | None:
        """Extend every active lease of the worker holding this token by its run's lease
        time (None: no such worker)."""
        row = await self.conn.fetchrow(_HEARTBEAT, token_hash)
        if row is None:
            return None
        return Heartbeat(Worker.of(row), row["leases_extended"], row["lease_deadline"],
                         row["lease_seconds_left"])  # fmt: skip

    async def get(self, *, lease_id: UUID) -> Lease | None:
        record = await self.conn.fetchrow(
            "SELECT l.lease_id, l.unit_id, l.worker_id, l.run_id, l.iteration, l.status, "
            "l.check_of, cardinality(u.image_indices) AS num_images "
            "FROM leases l JOIN work_units u USING (unit_id) WHERE l.lease_id = $1",
            lease_id,
        )
        return Lease.of(record) if record else None

    async def unit_exists(self, *, unit_id: int) -> bool:
        return bool(
            await self.conn.fetchval("SELECT 1 FROM work_units WHERE unit_id = $1", unit_id)
        )

    async def end_stale(self, *, lease_id: UUID) -> None:
        """End a lease whose result came too many versions late (an asynchronous run's):
        its images go back to the pool for a worker with newer weights."""
        async with self.conn.transaction():
            run_id = await self.conn.fetchval(
                "SELECT run_id FROM leases WHERE lease_id = $1", lease_id
            )
            if run_id is None:
                return
            await lock_run_shared(self.conn, run_id)
            row = await self.conn.fetchrow(
                "UPDATE leases SET status = 'stale', ended_at = now() "
                "WHERE lease_id = $1 AND status = 'active' RETURNING unit_id",
                lease_id,
            )
            if row is not None:
                await return_to_pool(self.conn, [row["unit_id"]])

    async def release(self, *, lease_id: UUID, worker_id: int, unit_id: int) -> bool:
        """Give an active lease back; False if it was not this worker's active lease."""
        async with self.conn.transaction():
            run_id = await self.conn.fetchval(
                "SELECT run_id FROM leases WHERE lease_id = $1", lease_id
            )
            if run_id is None:
                return False
            await lock_run_shared(self.conn, run_id)
            row = await self.conn.fetchrow(
                "UPDATE leases SET status = 'released', ended_at = now() "
                "WHERE lease_id = $1 AND worker_id = $2 AND unit_id = $3 AND status = 'active' "
                "RETURNING unit_id",
                lease_id,
                worker_id,
                unit_id,
            )
            if row is None:
                return False
            await return_to_pool(self.conn, [unit_id])
        return True
