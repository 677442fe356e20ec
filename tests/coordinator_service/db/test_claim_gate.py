"""A burst of claims leases exactly the units a step needs, no more.

When a version is published, every worker waiting in a long-polling claim wakes at
once. A unit leased beyond ``units_per_step`` is computed against weights that the
step replaces before its result arrives: it comes back 409 stale, a student's work
thrown away. The count of results and leases and the lease itself must therefore be
atomic across concurrent claims, not two statements each claim runs on its own.
"""

from __future__ import annotations

import asyncio
import threading

import httpx

from shared.protocol import LEASE_HEADER
from tests.conftest import NARROW_RUN, RunningCoordinator
from tests.coordinator_service.helpers import fetch

WORKERS = 12


def test_simultaneous_claims_lease_only_what_the_step_needs(
    coordinator: RunningCoordinator,
) -> None:
    clients = [coordinator.client(coordinator.register(f"w{i}")) for i in range(WORKERS)]
    coordinator.start_run(**NARROW_RUN, units_per_step=3)
    start = threading.Barrier(WORKERS)
    answers: list[int] = []

    def claim(client: httpx.Client) -> None:
        start.wait()
        response = client.post("/work-units/claim", json={"cached_shards": []})
        answers.append(response.status_code)

    for trial in range(3):  # each trial a fresh burst: every earlier lease given back
        answers.clear()
        threads = [threading.Thread(target=claim, args=(c,)) for c in clients]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(answers) == [200] * 3 + [204] * (WORKERS - 3), (trial, answers)
        _release_all(coordinator, clients)


def _release_all(coordinator: RunningCoordinator, clients: list[httpx.Client]) -> None:
    """Give back every active lease through the API, as quitting workers do."""
    rows = asyncio.run(fetch(
        coordinator.database_url,
        "SELECT l.lease_id, l.unit_id, w.name FROM leases l JOIN workers w USING (worker_id) "
        "WHERE l.status = 'active'",
    ))  # fmt: skip
    by_name = {f"w{i}": c for i, c in enumerate(clients)}
    for row in rows:
        released = by_name[row["name"]].post(
            f"/work-units/{row['unit_id']}/release", headers={LEASE_HEADER: str(row["lease_id"])}
        )
        assert released.status_code == 200, released.text
