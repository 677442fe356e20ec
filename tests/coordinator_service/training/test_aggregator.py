"""The step rule, epochs rolling over, finishing, and bounded storage."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta, timezone

import pytest

from coordinator_service.db.models import Run, StepReadiness
from coordinator_service.settings import Settings
from coordinator_service.training.aggregator import should_step
from shared.protocol import RunConfig
from tests.conftest import NARROW_RUN, RunningCoordinator
from tests.coordinator_service.helpers import claim, fake_body, fetch, upload


def _run(**config: object) -> Run:
    now = datetime.now(timezone.utc)
    return Run(run_id=1, status="active", config=RunConfig.model_validate(config), iteration=0,
               epoch=0, iteration_started_at=now, created_at=now, finished_at=None)  # fmt: skip


def test_the_step_rule() -> None:
    run = _run(units_per_step=3, step_timeout=60)
    now = datetime.now(timezone.utc)
    assert not should_step(run, StepReadiness(accepted=0, any_pending=False, any_leased=False), now)
    assert not should_step(run, StepReadiness(accepted=2, any_pending=True, any_leased=True), now)
    assert should_step(run, StepReadiness(accepted=3, any_pending=True, any_leased=True), now)
    assert should_step(run, StepReadiness(accepted=1, any_pending=False, any_leased=False), now)
    assert not should_step(run, StepReadiness(accepted=1, any_pending=False, any_leased=True), now)
    later = now + timedelta(seconds=61)
    assert should_step(run, StepReadiness(accepted=1, any_pending=True, any_leased=True), later)


def _wait_for(condition: object, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_epochs_roll_over_and_the_run_finishes(coordinator: RunningCoordinator) -> None:
    worker = coordinator.client(coordinator.register())
    coordinator.start_run(**{**NARROW_RUN, "dataset": {"size": 32, "shard_size": 32}},
                          units_per_step=5, max_epochs=2)  # fmt: skip
    for version in range(4):  # per epoch: the D phase, then its G phase on the same units
        units = [claim(worker), claim(worker)]
        assert all(u is not None and u.epoch == version // 2 for u in units)
        assert claim(worker) is None
        for unit in units:
            assert unit is not None and unit.iteration == version
            assert upload(worker, unit, fake_body(unit)).status_code == 200
        # all issued units are in and nothing is pending: step without waiting for 5
        _wait_for(lambda v=version: worker.get("/status").json()["run"]["iteration"] == v + 1)
    status = worker.get("/status").json()
    assert status["run"]["status"] == "finished" and status["run"]["epoch"] == 1
    assert worker.post("/work-units/claim").status_code == 410
    history = worker.get("/history").json()
    assert [(h["iteration"], h["epoch"], h["num_images"]) for h in history] == [
        (0, 0, 32), (1, 0, 32), (2, 1, 32), (3, 1, 32)]  # fmt: skip
    assert worker.get("/workers/me").json()["total_images"] == 128


@pytest.mark.parametrize("keep_last, every", [(2, 3)])
def test_storage_keeps_the_last_states_and_periodic_checkpoints(
    coordinator_factory: object, keep_last: int, every: int
) -> None:
    coordinator: RunningCoordinator = coordinator_factory(  # type: ignore[operator]
        keep_last_states=keep_last, checkpoint_every=every, sample_every=2, sample_seconds=0
    )
    worker = coordinator.client(coordinator.register())
    coordinator.start_run(**NARROW_RUN, units_per_step=1, max_iterations=6,
                          result_kind="local_steps")  # one version per iteration  # fmt: skip
    for iteration in range(6):
        unit = claim(worker)
        assert unit is not None and unit.iteration == iteration
        assert upload(worker, unit, fake_body(unit)).status_code == 200
        _wait_for(lambda i=iteration: worker.get("/status").json()["run"]["iteration"] == i + 1)

    def stored() -> list[tuple[int, bool]]:
        query = "SELECT iteration, checkpoint IS NOT NULL AS full FROM run_states ORDER BY 1"
        rows = asyncio.run(fetch(coordinator.database_url, query))
        return [(r["iteration"], r["full"]) for r in rows]

    # Adam state with every `every`-th version and the last (stored just after the
    # version is published); version 5 only its weights.
    _wait_for(lambda: stored()[-1] == (6, True))
    assert stored() == [(0, True), (3, True), (5, False), (6, True)]
    assert worker.get("/samples").json() == [2, 4, 6]
    # The last checkpoint covers every consumed result: their bodies are dropped (just
    # after the checkpoint is stored, outside the step's transaction).
    query = "SELECT count(*) AS n FROM results WHERE body IS NOT NULL"
    _wait_for(lambda: asyncio.run(fetch(coordinator.database_url, query))[0]["n"] == 0)
    assert worker.post("/work-units/claim").status_code == 410


def test_settings_refuse_placeholders_outside_development() -> None:
    with pytest.raises(ValueError, match="GAN_JOIN_CODE"):
        Settings(environment="production", admin_token="a-real-secret-token")
    Settings(environment="production", admin_token="a-real-secret", join_code="blue-otter-42")


def test_one_aggregator_per_database(coordinator: RunningCoordinator) -> None:
    from coordinator_service.training.aggregator import ADVISORY_LOCK_KEY

    async def try_lock() -> bool:
        import asyncpg

        conn = await asyncpg.connect(coordinator.database_url)
        try:
            return bool(await conn.fetchval("SELECT pg_try_advisory_lock($1)", ADVISORY_LOCK_KEY))
        finally:
            await conn.close()

    _wait_for(lambda: not asyncio.run(try_lock()))  # the running coordinator holds it


def test_step_timeout_steps_with_what_is_in(coordinator: RunningCoordinator) -> None:
    worker = coordinator.client(coordinator.register())
    coordinator.start_run(**NARROW_RUN, units_per_step=10, step_timeout=1.5)
    unit, spare = claim(worker), claim(worker)
    assert unit is not None and spare is not None
    assert upload(worker, unit, fake_body(unit)).status_code == 200
    _wait_for(lambda: worker.get("/status").json()["run"]["iteration"] == 1)
    history = worker.get("/history").json()
    assert history[0]["num_results"] == 1 and history[0]["step_seconds"] >= 0
    late = upload(worker, spare, fake_body(spare))  # leased at iteration 0: stale now
    assert late.status_code == 409 and late.json()["code"] == "stale_iteration"
