"""A coordinator killed with SIGKILL between accepting results and stepping loses nothing."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import httpx
import torch

from coordinator_service.training import engine
from shared.codec import decode_result, decode_snapshot
from shared.models import ModelConfig, StateSpec
from shared.protocol import RunConfig
from tests.conftest import NARROW_RUN, TEST_ADMIN_TOKEN, TEST_JOIN_CODE, SpawnedCoordinator
from tests.coordinator_service.helpers import (
    api_client,
    claim,
    claim_when_ready,
    fake_body,
    fetch,
    upload,
    wait_for_version,
)
from tests.coordinator_service.test_dashboard_api import metric

CONFIG = ModelConfig(latent_dim=32, generator_features=8, discriminator_features=8)
RUN = {**NARROW_RUN, "units_per_step": 3, "step_timeout": 3600}


def test_kill_9_before_the_step_resumes_the_same_iteration(
    database_url: str, spawn_coordinator: Callable[..., SpawnedCoordinator]
) -> None:
    spec = StateSpec.from_config(CONFIG)
    first = spawn_coordinator(database_url)
    with api_client(first.url, TEST_ADMIN_TOKEN) as admin, api_client(first.url) as anon:
        assert admin.post("/admin/runs", json={"config": RUN}).status_code == 201
        token = anon.post("/workers", json={"join_code": TEST_JOIN_CODE, "name": "ada"}).json()[
            "token"
        ]
    worker = api_client(first.url, token)
    units = [claim(worker) for _ in range(3)]
    assert all(u is not None for u in units)
    bodies = [fake_body(u) for u in units]  # type: ignore[arg-type]
    w0 = worker.get(first.url + units[0].weights_url).content  # type: ignore[union-attr]
    for unit, body in zip(units[:2], bodies[:2], strict=True):
        assert upload(worker, unit, body).status_code == 200  # type: ignore[arg-type]
    worker.close()
    first.kill()

    second = spawn_coordinator(database_url)
    worker = api_client(second.url, token)
    status = worker.get("/status").json()
    assert status["run"]["iteration"] == 0 and status["results_waiting"] == 2
    # a repeat of an upload from before the crash still answers as the first did
    assert upload(worker, units[0], bodies[0]).json()["duplicate"] is True  # type: ignore[arg-type]
    assert upload(worker, units[2], bodies[2]).status_code == 200  # type: ignore[arg-type]
    deadline = time.monotonic() + 60
    while (response := worker.get("/weights/1")).status_code != 200:
        assert time.monotonic() < deadline, second.log()
        time.sleep(0.05)
    worker.close()

    # What an uninterrupted coordinator computes: the three results in unit order.
    config = RunConfig.model_validate(RUN)
    start, _ = engine.initial_state(config)
    served0 = decode_snapshot(w0, spec).weights
    assert all(torch.equal(start.weights[k], v) for k, v in served0.items())
    layout = engine.result_layout(config, 0)
    results = [decode_result(b, layout) for _, b in sorted(zip(
        [u.unit_id for u in units], bodies, strict=True))]  # type: ignore[union-attr]  # fmt: skip
    expected = engine.step(start, results, config).state.weights
    served = decode_snapshot(response.content, spec).weights
    for name, tensor in expected.items():
        assert torch.equal(served[name], tensor), name
    with api_client(second.url) as anon:
        history = anon.get("/history").json()
    assert len(history) == 1 and history[0]["num_results"] == 3


def _failures(url: str, kind: str) -> float:
    """``gan_extras_failures_total{kind=...}`` on the coordinator's /metrics."""
    return metric(httpx.get(url + "/metrics").text, f'gan_extras_failures_total{{kind="{kind}"}}')


LOCAL_RUN = {**NARROW_RUN, "units_per_step": 1, "result_kind": "local_steps"}
EVERY_SECOND = {"GAN_CHECKPOINT_EVERY": "2", "GAN_SNAPSHOT_SECONDS": "3600"}  # checkpoints


def _start_local_run(
    database_url: str, spawn_coordinator: Callable[..., SpawnedCoordinator], refuse: str
) -> tuple[SpawnedCoordinator, str]:
    """A coordinator with a one-unit local-steps run, a worker's token, and a constraint
    (``ALTER TABLE run_states ADD CONSTRAINT ...``) that makes PostgreSQL refuse writes."""
    first = spawn_coordinator(database_url, **EVERY_SECOND)
    with api_client(first.url, TEST_ADMIN_TOKEN) as admin, api_client(first.url) as anon:
        assert admin.post("/admin/runs", json={"config": LOCAL_RUN}).status_code == 201
        token = anon.post("/workers", json={"join_code": TEST_JOIN_CODE, "name": "ada"}).json()[
            "token"
        ]
    asyncio.run(fetch(database_url, f"ALTER TABLE run_states ADD CONSTRAINT {refuse}"))
    return first, token


def _fold(worker: httpx.Client, version: int, bodies: list[bytes]) -> bytes:
    """Claim ``version``'s unit, upload a result (kept in ``bodies``), and return the
    served weights of the version it makes."""
    unit = claim_when_ready(worker)
    assert unit.iteration == version
    bodies.append(fake_body(unit))
    assert upload(worker, unit, bodies[-1]).status_code == 200
    return wait_for_version(worker, version + 1)


