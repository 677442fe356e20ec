"""Integers beyond their columns are the documented 422 before any SQL, not asyncpg's 500.

A black-box client measured 500s (and a 90-line traceback each) for these very requests:
asyncpg refuses a Python int that does not fit an int4 or int8 column.
"""

from __future__ import annotations

import asyncio

import pytest

from coordinator_service.api.params import INT4_MAX, INT8_MAX
from tests.conftest import NARROW_RUN, RunningCoordinator
from tests.coordinator_service.helpers import database_fingerprint


@pytest.mark.parametrize(
    ("method", "path", "auth"),
    [
        ("GET", f"/weights/{INT4_MAX + 1}", "worker"),
        ("GET", "/weights/-1", "worker"),
        ("GET", f"/weights/0?run_id={INT8_MAX + 1}", "worker"),
        ("GET", "/samples/99999999999999999999.png", None),
        ("GET", f"/history?since={INT4_MAX + 1}", None),
        ("GET", "/samples?run_id=0", None),
        ("GET", f"/runs/{INT8_MAX + 1}", None),
        ("GET", f"/dataset/shards/{INT4_MAX + 1}", "worker"),
        ("POST", f"/work-units/{INT8_MAX + 1}/result", "worker"),
        ("POST", f"/work-units/{INT8_MAX + 1}/release", "worker"),
        ("POST", f"/admin/workers/{INT8_MAX + 1}/revoke", "admin"),
    ],
)
def test_out_of_range_integers_are_invalid_requests(
    coordinator: RunningCoordinator, method: str, path: str, auth: str | None
) -> None:
    """422 ``invalid_request`` with the documented body, and the database untouched."""
    token = {"worker": coordinator.register(), "admin": coordinator.admin_token}.get(auth or "")
    coordinator.start_run(**NARROW_RUN)
    client = coordinator.client(token)
    before = asyncio.run(database_fingerprint(coordinator.database_url))
    lease = {"X-Lease-Id": "00000000-0000-0000-0000-000000000000"}
    response = client.request(method, path, headers=lease)
    assert response.status_code == 422, response.text
    assert set(response.json()) == {"detail", "code"}
    assert response.json()["code"] == "invalid_request"
    assert asyncio.run(database_fingerprint(coordinator.database_url)) == before


def test_largest_values_in_range_reach_the_route(coordinator: RunningCoordinator) -> None:
    """The bounds are the columns' own: their largest values are looked up and not found."""
    coordinator.start_run(**NARROW_RUN)
    client = coordinator.client(coordinator.register())
    assert client.get(f"/weights/{INT4_MAX}").json()["code"] == "unknown_iteration"
    assert client.get(f"/runs/{INT8_MAX}").json()["code"] == "unknown_run"
    assert client.get(f"/history?since={INT4_MAX}").json() == []


def test_body_that_is_not_json_text_is_an_invalid_request(coordinator: RunningCoordinator) -> None:
    """Bytes that are not UTF-8 were FastAPI's undocumented 400; now the documented 422."""
    client = coordinator.client()
    json_type = {"Content-Type": "application/json"}
    for body in (b"\xff\xfe{", b"{"):
        response = client.post("/workers", content=body, headers=json_type)
        assert response.status_code == 422, response.text
        assert response.json()["code"] == "invalid_request"
        assert set(response.json()) == {"detail", "code"}
