"""429 with Retry-After: registrations per client address and each worker's requests.

The limits are tightened here (a burst of 3) so that a test can cross them; the
defaults and why they are what they are: coordinator_service/rate_limits.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import httpx

from shared.protocol import API_PREFIX
from tests.conftest import NARROW_RUN, RunningCoordinator
from tests.coordinator_service.helpers import claim, database_fingerprint


def _register(client: httpx.Client, coordinator: RunningCoordinator, name: str,
              join_code: str | None = None) -> httpx.Response:  # fmt: skip
    body = {"join_code": join_code or coordinator.join_code, "name": name}
    return client.post("/workers", json=body)


def _assert_limited(response: httpx.Response) -> int:
    """A 429 in the project's error body; returns its Retry-After."""
    assert response.status_code == 429, response.text
    body = response.json()
    assert body["code"] == "rate_limited" and isinstance(body["detail"], str)
    retry_after = int(response.headers["retry-after"])
    assert retry_after >= 1
    return retry_after


def test_registrations_are_limited_per_address(
    coordinator_factory: Callable[..., RunningCoordinator],
) -> None:
    coordinator = coordinator_factory(registrations_per_minute=1, registration_burst=3)
    here = coordinator.client()
    for i in range(3):
        assert _register(here, coordinator, f"s{i}").status_code == 201
    before = asyncio.run(database_fingerprint(coordinator.database_url))
    assert _assert_limited(_register(here, coordinator, "s3")) == 60  # one a minute
    # A guess at the join code is throttled too, before the code is even looked at.
    _assert_limited(_register(here, coordinator, "mallory", join_code="guess-0001"))
    assert asyncio.run(database_fingerprint(coordinator.database_url)) == before
    # Another address (127.0.0.2 is loopback too, on Linux) has a bucket of its own.
    other = httpx.Client(
        base_url=coordinator.api, transport=httpx.HTTPTransport(local_address="127.0.0.2")
    )
    with other:
        assert _register(other, coordinator, "t0").status_code == 201


def test_each_worker_has_its_own_request_budget(
    coordinator_factory: Callable[..., RunningCoordinator],
) -> None:
    coordinator = coordinator_factory(worker_requests_per_second=2, worker_request_burst=3)
    ada = coordinator.client(coordinator.register("ada"))
    bob = coordinator.client(coordinator.register("bob"))
    coordinator.start_run(**NARROW_RUN, units_per_step=4)
    for _ in range(3):
        assert ada.post("/workers/me/heartbeat").status_code == 200
    before = asyncio.run(database_fingerprint(coordinator.database_url))
    # The claim would write a lease, the read is a weights download: neither happens.
    _assert_limited(ada.post("/work-units/claim", json={"cached_shards": []}))
    _assert_limited(ada.get("/weights/0"))
    assert asyncio.run(database_fingerprint(coordinator.database_url)) == before
    assert claim(bob) is not None  # bob's budget is his own
    # The instructor is not a worker: no worker budget is spent on the admin token.
    admin = coordinator.admin()
    assert all(admin.get("/weights/0").status_code == 200 for _ in range(5))
    paths = ada.get(coordinator.url + "/openapi.json").json()["paths"]
    for path, verb in (("/work-units/claim", "post"), ("/workers", "post"),
                       ("/weights/{iteration}", "get")):  # fmt: skip
        documented = paths[API_PREFIX + path][verb]["responses"]["429"]
        assert "rate_limited" in documented["description"]
        assert "Retry-After" in documented["headers"]
