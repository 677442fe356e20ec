"""A step commits its new state exactly once: the same step again is a conflict that
changes nothing, though it writes its state row before it waits for the run lock. The
row holds the version's ETag and no weights: they are streamed in 1 MB pieces after the
commit (``add_weights``) and come back byte for byte, once (a second write of the same
version changes nothing), and a version without Adam state has a NULL checkpoint.

A result accepted while a step computed: with a barrier the step is a conflict (it is
computed again, holding the run lock); without one it commits what it folded and the
newcomer waits, unconsumed, for the next fold, except in the run's last fold, which has
no next one."""

from __future__ import annotations

import asyncio
import os
from datetime import datetime, timezone
from uuid import UUID

import pytest

from coordinator_service.db.leases import LeasesRepo
from coordinator_service.db.models import ResultMetrics
from coordinator_service.db.pool import connect
from coordinator_service.db.results import ResultsRepo
from coordinator_service.db.runs import RunsRepo
from coordinator_service.db.states import StatesRepo, StepConflict, StepWrite
from coordinator_service.db.workers import WorkersRepo
from coordinator_service.training.presets import resolve
from shared.protocol import HardwareInfo, HistoryEntry
from tests.conftest import NARROW_RUN


def _step(run_id: int, iteration: int = 0, **fields: object) -> StepWrite:
    history = HistoryEntry(
        iteration=0, epoch=0, g_loss=1.0, d_loss=1.0, d_real_accuracy=0.5,
        d_fake_accuracy=0.5, num_results=0, num_workers=0, num_images=0, step_seconds=0.1,
        staleness=0, created_at=datetime.now(timezone.utc),
    )  # fmt: skip
    return StepWrite.model_validate({
        "run_id": run_id, "iteration": iteration, "result_ids": [],
        "weights_etag": f"e{iteration + 1}", "history": history, **fields,
    })  # fmt: skip


async def _commit_twice(database_url: str) -> None:
    conn = await connect(database_url)
    try:
        run = await RunsRepo(conn).create(
            config=resolve(None, NARROW_RUN), weights=b"w0", weights_etag="e0",
            checkpoint=b"c0", units=[(0, [0, 1])],
        )  # fmt: skip
        states = StatesRepo(conn)

        async def commit(step: StepWrite) -> None:
            await states.commit_step(
                step=step, plan_epoch=lambda epoch: [], max_epochs=None, max_iterations=None
            )

        async def rows() -> list[tuple[object, ...]]:
            query = "SELECT iteration, weights, weights_etag, checkpoint FROM run_states "
            return [tuple(r) for r in await conn.fetch(query + "ORDER BY iteration")]

        await commit(_step(run.run_id))
        with pytest.raises(StepConflict, match="past this iteration"):
            await commit(_step(run.run_id))
        assert await conn.fetchval("SELECT iteration FROM runs") == 1
        assert await rows() == [(0, b"w0", "e0", b"c0"), (1, None, "e1", None)]
        assert await states.unwritten_weights() == [(run.run_id, 1)]
        assert await states.stored_iterations(run_id=run.run_id) == [0]

        w1 = os.urandom(2_500_000)  # three pieces
        await states.add_weights(run_id=run.run_id, iteration=1, weights=w1)
        await states.add_weights(run_id=run.run_id, iteration=1, weights=b"a second w1")
        assert await rows() == [(0, b"w0", "e0", b"c0"), (1, w1, "e1", None)]
        assert await states.unwritten_weights() == []
        assert await conn.fetchval("SELECT count(*) FROM history") == 1
    finally:
        await conn.close()


def test_the_same_step_twice_is_a_conflict_that_changes_nothing(database_url: str) -> None:
    asyncio.run(_commit_twice(database_url))


async def _fold_while_a_result_arrives(database_url: str) -> None:
    conn = await connect(database_url)
    try:
        run = await RunsRepo(conn).create(
            config=resolve(None, NARROW_RUN), weights=b"w0", weights_etag="e0",
            checkpoint=b"c0", units=[(0, [0, 1]), (0, [2, 3]), (0, [4, 5])],
        )  # fmt: skip
        worker = await WorkersRepo(conn).register(
            name="ada", token_hash="hash-of-ada", hardware=HardwareInfo()
        )
        leases, results = LeasesRepo(conn), ResultsRepo(conn)

        async def accept() -> UUID:
            unit = (await leases.claim(worker_id=worker.worker_id, cached_shards=[])).unit
            assert unit is not None
            await results.accept(
                lease_id=unit.lease_id, run_id=run.run_id, worker_id=worker.worker_id,
                kind="local_delta", num_samples=2, body=b"delta", max_staleness=4,
                metrics=ResultMetrics(g_loss=1, d_loss=1, d_real_accuracy=0.5,
                                      d_fake_accuracy=0.5),
            )  # fmt: skip
            return unit.lease_id

        async def commit(step: StepWrite, max_iterations: int | None = None) -> None:
            await StatesRepo(conn).commit_step(
                step=step, plan_epoch=lambda epoch: [], max_epochs=None,
                max_iterations=max_iterations,
            )  # fmt: skip

        async def snapshot() -> list[tuple[object, ...]]:
            rows = await conn.fetch(
                "SELECT r.iteration, s.iteration AS stored, r.status FROM runs r "
                "JOIN run_states s USING (run_id) ORDER BY s.iteration"
            )
            opened = await conn.fetch(
                "SELECT lease_id, folded_version FROM results ORDER BY accepted_at"
            )
            return [tuple(r) for r in rows] + [tuple(r) for r in opened]

        a = await accept()
        b = await accept()  # accepted while the fold of a alone computed
        unchanged = await snapshot()
        with pytest.raises(StepConflict, match="arrived"):  # a barrier
            await commit(_step(run.run_id, result_ids=[a]))
        assert await snapshot() == unchanged

        no_barrier = {"ends_leases": False, "max_staleness": 4}
        await commit(_step(run.run_id, result_ids=[a], **no_barrier))
        folded = {r["lease_id"]: r["folded_version"] for r in await conn.fetch(
            "SELECT lease_id, folded_version FROM results"
        )}  # fmt: skip
        assert folded == {a: 0, b: None}  # b waits for the next fold
        assert await conn.fetchval("SELECT iteration FROM runs") == 1

        c = await accept()  # arrives while the run's last fold (of b) computes
        unchanged = await snapshot()
        with pytest.raises(StepConflict, match="last fold"):
            await commit(_step(run.run_id, 1, result_ids=[b], **no_barrier), 2)
        assert await snapshot() == unchanged
        await commit(_step(run.run_id, 1, result_ids=[b, c], **no_barrier), 2)
        done = await conn.fetchrow("SELECT iteration, status FROM runs")
        assert tuple(done) == (2, "finished")
        assert await conn.fetchval("SELECT count(*) FROM results WHERE consumed_at IS NULL") == 0
    finally:
        await conn.close()


def test_a_fold_leaves_a_result_that_arrived_meanwhile_for_the_next(database_url: str) -> None:
    asyncio.run(_fold_while_a_result_arrives(database_url))
