"""The worker's client waits out a real coordinator's 429 as its Retry-After says.

A worker that treated 429 as an error would drop its unit; one that retried at once
would hammer the coordinator. The client sleeps the stated seconds and repeats the
call, logging one clear line each time.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import pytest

from shared.protocol import HardwareInfo
from tests.conftest import RunningCoordinator
from worker_client.api_client import CoordinatorClient


def test_client_waits_out_429_and_carries_on(
    coordinator_factory: Callable[..., RunningCoordinator], caplog: pytest.LogCaptureFixture
) -> None:
    coordinator = coordinator_factory(
        worker_requests_per_second=1, worker_request_burst=2,
        registrations_per_minute=60, registration_burst=1,
    )  # fmt: skip
    waits: list[float] = []

    def sleep(seconds: float) -> None:  # a real wait, recorded
        waits.append(seconds)
        time.sleep(seconds)

    caplog.set_level(logging.WARNING, logger="worker_client")
    with CoordinatorClient(coordinator.url, sleep=sleep) as client:
        client.register(coordinator.join_code, "ada", HardwareInfo())
        # The second registration finds the address's bucket empty: waited, then done.
        answer = client.register(coordinator.join_code, "bob", HardwareInfo())
        client.token = answer.token
        beats = [client.heartbeat() for _ in range(4)]  # 2 at once, then 1 a second
    assert [b.worker_id for b in beats] == [answer.worker_id] * 4
    assert waits == [1.0, 1.0, 1.0]  # what each Retry-After said, no more, no less
    lines = [r.getMessage() for r in caplog.records if "slow down" in r.getMessage()]
    assert len(lines) == 3
    assert "waiting 1 s as its Retry-After says, then sending POST /api/v1/workers" in lines[0]
    assert "POST /api/v1/workers/me/heartbeat" in lines[1]
