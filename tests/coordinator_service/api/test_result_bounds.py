"""Results out of bounds are refused and change nothing; a bad stored state is shown.

The issue this answers, measured by a black-box client: one accepted gradient holding a
single finite 1e30 froze a weight for good; a running_var of -1 turned every later grid
black; a float16 body was accepted on a float32 run; a stored state holding Inf made
the aggregator loop silently while /healthz said ok; three simultaneous uploads of one
lease got one 200 and two 409s.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time

import httpx
import pytest
import torch

from shared.codec import decode_snapshot, encode_result, encode_snapshot
from shared.models import StateSpec
from shared.protocol import WorkUnit
from tests.conftest import NARROW_RUN, RunningCoordinator
from tests.coordinator_service.api.test_refusals import assert_refused_unchanged
from tests.coordinator_service.helpers import (
    claim,
    fake_result,
    fetch,
    model_config,
    upload,
)


@pytest.fixture
def worker(coordinator: RunningCoordinator) -> httpx.Client:
    """A worker of a narrow run whose first step needs ten results (none steps early)."""
    client = coordinator.client(coordinator.register("ada"))
    coordinator.start_run(**NARROW_RUN, units_per_step=10)
    return client


def _claim(worker: httpx.Client) -> WorkUnit:
    unit = claim(worker)
    assert unit is not None
    return unit


def _weights_digest(coordinator: RunningCoordinator) -> str:
    rows = asyncio.run(fetch(coordinator.database_url, "SELECT weights FROM run_states"))
    return hashlib.sha256(b"".join(r["weights"] for r in rows)).hexdigest()


def test_a_finite_1e30_is_refused(coordinator: RunningCoordinator, worker: httpx.Client) -> None:
    unit = _claim(worker)
    result = fake_result(unit)
    next(iter(result.tensors.values())).view(-1)[0] = 1e30
    before = _weights_digest(coordinator)
    assert_refused_unchanged(
        coordinator, lambda: upload(worker, unit, encode_result(result)), 422,
        "result_out_of_bounds",
    )  # fmt: skip
    assert _weights_digest(coordinator) == before
    assert upload(worker, unit, encode_result(fake_result(unit))).status_code == 200


@pytest.mark.parametrize(
    ("suffix", "value", "why"),
    [("running_var", -1.0, "(0, "), ("running_var", 0.0, "(0, "),
     ("running_mean", 1e30, "within")],
)  # fmt: skip
def test_invalid_batchnorm_statistics_are_refused(
    coordinator: RunningCoordinator, worker: httpx.Client, suffix: str, value: float, why: str
) -> None:
    unit = _claim(worker)
    result = fake_result(unit)
    name = next(k for k in result.buffers if k.endswith(suffix))
    result.buffers[name].view(-1)[0] = value
    before = asyncio.run(fetch(coordinator.database_url, "SELECT count(*) AS n FROM results"))
    response = upload(worker, unit, encode_result(result))
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "result_out_of_bounds"
    assert name in response.json()["detail"] and why in response.json()["detail"]
    after = asyncio.run(fetch(coordinator.database_url, "SELECT count(*) AS n FROM results"))
    assert after[0]["n"] == before[0]["n"] == 0


def test_another_wire_dtype_is_refused(
    coordinator: RunningCoordinator, worker: httpx.Client
) -> None:
    unit = _claim(worker)
    body = encode_result(fake_result(unit), torch.float16)
    assert_refused_unchanged(coordinator, lambda: upload(worker, unit, body), 422, "invalid_result")
    assert "dtype F16" in upload(worker, unit, body).json()["detail"]


def test_norms_far_past_the_recent_median_are_refused(
    coordinator: RunningCoordinator, worker: httpx.Client
) -> None:
    """Eight honest-looking results make the median; then x1000 is refused, x3 is not."""
    units = [_claim(worker) for _ in range(10)]
    for seed, unit in enumerate(units[:8]):
        assert upload(worker, units[seed], encode_result(fake_result(unit, seed=seed))).is_success
    attacker = fake_result(units[8], seed=8)
    for tensor in attacker.tensors.values():
        tensor.mul_(1000)
    assert_refused_unchanged(
        coordinator, lambda: upload(worker, units[8], encode_result(attacker)), 422,
        "result_out_of_bounds",
    )  # fmt: skip
    detail = upload(worker, units[8], encode_result(attacker)).json()["detail"]
    assert "the global norm" in detail and "median of the run's last 8" in detail
    # One tensor alone scaled: the per-tensor bound catches what the global one would not.
    lone = fake_result(units[9], seed=9)
    # The smallest tensor: x1000 moves the global norm far less than 100 times.
    name = min(lone.tensors, key=lambda k: lone.tensors[k].numel())
    lone.tensors[name].mul_(1000)
    response = upload(worker, units[9], encode_result(lone))
    assert response.status_code == 422 and f"tensor {name!r}'s norm" in response.json()["detail"]
    honest = fake_result(units[8], seed=8)
    for tensor in honest.tensors.values():
        tensor.mul_(3)
    assert upload(worker, units[8], encode_result(honest)).status_code == 200
    norms = asyncio.run(fetch(coordinator.database_url, "SELECT norms FROM results"))
    assert len(norms) == 9 and all(len(r["norms"]) == 1 + len(honest.tensors) for r in norms)


def test_simultaneous_repeats_of_one_upload_all_get_its_answer(
    coordinator: RunningCoordinator, worker: httpx.Client
) -> None:
    """Three threads post the same result on one lease at once: all three 200, one counted."""
    for trial in range(3):
        unit = _claim(worker)
        body = encode_result(fake_result(unit))
        clients = [coordinator.client(worker.headers["Authorization"][7:]) for _ in range(3)]
        barrier = threading.Barrier(len(clients))
        answers: list[httpx.Response] = []

        def post(client: httpx.Client, unit: WorkUnit, body: bytes,
                 barrier: threading.Barrier, answers: list[httpx.Response]) -> None:  # fmt: skip
            barrier.wait()
            answers.append(upload(client, unit, body))

        threads = [
            threading.Thread(target=post, args=(c, unit, body, barrier, answers)) for c in clients
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert [a.status_code for a in answers] == [200, 200, 200], [a.text for a in answers]
        bodies = [a.json() for a in answers]
        assert sorted(b["duplicate"] for b in bodies) == [False, True, True]
        assert len({(b["unit_id"], b["iteration"], b["num_samples"]) for b in bodies}) == 1
        rows = asyncio.run(
            fetch(coordinator.database_url, "SELECT count(*) AS n FROM results")
        )
        assert rows[0]["n"] == trial + 1


def test_a_stored_state_holding_inf_shows_on_healthz_and_the_dashboard(
    coordinator: RunningCoordinator, worker: httpx.Client
) -> None:
    """The aggregator cannot load it: it publishes nothing and says why, instead of
    looping silently while /healthz says ok."""
    units = [_claim(worker) for _ in range(10)]
    spec = StateSpec.from_config(model_config(units[0]))
    stored = asyncio.run(fetch(coordinator.database_url, "SELECT checkpoint FROM run_states"))
    snapshot = decode_snapshot(stored[0]["checkpoint"], spec)
    assert snapshot.optimizer is not None
    name = next(iter(snapshot.optimizer.exp_avg_sq))
    snapshot.optimizer.exp_avg_sq[name].view(-1)[0] = float("inf")
    broken = encode_snapshot(0, snapshot.weights, snapshot.optimizer)
    asyncio.run(fetch(coordinator.database_url, "UPDATE run_states SET checkpoint = $1", broken))
    anonymous = httpx.Client(base_url=coordinator.url, timeout=10)
    assert anonymous.get("/healthz").json() == {"status": "ok"}
    for unit in units:
        assert upload(worker, unit, encode_result(fake_result(unit))).status_code == 200
    deadline = time.monotonic() + 60
    while (health := anonymous.get("/healthz")).status_code == 200:
        assert time.monotonic() < deadline, "the aggregator never reported the problem"
        time.sleep(0.1)
    assert health.status_code == 503
    assert health.json()["status"] == "degraded"
    assert "NaN or Inf" in health.json()["problem"] and name in health.json()["problem"]
    status = worker.get("/status").json()
    assert status["run"]["problem"] == health.json()["problem"]
    assert status["iteration"] == 0  # nothing was published from the broken state
    assert worker.get("/weights/1").status_code == 404


def test_a_state_is_unsafe_exactly_when_a_value_is_nan_or_inf() -> None:
    """The check sums each tensor first: a sum that overflows must not condemn finite
    values, and infinities of both signs (a NaN sum) must still be found."""
    from coordinator_service.training.result_bounds import state_problem

    big = torch.full((4,), 3e38)  # finite; its sum is +Inf in float32
    assert state_problem({"w": big, "v": torch.ones(3)}) is None
    for bad in (float("nan"), float("inf"), -float("inf")):
        tensor = torch.ones(5)
        tensor[2] = bad
        assert state_problem({"w": big, "v": tensor}) == "'v' would hold NaN or Inf values"
    both = torch.tensor([float("inf"), -float("inf"), 1.0])
    assert state_problem({"w": both}) == "'w' would hold NaN or Inf values"
    assert state_problem({"n": torch.tensor([7, 8])}) is None  # integers cannot be either
