"""A coordinator killed with SIGKILL between accepting results and stepping loses nothing."""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

from coordinator_service.training import engine
from shared.codec import decode_result, decode_snapshot
from shared.models import ModelConfig, StateSpec
from shared.protocol import RunConfig
from tests.conftest import NARROW_RUN, TEST_ADMIN_TOKEN, TEST_JOIN_CODE, SpawnedCoordinator
from tests.coordinator_service.helpers import api_client, claim, fake_body, upload

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