def _assert_uninterrupted(bodies: list[bytes], served: bytes) -> None:
    """``served`` is what an uninterrupted coordinator makes: each result folded in
    turn from W_0, computed here with the engine alone."""
    config = RunConfig.model_validate(LOCAL_RUN)
    state, _ = engine.initial_state(config)
    for version, body in enumerate(bodies):
        state = engine.step(state, [decode_result(body, engine.result_layout(config, version))],
                            config).state  # fmt: skip
    weights = decode_snapshot(served, StateSpec.from_config(CONFIG)).weights
    for name, tensor in state.weights.items():
        assert torch.equal(weights[name], tensor), name


def test_checkpoints_refused_by_the_database_lose_nothing_across_a_kill_9(
    database_url: str, spawn_coordinator: Callable[..., SpawnedCoordinator]
) -> None:
    """While PostgreSQL refuses the Adam states (a constraint here; a full disk or a
    revoked grant in a class), the run goes on, /metrics counts the refusals and the
    next version tries again; the results since the last stored state keep their
    bodies, so a coordinator killed meanwhile replays them and folds on exactly what an
    uninterrupted one would."""
    first, token = _start_local_run(
        database_url, spawn_coordinator, "refuse_adam CHECK (checkpoint IS NULL OR iteration = 0) "
        "NOT VALID",
    )  # fmt: skip
    bodies: list[bytes] = []

    def refused(count: int) -> None:
        deadline = time.monotonic() + 30
        while _failures(first.url, "checkpoint") < count:
            assert time.monotonic() < deadline, first.log()
            time.sleep(0.05)

    with api_client(first.url, token) as worker:
        _fold(worker, 0, bodies)
        _fold(worker, 1, bodies)
        refused(1)  # version 2's Adam state (every second version's)
        served = _fold(worker, 2, bodies)
        refused(2)  # version 3's: the first version folded after the refusal tries again
    assert "the Adam state of version 3 was not stored" in first.log()
    assert httpx.get(first.url + "/healthz").json() == {"status": "ok"}  # training goes on
    kept = "SELECT count(*) AS n FROM results WHERE body IS NOT NULL"
    assert asyncio.run(fetch(database_url, kept))[0]["n"] == 3
    first.kill()

    asyncio.run(fetch(database_url, "ALTER TABLE run_states DROP CONSTRAINT refuse_adam"))
    second = spawn_coordinator(database_url, args=("--log-level", "info"), **EVERY_SECOND)
    with api_client(second.url, token) as worker:
        assert worker.get("/weights/3").content == served
        after = _fold(worker, 3, bodies)
    assert "replayed versions 1 to 3 from their results" in second.log()
    deadline = time.monotonic() + 30  # version 4's Adam state is stored: the bodies go
    while asyncio.run(fetch(database_url, kept))[0]["n"]:
        assert time.monotonic() < deadline, second.log()
        time.sleep(0.05)
    assert _failures(second.url, "checkpoint") == 0
    _assert_uninterrupted(bodies, after)


def test_published_weights_the_database_refuses_are_stored_after_a_kill_9(
    database_url: str, spawn_coordinator: Callable[..., SpawnedCoordinator]
) -> None:
    """A version is published before its weights are written (the write was most of the
    time to publication on a slower machine). While PostgreSQL refuses that write, the
    process that folded the version serves it from memory, /healthz and /metrics say so,
    and no later Adam state drops the results that rebuild it. Killed then, the next
    coordinator answers a clear 503 for those weights until it can store them, then
    serves the same bytes and folds on exactly what an uninterrupted one would."""
    first, token = _start_local_run(
        database_url, spawn_coordinator, "refuse_weights CHECK (weights IS NULL OR iteration < 2) "
        "NOT VALID",
    )  # fmt: skip
    bodies: list[bytes] = []
    with api_client(first.url, token) as worker:
        _fold(worker, 0, bodies)
        served = {2: _fold(worker, 1, bodies), 3: _fold(worker, 2, bodies)}  # from memory
    deadline = time.monotonic() + 30
    while (health := httpx.get(first.url + "/healthz")).status_code == 200:
        assert time.monotonic() < deadline, first.log()
        time.sleep(0.05)
    assert "refuse_weights" in health.json()["problem"]
    assert _failures(first.url, "weights") >= 1
    stored = "SELECT iteration FROM run_states WHERE weights IS NOT NULL ORDER BY 1"
    assert [r["iteration"] for r in asyncio.run(fetch(database_url, stored))] == [0, 1]
    kept = "SELECT count(*) AS n FROM results WHERE body IS NOT NULL"
    assert asyncio.run(fetch(database_url, kept))[0]["n"] == 3  # no Adam state dropped them
    first.kill()

    second = spawn_coordinator(
        database_url, args=("--log-level", "info"), degraded=True, **EVERY_SECOND
    )
    with api_client(second.url, token) as worker:
        pending = worker.get("/weights/2")  # after waiting for them a while
        assert pending.status_code == 503, pending.text
        assert pending.json()["code"] == "weights_pending"
        assert pending.headers["Retry-After"] == "1"
        asyncio.run(fetch(database_url, "ALTER TABLE run_states DROP CONSTRAINT refuse_weights"))
        assert wait_for_version(worker, 2) == served[2]
        assert worker.get("/weights/3").content == served[3]
        after = _fold(worker, 3, bodies)
    assert "replayed versions 1 to 3 from their results and stored the weights of [2, 3]" in (
        second.log()
    )
    assert httpx.get(second.url + "/healthz").json() == {"status": "ok"}
    _assert_uninterrupted(bodies, after)
