"""Heartbeats paced by the seconds the coordinator states, whatever the laptop's clock says.

Before, the worker compared its wall clock with the server's ``lease_deadline``: a
laptop two hours ahead saw every lease as expired and beat every 0.5 s. Here the
heartbeat's clock is a wall clock two hours ahead, against a real coordinator with
3-second leases: it must beat once a second (a third of the lease) and keep the lease
alive, and a wrong comparison would show as six beats a second.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from tests.conftest import NARROW_RUN, RunningCoordinator
from tests.coordinator_service.helpers import fetch
from worker_client.api_client import CoordinatorClient
from worker_client.heartbeat import Heartbeat

LEASE = 3.0
SKEW = 7200.0  # this "laptop" is two hours ahead


def test_skewed_wall_clock_beats_at_a_third_of_the_lease(
    coordinator_factory: Callable[..., RunningCoordinator],
) -> None:
    coordinator = coordinator_factory()
    token = coordinator.register("ada")
    coordinator.start_run(**NARROW_RUN, lease_seconds=LEASE, backup_after_seconds=1000.0)
    with CoordinatorClient(coordinator.url, token=token) as client:
        unit = client.claim()
        assert unit is not None
        # The coordinator states the duration itself (its clock, its arithmetic).
        assert LEASE - 1.0 < unit.lease_seconds_left <= LEASE
        heartbeat = Heartbeat(client.heartbeat, max_interval=15.0,
                              clock=lambda: time.time() + SKEW)  # fmt: skip
        heartbeat.start()
        try:
            heartbeat.hold(unit.lease_seconds_left)
            time.sleep(3 * LEASE)  # three leases long: the lease lives only by the beats
            beats = heartbeat.beats
            answer = client.heartbeat()
        finally:
            heartbeat.stop()
    # One beat per LEASE / 3 = 1 s: about 9 in 9 s (a 0.5 s pace would give 18).
    assert 6 <= beats <= 11, beats
    assert answer.leases_extended == 1  # the lease never lapsed
    assert answer.lease_seconds_left is not None
    assert LEASE - 1.0 < answer.lease_seconds_left <= LEASE
    rows = asyncio.run(fetch(coordinator.database_url,
                             "SELECT status FROM leases WHERE lease_id = $1::uuid",
                             unit.lease_id))  # fmt: skip
    assert [r["status"] for r in rows] == ["active"]
