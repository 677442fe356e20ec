"""Faults across the two phases of a synchronous iteration lose and double nothing."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
import torch

from coordinator_service.training import engine
from shared.codec import decode_result, decode_snapshot
from shared.models import ModelConfig, StateSpec
from shared.protocol import RunConfig, WorkUnit
from tests.conftest import (
    NARROW_RUN,
    TEST_ADMIN_TOKEN,
    TEST_JOIN_CODE,
    RunningCoordinator,
    SpawnedCoordinator,
)
from tests.coordinator_service.api.test_refusals import assert_refused_unchanged
from tests.coordinator_service.helpers import (
    api_client,
    claim,
    claim_when_ready,
    fake_body,
    fetch,
    upload,
    wait_for_version,
)

NARROW = ModelConfig(latent_dim=32, generator_features=8, discriminator_features=8)




def test_a_d_phase_result_after_the_g_phase_began_is_refused_and_counts_nowhere(
    coordinator: RunningCoordinator,
) -> None:
    coordinator.start_run(**NARROW_RUN, units_per_step=2, step_timeout=1.0)
    ada = coordinator.client(coordinator.register("ada"))
    bob = coordinator.client(coordinator.register("bob"))
    first, late = claim_when_ready(ada), claim_when_ready(bob)
    assert (first.iteration, late.iteration) == (0, 0)
    assert upload(ada, first, fake_body(first)).status_code == 200
    wait_for_version(ada, 1)  # the step timeout folded the D phase with one result
    g_unit = claim_when_ready(ada)
    assert g_unit.iteration == 1 and g_unit.image_indices == first.image_indices

    assert_refused_unchanged(
        coordinator, lambda: upload(bob, late, fake_body(late)), 409, "stale_iteration"
    )
    rows = asyncio.run(fetch(coordinator.database_url, "SELECT status, pinned_iteration "
                             "FROM work_units WHERE unit_id = $1", late.unit_id))  # fmt: skip
    assert (rows[0]["status"], rows[0]["pinned_iteration"]) == ("pending", None)  # in the pool
    counted = asyncio.run(fetch(coordinator.database_url,
        "SELECT count(*) AS n FROM results WHERE worker_id = (SELECT worker_id FROM workers "
        "WHERE name = 'bob')"))  # fmt: skip
    assert counted[0]["n"] == 0
    # The G phase needs only ada's unit; the next D phase hands bob's images out again.
    assert upload(ada, g_unit, fake_body(g_unit)).status_code == 200
    wait_for_version(ada, 2)
    again = [claim_when_ready(ada), claim_when_ready(bob)]
    assert late.image_indices in [u.image_indices for u in again]



@pytest.mark.parametrize("folded", [1, 3], ids=["after-1-version", "after-3-versions"])
def test_kill_9_between_the_phases_resumes_in_the_g_phase(
    database_url: str, spawn_coordinator: Callable[..., SpawnedCoordinator], folded: int
) -> None:
    """Killed after ``folded`` versions (the last a D phase), none of them stored with Adam
    state: the new coordinator replays them from their results and carries on exactly."""
    run = {**NARROW_RUN, "units_per_step": 2, "step_timeout": 3600}
    first = spawn_coordinator(database_url, GAN_SNAPSHOT_SECONDS="3600")
    with api_client(first.url, TEST_ADMIN_TOKEN) as admin, api_client(first.url) as anon:
        assert admin.post("/admin/runs", json={"config": run}).status_code == 201
        token = anon.post("/workers", json={"join_code": TEST_JOIN_CODE, "name": "ada"}).json()[
            "token"
        ]
    worker = api_client(first.url, token)
    folds: list[tuple[list[WorkUnit], list[bytes]]] = []
    for version in range(folded):
        units = [claim_when_ready(worker) for _ in range(2)]
        assert {u.iteration for u in units} == {version}
        bodies = [fake_body(u) for u in units]
        for unit, body in zip(units, bodies, strict=True):
            assert upload(worker, unit, body).status_code == 200
        wait_for_version(worker, version + 1)
        folds.append((units, bodies))
    worker.close()
    first.kill()  # the D phase is folded, the G phase not begun
    full = asyncio.run(fetch(database_url, "SELECT iteration FROM run_states "
                             "WHERE checkpoint IS NOT NULL"))  # fmt: skip
    assert [r["iteration"] for r in full] == [0]  # only W_0 carries Adam state

    second = spawn_coordinator(database_url, args=("--log-level", "info"))
    worker = api_client(second.url, token)
    assert worker.get("/status").json()["run"]["iteration"] == folded
    g_units = [claim_when_ready(worker) for _ in range(2)]
    assert {u.iteration for u in g_units} == {folded}
    d_units = folds[-1][0]
    assert sorted(u.image_indices for u in g_units) == sorted(u.image_indices for u in d_units)
    assert claim(worker) is None  # nothing else belongs to the G phase
    g_bodies = [fake_body(u) for u in g_units]
    for unit, body in zip(g_units, g_bodies, strict=True):
        assert upload(worker, unit, body).status_code == 200
    try:
        published = wait_for_version(worker, folded + 1)
    except AssertionError as exc:  # say why: the restarted coordinator's own log
        raise AssertionError(f"{exc}\n--- restarted coordinator's log:\n{second.log()}") from None
    served = decode_snapshot(published, StateSpec.from_config(NARROW))
    history = worker.get("/history").json()
    worker.close()
    assert f"replayed versions 1 to {folded} from their results" in second.log()
    folds.append((g_units, g_bodies))

    # An uninterrupted coordinator: every fold from W_0, results in unit order.
    config = RunConfig.model_validate(run)
    state, _ = engine.initial_state(config)
    for version, (units, bodies) in enumerate(folds):
        layout = engine.result_layout(config, version)
        ordered = [decode_result(b, layout) for _, b in sorted(
            zip([u.unit_id for u in units], bodies, strict=True))]  # fmt: skip
        state = engine.step(state, ordered, config).state
    for name, tensor in state.weights.items():
        assert torch.equal(served.weights[name], tensor), name
    assert [h["iteration"] for h in history] == list(range(folded + 1))  # each fold once
    assert [h["num_results"] for h in history] == [2] * (folded + 1)
    results = asyncio.run(fetch(database_url, "SELECT count(*) AS n FROM results"))
    assert results[0]["n"] == 2 * (folded + 1)
