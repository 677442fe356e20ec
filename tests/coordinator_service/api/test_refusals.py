"""Every bad request is refused with the right status and code, and changes nothing."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import httpx
import pytest
import torch

from shared.codec import encode_result
from tests.conftest import NARROW_RUN, RunningCoordinator
from tests.coordinator_service.helpers import (
    claim,
    database_fingerprint,
    fake_body,
    fake_result,
    sampled_through,
    upload,
)


def assert_refused_unchanged(
    coordinator: RunningCoordinator, request: Callable[[], httpx.Response], status: int, code: str
) -> None:
    before = asyncio.run(database_fingerprint(coordinator.database_url))
    response = request()
    assert response.status_code == status, response.text
    body = response.json()
    assert body["code"] == code and isinstance(body["detail"], str)
    assert asyncio.run(database_fingerprint(coordinator.database_url)) == before


@pytest.fixture
def leased(coordinator: RunningCoordinator) -> tuple[httpx.Client, object]:
    worker = coordinator.client(coordinator.register("ada"))
    coordinator.start_run(**NARROW_RUN, units_per_step=10)
    unit = claim(worker)
    assert unit is not None
    return worker, unit


def test_auth_refusals(coordinator: RunningCoordinator, leased: tuple) -> None:
    _, unit = leased
    anonymous, stranger = coordinator.client(), coordinator.client("not-a-real-token")
    body = fake_body(unit)
    for client, code in ((anonymous, "not_authenticated"), (stranger, "invalid_token")):
        assert_refused_unchanged(
            coordinator, lambda c=client: c.post("/work-units/claim"), 401, code
        )
        assert_refused_unchanged(
            coordinator, lambda c=client: upload(c, unit, body), 401, code
        )
        assert_refused_unchanged(
            coordinator, lambda c=client: c.post("/workers/me/heartbeat"), 401, code
        )
    wrong_code = {"join_code": "wrong", "name": "mallory"}
    assert_refused_unchanged(
        coordinator, lambda: anonymous.post("/workers", json=wrong_code), 403, "invalid_join_code"
    )
    assert_refused_unchanged(
        coordinator, lambda: stranger.post("/admin/runs/current/stop"), 403, "not_admin"
    )
    bad_name = {"join_code": coordinator.join_code, "name": ""}
    assert_refused_unchanged(
        coordinator, lambda: anonymous.post("/workers", json=bad_name), 422, "invalid_request"
    )
    # PostgreSQL text and jsonb cannot hold NUL: 422, where the fuzzer once found a 500.
    for nul in ({"join_code": "a\x00b", "name": "mallory"},
                {"join_code": coordinator.join_code, "name": "eve",
                 "hardware": {"hostname": "h\x00st"}}):  # fmt: skip
        assert_refused_unchanged(
            coordinator, lambda n=nul: anonymous.post("/workers", json=n), 422,
            "invalid_request",
        )  # fmt: skip


def test_upload_refusals(coordinator: RunningCoordinator, leased: tuple) -> None:
    worker, unit = leased
    other = coordinator.client(coordinator.register("eve"))
    good = fake_body(unit)
    cases: list[tuple[Callable[[], httpx.Response], int, str]] = [
        (lambda: worker.post("/work-units/999999/result", content=good,
                             headers={"X-Lease-Id": unit.lease_id}), 404, "unknown_unit"),
        (lambda: upload(other, unit, good), 409, "lease_lost"),
        (lambda: upload(worker, unit, good, lease_id="not-a-uuid"), 409, "lease_lost"),
        (lambda: upload(worker, unit, b"\0" * (2 << 20)), 413, "result_too_large"),
        (lambda: upload(worker, unit, fake_body(unit, nan=True)), 422, "invalid_result"),
        (lambda: upload(worker, unit, b"not safetensors"), 422, "invalid_result"),
        (lambda: upload(worker, unit, b""), 422, "invalid_result"),
    ]  # fmt: skip
    wrong_shape = fake_result(unit)
    name = next(iter(wrong_shape.tensors))
    wrong_shape.tensors[name] = torch.zeros(3, 3)
    cases.append((lambda: upload(worker, unit, encode_result(wrong_shape)), 422, "invalid_result"))
    wrong_kind = fake_result(unit)
    wrong_kind.kind = "local_steps"
    cases.append((lambda: upload(worker, unit, encode_result(wrong_kind)), 422, "invalid_result"))
    wrong_count = fake_result(unit)
    wrong_count.num_samples += 1
    cases.append((lambda: upload(worker, unit, encode_result(wrong_count)), 422, "invalid_result"))
    for request, status, code in cases:
        assert_refused_unchanged(coordinator, request, status, code)
    assert upload(worker, unit, good).status_code == 200  # the lease survived all of that


def test_streamed_body_over_the_limit_is_413(
    coordinator: RunningCoordinator, leased: tuple
) -> None:
    worker, unit = leased

    def chunks() -> object:
        for _ in range(40):  # 2.5 MB without a Content-Length header
            yield b"\0" * 65536

    assert_refused_unchanged(
        coordinator,
        lambda: worker.post(f"/work-units/{unit.unit_id}/result", content=chunks(),
                            headers={"X-Lease-Id": unit.lease_id}),  # fmt: skip
        413,
        "result_too_large",
    )


def test_stale_iteration_is_409(coordinator: RunningCoordinator) -> None:
    a, b = (coordinator.client(coordinator.register(n)) for n in ("a", "b"))
    # Two units out for a step of two, then the step timeout steps with the one result in.
    # (Local steps: the next version draws new units; a synchronous G phase would repeat
    # fresh's unit first, see training/test_phase_faults.py.)
    coordinator.start_run(**NARROW_RUN, units_per_step=2, step_timeout=1.0,
                          result_kind="local_steps")  # fmt: skip
    old, fresh = claim(a), claim(b)
    assert old is not None and fresh is not None
    assert upload(b, fresh, fake_body(fresh)).status_code == 200
    deadline = time.monotonic() + 30
    while b.get("/status").json()["run"]["iteration"] < 1:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    sampled_through(b, 1)  # the version's grid is stored just after it
    assert_refused_unchanged(coordinator, lambda: upload(a, old, fake_body(old)), 409,
                             "stale_iteration")  # fmt: skip
    # its images went back to the pool when the step ended the lease
    units = [claim(a) for _ in range(2)]
    assert old.unit_id in {u.unit_id for u in units if u is not None}


def test_revoked_worker_is_403_and_its_pending_results_are_dropped(
    coordinator: RunningCoordinator, leased: tuple
) -> None:
    worker, unit = leased
    assert upload(worker, unit, fake_body(unit)).status_code == 200
    second = claim(worker)
    assert second is not None
    worker_id = worker.get("/workers/me").json()["worker_id"]
    revoked = coordinator.admin().post(f"/admin/workers/{worker_id}/revoke").json()
    assert revoked == {"worker_id": worker_id, "leases_ended": 1, "results_dropped": 1}
    status = worker.get("/status").json()
    assert status["results_waiting"] == 0 and status["units"]["done"] == 0
    for request in (lambda: worker.post("/work-units/claim"),
                    lambda: upload(worker, second, fake_body(second)),
                    lambda: worker.post("/workers/me/heartbeat")):  # fmt: skip
        assert_refused_unchanged(coordinator, request, 403, "worker_revoked")
    # both units are back in the pool for everybody else
    other = coordinator.client(coordinator.register("bob"))
    claimed = {u.unit_id for u in (claim(other) for _ in range(40)) if u is not None}
    assert {unit.unit_id, second.unit_id} <= claimed


def test_join_code_rotation(coordinator: RunningCoordinator) -> None:
    admin = coordinator.admin()
    assert admin.get("/admin/join-code").json()["join_code"] == coordinator.join_code
    new = admin.post("/admin/join-code/rotate").json()["join_code"]
    assert new != coordinator.join_code
    client = coordinator.client()
    old = client.post("/workers", json={"join_code": coordinator.join_code, "name": "late"})
    assert old.status_code == 403
    assert client.post("/workers", json={"join_code": new, "name": "late"}).status_code == 201
