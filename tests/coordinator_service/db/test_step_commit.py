"""A step commits its new state exactly once: the same step again is a conflict that
changes nothing, though it writes its state row before it waits for the run lock. The
row is streamed in 1 MB pieces (``copy_row``): weights of several pieces come back
byte for byte, and a version without Adam state has a NULL checkpoint."""

from __future__ import annotations

import asyncio
import os
from datetime import datetime, timezone

import pytest

from coordinator_service.db.pool import connect
from coordinator_service.db.runs import RunsRepo
from coordinator_service.db.states import StatesRepo, StepConflict, StepWrite
from coordinator_service.training.presets import resolve
from shared.protocol import HistoryEntry
from tests.conftest import NARROW_RUN


def _step(run_id: int, weights: bytes) -> StepWrite:
    history = HistoryEntry(
        iteration=0, epoch=0, g_loss=1.0, d_loss=1.0, d_real_accuracy=0.5,
        d_fake_accuracy=0.5, num_results=0, num_workers=0, num_images=0, step_seconds=0.1,
        staleness=0, created_at=datetime.now(timezone.utc),
    )  # fmt: skip
    return StepWrite(
        run_id=run_id, iteration=0, result_ids=[], weights=weights, weights_etag="e1",
        checkpoint=None, history=history, sample_png=None, keep_last=3, checkpoint_every=100,
    )  # fmt: skip


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

        w1 = os.urandom(2_500_000)  # three pieces
        await commit(_step(run.run_id, w1))
        with pytest.raises(StepConflict, match="past this iteration"):
            await commit(_step(run.run_id, b"a second w1"))
        assert await conn.fetchval("SELECT iteration FROM runs") == 1
        rows = await conn.fetch(
            "SELECT iteration, weights, weights_etag, checkpoint FROM run_states ORDER BY iteration"
        )
        assert [tuple(r) for r in rows] == [(0, b"w0", "e0", b"c0"), (1, w1, "e1", None)]
        assert await conn.fetchval("SELECT count(*) FROM history") == 1
    finally:
        await conn.close()


def test_the_same_step_twice_is_a_conflict_that_changes_nothing(database_url: str) -> None:
    asyncio.run(_commit_twice(database_url))
