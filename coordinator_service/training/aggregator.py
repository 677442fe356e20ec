"""The aggregator: waits for enough results, takes the step, publishes W_t+1.

One per database: the loop first takes a Postgres advisory lock on a connection of its
own, so with several API replicas exactly one steps (if its process dies, the lock goes
with its connection and another replica takes over). The step rule (DESIGN.md) is: step
when ``units_per_step`` results of iteration t are accepted, or nothing is pending and
every leased unit of t is in, or ``step_timeout`` has passed with at least one result.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from uuid import UUID

import asyncpg

from coordinator_service.db.leases import LeasesRepo
from coordinator_service.db.models import Run, StepReadiness
from coordinator_service.db.pool import connect
from coordinator_service.db.results import ResultsRepo
from coordinator_service.db.runs import PlannedUnit, RunsRepo
from coordinator_service.db.states import StatesRepo, StepConflict, StepWrite
from coordinator_service.metrics import Metrics
from coordinator_service.settings import Settings
from coordinator_service.training import engine
from coordinator_service.training.planner import plan_epoch
from coordinator_service.weights_cache import CachedWeights, WeightsCache
from shared.protocol import HistoryEntry
from shared.unit_result import UnitResult

log = logging.getLogger(__name__)

ADVISORY_LOCK_KEY = 0x47414E4E_41474752  # "GANNAGGR": one aggregator per database
EXTRAS_GRACE_SECONDS = 10.0  # for the last version's grid and Adam state at shutdown
RETRY_SECONDS = 1.0  # after an error; doubled while the same error repeats ...
MAX_RETRY_SECONDS = 30.0  # ... up to this


@dataclass(frozen=True)
class Extras:
    """What is stored for a committed version after it is published."""

    run: Run  # as it was before the fold
    state: engine.TrainingState  # the version's weights and optimizer state
    weights: bytes  # the served weights, as the step's ETag names them
    sample: bool  # its grid for the dashboard
    snapshot: bool  # its Adam state (a checkpoint the replay can start from)


def should_step(run: Run, ready: StepReadiness, now: datetime) -> bool:
    """The step rule; pure so it can be tested without a database."""
    if run.status != "active" or ready.accepted == 0:
        return False
    if ready.accepted >= run.config.units_per_step:
        return True
    if not ready.any_pending and not ready.any_leased:
        return True
    return (now - run.iteration_started_at).total_seconds() >= run.config.step_timeout


class Aggregator:
    """The background task started by the app's lifespan."""

    def __init__(
        self,
        *,
        pool: asyncpg.Pool,
        settings: Settings,
        database_url: str,
        cache: WeightsCache,
        metrics: Metrics,
    ) -> None:
        self.pool = pool
        self.settings = settings
        self.database_url = database_url
        self.cache = cache
        self.metrics = metrics
        self.wake = asyncio.Event()  # set on every accepted result (notifications.RESULTS)
        self._state: engine.TrainingState | None = None
        # Open results already decoded (by the upload or a step attempt), until folded.
        self._decoded: dict[UUID, UnitResult] = {}
        self._decoded_for: int | None = None  # the run they belong to
        self._last_sample: float | None = None  # monotonic time of the last grid drawn
        self._last_snapshot: float | None = None  # ... and of the last Adam state written
        self._extras: asyncio.Task[None] | None = None  # a version's extras being stored
        # The units of the epoch after the live one, planned once per epoch in a thread:
        # the step that rolls the epoch over inserts them under the run lock, and
        # planning a CelebA-sized epoch there took 50 ms of the event loop (272 ms for
        # a million images) while every claim waited.
        self._next_epoch: tuple[tuple[int, int], list[PlannedUnit]] | None = None
        self.problem: str | None = None  # the error that stops this aggregator, if any

    async def run_forever(self) -> None:
        """Hold leadership and tick; on any error, start over after a pause.

        An error that repeats (a stored state holding Inf, results gone) is not a blip:
        it is written on the run, where /healthz and the dashboard show it, logged once
        and retried ever less often, instead of a traceback every second.
        """
        delay = RETRY_SECONDS
        while True:
            try:
                await self._lead()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                problem = f"{type(exc).__name__}: {exc}"
                if problem != self.problem:
                    log.exception("aggregator failed; retrying")
                    delay = RETRY_SECONDS
                else:
                    delay = min(2 * delay, MAX_RETRY_SECONDS)
                self.problem = problem
                self._state = None
                await self._report(problem)
                await asyncio.sleep(delay)

    async def _report(self, problem: str | None) -> None:
        """Write (or clear) the live run's problem; a database that is down cannot be told."""
        try:
            async with self.pool.acquire() as conn:
                run = await RunsRepo(conn).live()
                if run is not None:
                    await RunsRepo(conn).report_problem(run_id=run.run_id, problem=problem)
        except (OSError, asyncpg.PostgresError) as exc:
            log.warning("could not record the aggregator's state on the run: %s", exc)

    def remember(self, *, run_id: int, lease_id: UUID, result: UnitResult) -> None:
        """A result this process just accepted, already decoded: the step need not decode
        it again (the upload path validates by decoding, so this halves the decode work)."""
        if self._decoded_for != run_id:
            self._decoded, self._decoded_for = {}, run_id
        self._decoded[lease_id] = result

    def _sample_due(self, version: int, versions_per_iteration: int) -> bool:
        """A grid at the end of every ``sample_every``-th iteration, and at the end of any
        iteration once ``sample_seconds`` passed since the last grid (the first iteration
        always gets one), so a class sees pictures within a minute on any schedule."""
        if version % versions_per_iteration:
            return False  # mid-iteration: G has not moved yet
        iteration = version // versions_per_iteration
        every, seconds = self.settings.sample_every, self.settings.sample_seconds
        if every > 0 and iteration % every == 0:
            return True
        if seconds <= 0:
            return False
        last = self._last_sample
        return last is None or time.monotonic() - last >= seconds

    async def _lead(self) -> None:
        conn = await connect(self.database_url)
        try:
            while not await conn.fetchval("SELECT pg_try_advisory_lock($1)", ADVISORY_LOCK_KEY):
                await asyncio.sleep(1.0)
            log.info("aggregator holds the advisory lock")
            await self._write_unwritten()
            while True:
                await self.tick()
                try:
                    await asyncio.wait_for(
                        self.wake.wait(), timeout=self.settings.aggregator_tick_seconds
                    )
                except asyncio.TimeoutError:
                    pass
                self.wake.clear()
                await conn.execute("SELECT 1")  # notice a lost connection (and lock) early
        finally:
            extras, self._extras = self._extras, None
            if extras is not None:  # a little while to finish, then given up on
                await asyncio.wait([extras], timeout=EXTRAS_GRACE_SECONDS)
                if not extras.done():
                    extras.cancel()  # its version's results still replay it
                elif not extras.cancelled() and (failed := extras.exception()) is not None:
                    log.warning("storing a published version failed; weights not stored are "
                                "rebuilt from its results by the next aggregator: %s",
                                failed)  # fmt: skip
            await conn.close(timeout=2)

    async def tick(self) -> bool:
        """Expire leases and step if the rule says so; True if a step was taken."""
        async with self.pool.acquire() as conn:
            run = await RunsRepo(conn).live()
            if run is None or run.status != "active":
                return False
            await LeasesRepo(conn).expire(run_id=run.run_id)
            ready = await RunsRepo(conn).readiness(run_id=run.run_id)
        if not should_step(run, ready, datetime.now(timezone.utc)):
            return False
        try:
            await self._step(run)
        except StepConflict as exc:  # the run moved (stopped, paused) under us
            log.info("step of iteration %d abandoned: %s", run.iteration, exc)
            return False
        if self.problem is not None:
            log.info("run %d advances again", run.run_id)
            self.problem = None
            await self._report(None)
        return True

    async def _training_state(self, run: Run) -> engine.TrainingState:
        """W_t and Adam at the run's version: kept in memory, or rebuilt (``_rebuild``)."""
        state = self._state
        if state is not None and (state.run_id, state.iteration) == (run.run_id, run.iteration):
            return state
        await self._settle_extras()  # it may drop bodies this replay would read
        self._state = await self._rebuild(run, run.iteration)
        self._last_snapshot = time.monotonic()
        return self._state

    async def _write_unwritten(self) -> None:
        """Store the weights of versions published but never stored (a coordinator killed
        between a step's commit and their write), in any run, live or not: until then
        only the process that folded them could serve them."""
        async with self.pool.acquire() as conn:
            unwritten = await StatesRepo(conn).unwritten_weights()
        for run_id, newest in unwritten:
            async with self.pool.acquire() as conn:
                run = await RunsRepo(conn).get(run_id=run_id)
            assert run is not None  # its rows go with it
            state = await self._rebuild(run, newest)
            if run.status in ("active", "paused") and run.iteration == newest:
                self._state, self._last_snapshot = state, time.monotonic()

    async def _rebuild(self, run: Run, version: int) -> engine.TrainingState:
        """W and Adam at ``version`` of ``run``: its newest checkpoint up to there, and the
        versions since folded again from their stored results, in their order. Every
        version so rebuilt must match the ETag its step committed (never seen; going on
        would serve weights the class did not train), and one whose weights are not
        stored yet gets them now."""
        async with self.pool.acquire() as conn:
            states = StatesRepo(conn)
            stored = await states.latest_checkpoint(run_id=run.run_id, at_most=version)
            if stored is None:
                raise RuntimeError(f"run {run.run_id} has no checkpoint up to {version}")
            state = await asyncio.to_thread(
                engine.load_checkpoint, run.run_id, run.config, stored.checkpoint
            )
            committed = await states.etags(run_id=run.run_id, since=stored.iteration)
            written = []
            for folded in range(stored.iteration, version):
                found = await ResultsRepo(conn).folded_into(run_id=run.run_id, version=folded)
                bodies = [body for body in found if body is not None]
                if not bodies or len(bodies) != len(found):
                    raise RuntimeError(f"run {run.run_id}: the results of {folded} are gone")
                state = await asyncio.to_thread(self._replay, state, bodies, run)
                etag, weights_stored = committed.get(state.iteration, ("", False))
                if weights_stored and state.iteration < version:
                    continue  # compared at the end, and once written below
                encoded = await asyncio.to_thread(engine.encode_state, state)
                if encoded.weights_etag != etag:
                    raise RuntimeError(f"run {run.run_id}: replay to {state.iteration} differs")
                if not weights_stored:
                    await states.add_weights(
                        run_id=run.run_id, iteration=state.iteration, weights=encoded.weights
                    )
                    written.append(state.iteration)
        if version > stored.iteration:
            log.info("run %d: replayed versions %d to %d from their results%s",
                     run.run_id, stored.iteration + 1, version,
                     f" and stored the weights of {written}" if written else "")  # fmt: skip
        return state

    @staticmethod
    def _replay(state: engine.TrainingState, bodies: list[bytes], run: Run) -> engine.TrainingState:
        """One committed fold again, from the bodies it consumed, in its order."""
        results = engine.decode_results(bodies, run.config, state.iteration)
        return engine.step(state, results, run.config).state

    def _snapshot_due(self, version: int, finished: bool) -> bool:
        """Whether a version just committed gets its Adam state stored."""
        if finished or version % self.settings.checkpoint_every == 0:
            return True
        last = self._last_snapshot
        return last is None or time.monotonic() - last >= self.settings.snapshot_seconds

    async def _settle_extras(self) -> None:
        """Wait for the extras being stored, if any; their error, if any, is raised here."""
        extras, self._extras = self._extras, None
        if extras is not None:
            await extras

    async def _store_extras(self, extras: Extras) -> None:
        """Store a published version's weights; draw its sample grid; store its Adam
        state, then prune the states and the result bodies that state makes needless for
        replay.

        The weights come first, and a refusal stops here and is raised at the next
        step: the aggregator then starts over, and rebuilds and stores them from the
        version's results (``_write_unwritten``) before any later Adam state can drop
        those. Until they are stored this process serves them from memory and the
        others wait (api/weights.py).

        It runs beside the next fold, never inside one: at the class model the grid took
        0.2 s and the Adam state 0.1 s to encode and 0.2 s to write (alone; two to three
        times that beside 30 uploads), and the worst fold of a run published its weights
        1.5-2.2 s after its last result (*Extras beside the next fold* in
        docs/coordinator.md). Until the Adam state commits, a restart replays the
        version from the previous checkpoint and the bodies this would drop.
        ``extras.state`` stays valid meanwhile: folds build new tensors and never change
        the ones they are given. A refusal by the database does not stop the run: it is
        counted on /metrics, and a refused Adam state is tried again with the next version
        folded after the refusal.
        """
        run_id, state = extras.run.run_id, extras.state
        try:
            async with self.pool.acquire() as conn:
                await StatesRepo(conn).add_weights(
                    run_id=run_id, iteration=state.iteration, weights=extras.weights
                )
        except (OSError, asyncpg.PostgresError):
            self.metrics.extras_failures.labels("weights").inc()
            raise
        if extras.sample:
            try:
                png = await asyncio.to_thread(engine.sample_grid, state.weights, extras.run.config)
                async with self.pool.acquire() as conn:
                    await StatesRepo(conn).add_sample(
                        run_id=run_id, iteration=state.iteration, png=png
                    )
            except (OSError, asyncpg.PostgresError) as exc:
                self.metrics.extras_failures.labels("sample").inc()
                log.warning("the sample grid of version %d was not stored: %s",
                            state.iteration, exc)  # fmt: skip
        if extras.snapshot:
            try:
                checkpoint = await asyncio.to_thread(engine.encode_checkpoint, state)
                async with self.pool.acquire() as conn:
                    if await StatesRepo(conn).add_checkpoint(
                        run_id=run_id, iteration=state.iteration, checkpoint=checkpoint,
                        keep_last=self.settings.keep_last_states,
                        keep_every=self.settings.checkpoint_every,
                    ):  # fmt: skip
                        await ResultsRepo(conn).drop_replayed_bodies(
                            run_id=run_id, checkpoint=state.iteration
                        )
            except (OSError, asyncpg.PostgresError) as exc:
                self.metrics.extras_failures.labels("checkpoint").inc()
                self._last_snapshot = None  # tried again with the next version folded
                log.warning("the Adam state of version %d was not stored; nothing is lost (a "
                            "restart replays from the last one stored, and keeps the results "
                            "since then until the next is stored): %s",
                            state.iteration, exc)  # fmt: skip

    async def _step(self, run: Run) -> None:
        """Optimistically, then (if results kept arriving meanwhile) under the run lock.

        Accepted means counted. With a barrier a step consumes exactly the results that
        are accepted when it commits: the first attempt runs without blocking anyone and
        fails if a result arrived while it computed; the second holds the run lock, so
        claims and uploads wait for it (results decoded by the first attempt are
        reused). Without a barrier a result that arrives meanwhile goes into the next
        fold instead, and only the run's last fold, or a result dropped meanwhile,
        makes a second attempt (``StatesRepo.commit_step``).
        """
        started = time.perf_counter()
        state = await self._training_state(run)
        if self._decoded_for != run.run_id:
            self._decoded, self._decoded_for = {}, run.run_id
        try:
            async with self.pool.acquire() as conn:
                extras = await self._attempt(conn, run, state, started)
        except StepConflict as exc:
            log.info("step of iteration %d retried under the run lock: %s", run.iteration, exc)
            self.metrics.step_retries.inc()
            async with self.pool.acquire() as conn, StatesRepo(conn).locked_run(
                run_id=run.run_id
            ):
                extras = await self._attempt(conn, run, state, started)
        await self._settle_extras()  # one version at a time, in order
        self._extras = asyncio.create_task(self._store_extras(extras))

    async def _plan_ahead(self, run: Run) -> list[PlannedUnit]:
        """The units of the epoch after ``run``'s current one (planned in a thread, once;
        none after the last epoch)."""
        last = run.config.max_epochs
        if last is not None and run.epoch + 1 >= last:
            return []
        key = (run.run_id, run.epoch + 1)
        if self._next_epoch is None or self._next_epoch[0] != key:
            units = await asyncio.to_thread(plan_epoch, run.config, run.epoch + 1)
            self._next_epoch = (key, units)
        return self._next_epoch[1]

    async def _attempt(
        self, conn: asyncpg.Connection, run: Run, state: engine.TrainingState, started: float
    ) -> Extras:
        """Compute and commit one step; what is to be stored for it afterwards."""
        marks = [time.perf_counter()]
        results = await ResultsRepo(conn).open_for(run_id=run.run_id)
        marks.append(time.perf_counter())
        if not results:
            raise StepConflict("no results left to aggregate")
        open_ids = {r.lease_id for r in results}  # a dropped result's decoding goes too
        self._decoded = {k: v for k, v in self._decoded.items() if k in open_ids}
        missing = [r.lease_id for r in results if r.lease_id not in self._decoded]
        if missing:
            bodies = await ResultsRepo(conn).bodies(lease_ids=missing)
            decoded = await asyncio.to_thread(
                engine.decode_results, [bodies[k] for k in missing], run.config, run.iteration
            )
            self._decoded.update(zip(missing, decoded, strict=True))
        marks.append(time.perf_counter())
        strategy = engine.strategy(run.config)
        product = await asyncio.to_thread(
            engine.step, state, [self._decoded[r.lease_id] for r in results], run.config
        )
        m = product.metrics
        write = StepWrite(
            run_id=run.run_id,
            iteration=run.iteration,
            result_ids=[r.lease_id for r in results],
            weights_etag=product.encoded.weights_etag,
            history=HistoryEntry(
                iteration=run.iteration,
                epoch=run.epoch,
                g_loss=m.g_loss,
                d_loss=m.d_loss,
                d_real_accuracy=m.d_real_accuracy,
                d_fake_accuracy=m.d_fake_accuracy,
                num_results=len(results),
                num_workers=len({r.worker_id for r in results}),
                num_images=product.num_samples,
                step_seconds=time.perf_counter() - started,
                staleness=max(run.iteration - self._decoded[r.lease_id].iteration
                              for r in results),  # fmt: skip
                created_at=datetime.now(timezone.utc),
            ),
            repeat_units=strategy.repeats_units(run.iteration + 1),
            versions_per_iteration=strategy.versions_per_iteration,
            ends_leases=run.config.staleness_bound() == 0,
            max_staleness=run.config.staleness_bound(),
        )
        planned = await self._plan_ahead(run)

        def units_of(epoch: int) -> list[PlannedUnit]:  # the run's next epoch, as a rule
            return planned if epoch == run.epoch + 1 else plan_epoch(run.config, epoch)

        marks.append(time.perf_counter())
        outcome = await StatesRepo(conn).commit_step(
            step=write,
            plan_epoch=units_of,
            max_epochs=run.config.max_epochs,
            max_iterations=run.config.max_iterations,
        )
        marks.append(time.perf_counter())
        self._state = product.state
        for result in results:
            self._decoded.pop(result.lease_id, None)
        sample = self._sample_due(outcome.iteration, strategy.versions_per_iteration)
        if sample:
            self._last_sample = time.monotonic()
        snapshot = self._snapshot_due(outcome.iteration, outcome.status == "finished")
        if snapshot:
            self._last_snapshot = time.monotonic()
        self.cache.put(
            run.run_id,
            outcome.iteration,
            CachedWeights(product.encoded.weights, product.encoded.weights_etag),
        )
        self.metrics.steps.inc()
        self.metrics.step_seconds.observe(time.perf_counter() - started)
        log.debug(
            "step timing (s since start): listed, decoded, computed, committed %s",
            [round(t - started, 3) for t in marks[1:]],
        )
        losses = " ".join(
            f"{name} {value:.3f}" for name, value in (("g", m.g_loss), ("d", m.d_loss))
            if value is not None  # a synchronous phase has only its own network's loss
        )  # fmt: skip
        log.info(
            "run %d: iteration %d -> %d from %d results (%d images), %s%s",
            run.run_id, run.iteration, outcome.iteration, len(results), product.num_samples,
            losses, " - finished" if outcome.status == "finished" else "",
        )  # fmt: skip
        return Extras(run, product.state, product.encoded.weights, sample, snapshot)
