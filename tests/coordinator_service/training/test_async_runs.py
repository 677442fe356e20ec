"""Asynchronous local steps through the real coordinator: no barrier, staleness bound,
and a restart that replays folds of stale results bit for bit (issue 13)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import torch

from coordinator_service.training import engine
from shared.codec import decode_result, decode_snapshot, encode_result
from shared.models import ModelConfig, StateSpec
from shared.protocol import RunConfig, WorkUnit
from tests.conftest import (
    NARROW_RUN,
    TEST_ADMIN_TOKEN,
    TEST_JOIN_CODE,
    RunningCoordinator,
    SpawnedCoordinator,
)
from tests.coordinator_service.helpers import (
    api_client,
    claim_when_ready,
    database_fingerprint,
    fake_body,
    fake_result,
    fetch,
    real_result,
    sampled_through,
    upload,
    wait_for_version,
)

NARROW = ModelConfig(latent_dim=32, generator_features=8, discriminator_features=8)
SPEC = StateSpec.from_config(NARROW)
ASYNC = {**NARROW_RUN, "result_kind": "async_local_steps", "batch_size": 8,
         "units_per_step": 1, "step_timeout": 3600}  # fmt: skip
PLAIN_SGD = {"outer_lr": 1.0, "outer_momentum": 0.0, "outer_nesterov": False}


@pytest.fixture(autouse=True)
def one_thread() -> Any:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _weights(client: httpx.Client, version: int) -> dict[str, torch.Tensor]:
    return decode_snapshot(wait_for_version(client, version), SPEC).weights


def test_one_worker_with_k_1_takes_the_steps_of_local_steps_mode(
    coordinator_factory: Callable[..., RunningCoordinator],
) -> None:
    """Three real units through an asynchronous run and through a local-steps run with
    one unit per step: every result is fresh, so the weights agree bit for bit."""
    served = {}
    for kind in ("local_steps", "async_local_steps"):
        coordinator = coordinator_factory()
        coordinator.start_run(**{**ASYNC, "result_kind": kind, "seed": 3})
        worker = coordinator.client(coordinator.register())
        for version in range(3):
            unit = claim_when_ready(worker)
            assert (unit.iteration, unit.run.result_kind) == (version, kind)
            weights = worker.get(coordinator.url + unit.weights_url).content
            body = encode_result(real_result(unit, weights))
            assert upload(worker, unit, body).status_code == 200
            wait_for_version(worker, version + 1)
        served[kind] = _weights(worker, 3)
    for name, tensor in served["local_steps"].items():
        assert torch.equal(served["async_local_steps"][name], tensor), name


def test_a_fold_ends_no_other_lease_and_a_stale_result_counts_less(
    coordinator: RunningCoordinator,
) -> None:
    """Bob's fold does not end ada's lease of version 0; her result, one version stale,
    is accepted into version 2 at weight 2 ** -0.5 (plain outer SGD at lr 1: exactly
    W_1 - 2 ** -0.5 (W_0 - W_ada), with her BatchNorm statistics)."""
    coordinator.start_run(**ASYNC, **PLAIN_SGD)
    ada = coordinator.client(coordinator.register("ada"))
    bob = coordinator.client(coordinator.register("bob"))
    mine, theirs = claim_when_ready(ada), claim_when_ready(bob)
    assert (mine.iteration, theirs.iteration) == (0, 0)
    assert upload(bob, theirs, fake_body(theirs)).status_code == 200
    w1 = _weights(bob, 1)
    lease = asyncio.run(fetch(coordinator.database_url,
                              "SELECT status FROM leases WHERE lease_id = $1", mine.lease_id))
    assert lease[0]["status"] == "active"  # no barrier: still hers
    result = fake_result(mine)
    answer = upload(ada, mine, encode_result(result))
    assert answer.status_code == 200, answer.text
    w2 = _weights(ada, 2)
    for name, delta in result.tensors.items():
        assert torch.equal(w2[name], w1[name].sub(delta * 2**-0.5, alpha=1.0)), name
    for name, statistic in result.buffers.items():
        assert torch.equal(w2[name], statistic), name
    history = ada.get("/history").json()
    assert [(h["num_results"], h["staleness"]) for h in history] == [(1, 0), (1, 1)]


def test_a_result_past_the_staleness_bound_is_refused_and_its_images_go_back(
    coordinator: RunningCoordinator,
) -> None:
    coordinator.start_run(**ASYNC, max_staleness=1)
    ada = coordinator.client(coordinator.register("ada"))
    bob = coordinator.client(coordinator.register("bob"))
    late = claim_when_ready(ada)
    for version in range(2):  # bob folds twice: ada's version 0 is 2 behind, past 1
        unit = claim_when_ready(bob)
        assert unit.iteration == version
        assert upload(bob, unit, fake_body(unit)).status_code == 200
        wait_for_version(bob, version + 1)
    # The fold that left her lease behind the bound ended it: her images are pending.
    rows = asyncio.run(fetch(coordinator.database_url,
        "SELECT u.status, l.status AS lease FROM work_units u JOIN leases l USING (unit_id) "
        "WHERE l.lease_id = $1", late.lease_id))  # fmt: skip
    assert (rows[0]["status"], rows[0]["lease"]) == ("pending", "stale")
    sampled_through(bob, 2)  # the version's grid is stored just after it
    before = asyncio.run(database_fingerprint(coordinator.database_url))
    refused = upload(ada, late, fake_body(late))
    assert refused.status_code == 409 and refused.json()["code"] == "stale_iteration"
    assert asyncio.run(database_fingerprint(coordinator.database_url)) == before
    again = claim_when_ready(bob)  # her images, against the newest weights
    assert (again.image_indices, again.iteration) == (late.image_indices, 2)


def test_kill_9_replays_folds_of_stale_results_bit_for_bit(
    database_url: str, spawn_coordinator: Callable[..., SpawnedCoordinator]
) -> None:
    """Four folds, two of them of a one-version-stale result, none stored with its outer
    momentum; killed, the new coordinator replays them from the results log (it checks
    the replayed weights against the served ones) and its next fold equals an
    uninterrupted coordinator's. With Delayed Nesterov (N = 5) the fold after the
    restart is the first momentum update: it takes in the four replayed changes."""
    delayed = {**ASYNC, "outer_momentum_delay": 5}
    first = spawn_coordinator(database_url, GAN_SNAPSHOT_SECONDS="3600")
    with api_client(first.url, TEST_ADMIN_TOKEN) as admin, api_client(first.url) as anon:
        assert admin.post("/admin/runs", json={"config": delayed}).status_code == 201
        tokens = [anon.post("/workers", json={"join_code": TEST_JOIN_CODE, "name": name})
                  .json()["token"] for name in ("ada", "bob")]  # fmt: skip
    ada, bob = (api_client(first.url, token) for token in tokens)
    folds: list[tuple[WorkUnit, bytes]] = []

    def fold(client: httpx.Client, unit: WorkUnit, version: int) -> None:
        body = fake_body(unit)
        assert upload(client, unit, body).status_code == 200
        wait_for_version(client, version)
        folds.append((unit, body))

    for start in (0, 2):
        a, b = claim_when_ready(ada), claim_when_ready(bob)
        assert a.iteration == b.iteration == start
        fold(bob, b, start + 1)
        fold(ada, a, start + 2)  # one version stale
    ada.close()
    bob.close()
    first.kill()

    second = spawn_coordinator(database_url, args=("--log-level", "info"))
    with api_client(second.url, tokens[0]) as ada:
        unit = claim_when_ready(ada)
        assert unit.iteration == 4
        fold(ada, unit, 5)
        served = decode_snapshot(wait_for_version(ada, 5), SPEC)
        staleness = [h["staleness"] for h in ada.get("/history").json()]
    assert staleness == [0, 1, 0, 1, 0]
    assert "replayed versions 1 to 4 from their results" in second.log()

    config = RunConfig.model_validate(delayed)
    state, _ = engine.initial_state(config)
    for version, (unit, body) in enumerate(folds):
        result = decode_result(body, engine.result_layout(config, version))
        assert result.iteration == unit.iteration
        state = engine.step(state, [result], config).state
    for name, tensor in state.weights.items():
        assert torch.equal(served.weights[name], tensor), name
    rows = asyncio.run(fetch(database_url, "SELECT iteration, folded_version FROM results "
                             "ORDER BY folded_version"))  # fmt: skip
    assert [(r["iteration"], r["folded_version"]) for r in rows] == [
        (0, 0), (0, 1), (2, 2), (2, 3), (4, 4)
    ]


def test_the_next_epoch_is_handed_out_while_the_last_units_of_one_compute(
    coordinator: RunningCoordinator,
) -> None:
    """Two units an epoch: both out, bob's folds, and bob gets a unit of the next epoch
    at once instead of waiting for ada's; hers still counts in epoch 0, and the run
    finishes only when every unit of its last epoch is in."""
    coordinator.start_run(**{**ASYNC, "dataset": {"size": 32, "shard_size": 32},
                             "max_epochs": 2})  # fmt: skip
    ada = coordinator.client(coordinator.register("ada"))
    bob = coordinator.client(coordinator.register("bob"))
    hers, his = claim_when_ready(ada), claim_when_ready(bob)
    assert (hers.epoch, his.epoch) == (0, 0)
    assert upload(bob, his, fake_body(his)).status_code == 200
    wait_for_version(bob, 1)
    following = claim_when_ready(bob)
    assert following.epoch == 1
    assert upload(ada, hers, fake_body(hers)).status_code == 200
    wait_for_version(ada, 2)
    last = claim_when_ready(ada)
    assert last.epoch == 1
    for client, unit in ((bob, following), (ada, last)):
        assert upload(client, unit, fake_body(unit)).status_code == 200
    deadline = time.monotonic() + 60  # one fold or two, as the uploads meet the folds
    while (status := ada.get("/status").json())["state"] != "finished":
        assert time.monotonic() < deadline, status
        time.sleep(0.05)
    assert status["images_processed"] == 2 * 32
    rows = asyncio.run(fetch(coordinator.database_url,
                             "SELECT epoch, count(*) AS n FROM work_units "
                             "WHERE status = 'done' GROUP BY epoch ORDER BY epoch"))
    assert [(r["epoch"], r["n"]) for r in rows] == [(0, 2), (1, 2)]
