"""Per-iteration state (W_t, Adam), the step transaction, history and sample grids.

:meth:`StatesRepo.commit_step` is the one place the iteration advances. Everything a
step changes (new state row, history row, consumed results, worker counters, stale
leases back to the pool, the next epoch's units, pruning) commits together or not at
all, so a coordinator killed at any moment restarts on a consistent iteration.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from uuid import UUID

import asyncpg
from pydantic import BaseModel

from coordinator_service.db.large_rows import copy_row
from coordinator_service.db.models import StoredCheckpoint, StoredWeights
from coordinator_service.db.runs import (
    PlannedUnit,
    insert_state,
    insert_units,
    lock_run_exclusive,
    return_to_pool,
)
from coordinator_service.db.spot_checks import SpotChecksRepo
from coordinator_service.notifications import VERSIONS, notify
from shared.protocol import HistoryEntry


class StepConflict(RuntimeError):
    """The run moved or new results arrived since the step was computed: recompute."""


class StepWrite(BaseModel):
    """Everything the aggregator computed for the step from ``iteration`` to ``iteration + 1``."""

    run_id: int
    iteration: int
    result_ids: list[UUID]
    weights_etag: str  # the weights themselves are stored after the commit
    history: HistoryEntry
    # The next version's units are this version's again (a synchronous D phase: its
    # G phase needs the same images' noise).
    repeat_units: bool = False
    versions_per_iteration: int = 1
    # A barrier: leases still out were for this version and end with it. Without one
    # (an asynchronous run) they go on, and their results fold into a later version,
    # until they fall more than ``max_staleness`` versions behind.
    ends_leases: bool = True
    max_staleness: int = 0


class StepOutcome(BaseModel):
    iteration: int
    epoch: int
    status: str


class StatesRepo:
    """Queries on ``run_states``, ``history`` and ``samples``; the step transaction."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    async def weights(self, *, run_id: int, iteration: int) -> StoredWeights | None:
        record = await self.conn.fetchrow(
            "SELECT iteration, weights, weights_etag FROM run_states "
            "WHERE run_id = $1 AND iteration = $2",
            run_id,
            iteration,
        )
        return StoredWeights.of(record) if record else None

    async def unwritten_weights(self) -> list[tuple[int, int]]:
        """(run, newest version) of every run with a published version whose weights are
        not stored yet: the aggregator's process died between its commit and that write."""
        records = await self.conn.fetch(
            "SELECT run_id, max(iteration) AS iteration FROM run_states "
            "WHERE weights IS NULL GROUP BY run_id ORDER BY run_id"
        )
        return [(r["run_id"], r["iteration"]) for r in records]

    async def etags(self, *, run_id: int, since: int) -> dict[int, tuple[str, bool]]:
        """Each version after ``since``: the ETag its step committed, and whether its
        weights are stored (not the weights themselves: the replay only compares)."""
        records = await self.conn.fetch(
            "SELECT iteration, weights_etag, weights IS NOT NULL AS stored FROM run_states "
            "WHERE run_id = $1 AND iteration > $2",
            run_id,
            since,
        )
        return {r["iteration"]: (r["weights_etag"], r["stored"]) for r in records}

    async def add_weights(self, *, run_id: int, iteration: int, weights: bytes) -> None:
        """Store a published version's weights, once."""
        async with self.conn.transaction():
            await self._fill("weights", run_id, iteration, weights, once=True)

    async def _fill(
        self, column: str, run_id: int, iteration: int, value: bytes, *, once: bool = False
    ) -> bool:
        """Set a blob column of a version's row (inside the caller's transaction); False
        if no row changed (the row is gone, or ``once`` and it is set already).

        Tens of megabytes go in by a streamed COPY into a temporary table: as an UPDATE's
        parameter they would stop the event loop, and every request, for 0.1-0.4 s
        (``copy_row``)."""
        await self.conn.execute(f"CREATE TEMPORARY TABLE new_{column} (v bytea) ON COMMIT DROP")
        await copy_row(self.conn, f"new_{column}", {"v": value})
        done = await self.conn.execute(
            f"UPDATE run_states SET {column} = (SELECT v FROM new_{column}) "
            f"WHERE run_id = $1 AND iteration = $2{f' AND {column} IS NULL' if once else ''}",
            run_id,
            iteration,
        )
        return bool(done == "UPDATE 1")

    async def latest_checkpoint(self, *, run_id: int, at_most: int) -> StoredCheckpoint | None:
        """The newest version up to ``at_most`` stored with its Adam state."""
        record = await self.conn.fetchrow(
            "SELECT iteration, checkpoint FROM run_states WHERE run_id = $1 "
            "AND iteration <= $2 AND checkpoint IS NOT NULL ORDER BY iteration DESC LIMIT 1",
            run_id,
            at_most,
        )
        return StoredCheckpoint.of(record) if record else None

    async def add_checkpoint(
        self, *, run_id: int, iteration: int, checkpoint: bytes, keep_last: int, keep_every: int
    ) -> bool:
        """Store a committed version's Adam state beside its weights, and prune what the
        replay no longer starts from; False if the version's row is gone.

        Bounded storage: the last ``keep_last`` states, every ``keep_every``-th for good,
        and the newest with Adam state (the replay starts there). A version's row can go
        only once a later checkpoint is stored, so the pruning is done here, outside the
        step transaction and its run lock.
        """
        async with self.conn.transaction():
            if not await self._fill("checkpoint", run_id, iteration, checkpoint):
                return False
            await self.conn.execute(
                "DELETE FROM run_states WHERE run_id = $1 AND iteration < $2 "
                "AND iteration % $4 <> 0 AND iteration <= "
                "(SELECT max(iteration) FROM run_states WHERE run_id = $1) - $3",
                run_id,
                iteration,
                keep_last,
                keep_every,
            )
            await SpotChecksRepo(self.conn).lapse_unservable(run_id=run_id)
        return True

    async def add_sample(self, *, run_id: int, iteration: int, png: bytes) -> None:
        await self.conn.execute(
            "INSERT INTO samples (run_id, iteration, png) VALUES ($1, $2, $3) "
            "ON CONFLICT DO NOTHING",
            run_id,
            iteration,
            png,
        )

    async def stored_iterations(self, *, run_id: int) -> list[int]:
        rows = await self.conn.fetch(
            "SELECT iteration FROM run_states WHERE run_id = $1 AND weights IS NOT NULL "
            "ORDER BY iteration",
            run_id,
        )
        return [r["iteration"] for r in rows]

    async def sample_png(self, *, run_id: int, iteration: int) -> bytes | None:
        return await self.conn.fetchval(
            "SELECT png FROM samples WHERE run_id = $1 AND iteration = $2", run_id, iteration
        )

    async def sample_iterations(self, *, run_id: int) -> list[int]:
        rows = await self.conn.fetch(
            "SELECT iteration FROM samples WHERE run_id = $1 ORDER BY iteration", run_id
        )
        return [r["iteration"] for r in rows]

    async def history(
        self, *, run_id: int, since: int = 0, limit: int = 10_000
    ) -> list[HistoryEntry]:
        records = await self.conn.fetch(
            "SELECT iteration, epoch, g_loss, d_loss, d_real_accuracy, d_fake_accuracy, "
            "num_results, num_workers, num_images, step_seconds, staleness, created_at "
            "FROM history "
            "WHERE run_id = $1 AND iteration >= $2 ORDER BY iteration LIMIT $3",
            run_id,
            since,
            limit,
        )
        return [HistoryEntry.model_validate(dict(r)) for r in records]

    @contextlib.asynccontextmanager
    async def locked_run(self, *, run_id: int) -> AsyncIterator[None]:
        """A transaction holding the run's lock exclusively: no claim or result gets in
        until it ends. The aggregator's fallback when results keep arriving during a step."""
        async with self.conn.transaction():
            await lock_run_exclusive(self.conn, run_id)
            yield

    async def commit_step(
        self,
        *,
        step: StepWrite,
        plan_epoch: Callable[[int], Sequence[PlannedUnit]],
        max_epochs: int | None,
        max_iterations: int | None,
    ) -> StepOutcome:
        """Advance the run from ``step.iteration`` to the next in one transaction."""
        conn = self.conn
        new_iteration = step.iteration + 1
        async with conn.transaction():
            # The new state's row first, before the run lock, with its ETag and nothing
            # else: its weights and, when due, its Adam state are written after the
            # commit (Aggregator._store_extras), so that neither delays the publication
            # (the weights' 25 MB were most of it on a slower machine); until they are,
            # the version's results, stored with it, replay it.
            try:
                await insert_state(
                    conn, run_id=step.run_id, iteration=new_iteration, weights=None,
                    weights_etag=step.weights_etag, checkpoint=None,
                )  # fmt: skip
            except asyncpg.UniqueViolationError:
                raise StepConflict("the run is past this iteration") from None
            await lock_run_exclusive(conn, step.run_id)
            run = await conn.fetchrow(
                "SELECT iteration, epoch, status FROM runs WHERE run_id = $1 FOR UPDATE",
                step.run_id,
            )
            if run is None or run["status"] != "active" or run["iteration"] != step.iteration:
                raise StepConflict("the run is no longer at this iteration")
            open_ids = {r["lease_id"] for r in await conn.fetch(
                "SELECT lease_id FROM results WHERE run_id = $1 AND consumed_at IS NULL",
                step.run_id,
            )}  # fmt: skip
            # With a barrier a step consumes exactly what is accepted for its version.
            # Without one, results accepted while this fold computed go into the next
            # fold, one version older: recomputing this one under the exclusive lock for
            # them held every claim and upload for a whole fold.
            folded = set(step.result_ids)
            later = open_ids - folded
            if not folded <= open_ids or (later and step.ends_leases):
                raise StepConflict("results arrived or were dropped while the step was computed")
            h = step.history
            await conn.execute(
                "INSERT INTO history (run_id, iteration, epoch, g_loss, d_loss, d_real_accuracy, "
                "d_fake_accuracy, num_results, num_workers, num_images, step_seconds, staleness, "
                "created_at) VALUES "
                "($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, clock_timestamp())",
                step.run_id, step.iteration, run["epoch"], h.g_loss, h.d_loss,
                h.d_real_accuracy, h.d_fake_accuracy, h.num_results, h.num_workers,
                h.num_images, h.step_seconds, h.staleness,
            )  # fmt: skip
            # Leases whose results could not be accepted any more end now, and their
            # images go back into the epoch right away: with a barrier every lease of W_t,
            # else those more than ``max_staleness`` versions behind W_t+1. (A spot
            # check's lease is for its own version and stays.)
            ended = await conn.fetch(
                "UPDATE leases SET status = 'stale', ended_at = now() "
                "WHERE run_id = $1 AND status = 'active' AND check_of IS NULL "
                "AND ($2 OR iteration < $3) RETURNING unit_id",
                step.run_id,
                step.ends_leases,
                step.iteration + 1 - step.max_staleness,
            )
            await return_to_pool(conn, [r["unit_id"] for r in ended])
            await self._pin_units(step, new_iteration)
            # The results are in W_t+1 now. Their rows stay (a repeat upload is answered
            # from them); their bodies are the log that replays this version until a
            # checkpoint covers it (ResultsRepo.drop_replayed_bodies, after this commits).
            await conn.execute(
                "UPDATE results SET consumed_at = now(), folded_version = $2 "
                "WHERE lease_id = ANY($1::uuid[])",
                step.result_ids,
                step.iteration,
            )
            epoch = run["epoch"]
            finished = (
                max_iterations is not None
                and new_iteration >= max_iterations * step.versions_per_iteration
            )
            # Every unit is in (with a barrier older epochs always are); without a
            # barrier the next epoch is planned as soon as none of this one is left to
            # hand out, so that nobody idles while its last units compute (their images
            # still count once: a unit is done once).
            # (Asked of the pending and leased indexes: "status <> 'done'" scanned the
            # table past every unit done so far, 1.3 ms at 30,000, inside the lock.)
            all_done = not await conn.fetchval(
                "SELECT EXISTS (SELECT 1 FROM work_units WHERE run_id = $1 AND status = 'pending') "
                "OR EXISTS (SELECT 1 FROM work_units WHERE run_id = $1 AND status = 'leased')",
                step.run_id,
            )
            handed_out = all_done or not step.ends_leases and not await conn.fetchval(
                "SELECT EXISTS (SELECT 1 FROM work_units "
                "WHERE run_id = $1 AND epoch = $2 AND status = 'pending')",
                step.run_id,
                epoch,
            )
            last = max_epochs is not None and epoch + 1 >= max_epochs
            finished = finished or (last and all_done)
            if finished and later:  # there is no next fold for them
                raise StepConflict("results arrived while the run's last fold was computed")
            if handed_out and not last and not finished:
                epoch += 1
                await insert_units(conn, run_id=step.run_id, epoch=epoch, units=plan_epoch(epoch))
            status = "finished" if finished else "active"
            if finished and not step.ends_leases:
                # The last fold of a run without a barrier: what is still being computed
                # can count nowhere now, so it is not accepted either.
                await conn.execute(
                    "UPDATE leases SET status = 'stale', ended_at = now() "
                    "WHERE run_id = $1 AND status = 'active' AND check_of IS NULL",
                    step.run_id,
                )
            await conn.execute(
                "UPDATE runs SET iteration = $2, epoch = $3, status = $4, "
                "iteration_started_at = now(), "
                "finished_at = CASE WHEN $4 = 'finished' THEN now() END WHERE run_id = $1",
                step.run_id,
                new_iteration,
                epoch,
                status,
            )
            await SpotChecksRepo(conn).lapse_unservable(run_id=step.run_id)
            # Worker rows last, as everywhere (the lock order in docs/coordinator.md): a
            # heartbeat holds its leases and then wants its worker row.
            await conn.execute(
                "UPDATE workers w SET total_images = w.total_images + s.images, "
                "total_work_units = w.total_work_units + s.units FROM "
                "(SELECT worker_id, sum(num_samples) AS images, count(*) AS units FROM results "
                " WHERE lease_id = ANY($1::uuid[]) GROUP BY worker_id) s "
                "WHERE w.worker_id = s.worker_id",
                step.result_ids,
            )
            await notify(conn, VERSIONS)  # long-polling claims, in every process
        return StepOutcome(iteration=new_iteration, epoch=epoch, status=status)

    async def _pin_units(self, step: StepWrite, new_iteration: int) -> None:
        """Pinned units of the version just folded are over (repeats its fold did without,
        e.g. after a step timeout, are closed); if the next version repeats this one's
        units, copy the consumed ones for it, in unit order."""
        await self.conn.execute(
            "UPDATE work_units SET status = 'done' WHERE run_id = $1 AND pinned_iteration = $2 "
            "AND status <> 'done'",
            step.run_id,
            step.iteration,
        )
        if step.repeat_units:
            await self.conn.execute(
                "INSERT INTO work_units (run_id, epoch, shard, image_indices, pinned_iteration) "
                "SELECT u.run_id, u.epoch, u.shard, u.image_indices, $3::integer "
                "FROM work_units u JOIN results r USING (unit_id) "
                "WHERE u.run_id = $1 AND r.lease_id = ANY($2::uuid[]) ORDER BY u.unit_id",
                step.run_id,
                step.result_ids,
                new_iteration,
            )
