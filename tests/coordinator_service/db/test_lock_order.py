"""One lock order everywhere: claims, uploads, heartbeats, revocations and steps at once.

Every transaction that locks rows of several tables locks them in the order written
in docs/coordinator.md (run lock, leases, work units, results, spot checks, workers).
Two transactions taking two rows in opposite orders deadlock, and PostgreSQL then
aborts one of them: a heartbeat answered 500, or a step thrown away and computed
again. Here six workers claim two units each, upload one, heartbeat without pause and
upload the other late, while a short step timeout makes steps commit with leases still
out (so a step ends leases that heartbeats are extending) and the instructor revokes
two workers midway. PostgreSQL's own deadlock counter must not move, and no request
may be answered 5xx.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Callable

import httpx
import pytest

from shared.protocol import WorkUnit
from tests.conftest import NARROW_RUN, RunningCoordinator
from tests.coordinator_service.helpers import fake_body, fetch, upload

SECONDS = 12.0


@pytest.fixture
def coordinator(coordinator_factory: Callable[..., RunningCoordinator]) -> RunningCoordinator:
    return coordinator_factory(
        worker_requests_per_second=0, sample_every=0, sample_seconds=0, pool_max_size=20
    )


def _deadlocks(coordinator: RunningCoordinator) -> int:
    rows = asyncio.run(fetch(
        coordinator.database_url,
        "SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()",
    ))  # fmt: skip
    return int(rows[0]["deadlocks"])


def test_concurrent_requests_and_steps_never_deadlock(coordinator: RunningCoordinator) -> None:
    names = [f"w{i}" for i in range(6)]
    clients = {name: coordinator.client(coordinator.register(name)) for name in names}
    coordinator.start_run(**NARROW_RUN, units_per_step=4, step_timeout=0.2)
    before = _deadlocks(coordinator)
    statuses: Counter[int] = Counter()
    lock = threading.Lock()
    stop = time.monotonic() + SECONDS

    def record(response: httpx.Response) -> None:
        with lock:
            statuses[response.status_code] += 1

    def claim(client: httpx.Client) -> WorkUnit | None:
        response = client.post("/work-units/claim", json={"cached_shards": []})
        record(response)
        return WorkUnit.model_validate(response.json()) if response.status_code == 200 else None

    def work(client: httpx.Client) -> None:
        while time.monotonic() < stop:
            units = [u for u in (claim(client), claim(client)) if u is not None]
            if not units:
                time.sleep(0.02)
            for unit in units:
                record(upload(client, unit, fake_body(unit)))
                record(client.post("/workers/me/heartbeat"))

    def beat(client: httpx.Client) -> None:
        while time.monotonic() < stop:
            record(client.post("/workers/me/heartbeat"))

    threads = [
        threading.Thread(target=f, args=(c,)) for c in clients.values() for f in (work, beat)
    ]
    for thread in threads:
        thread.start()
    time.sleep(SECONDS / 2)
    admin = coordinator.admin()
    for name in names[-2:]:
        me = clients[name].get("/workers/me")
        record(me)
        if me.status_code == 200:
            record(admin.post(f"/admin/workers/{me.json()['worker_id']}/revoke"))
    for thread in threads:
        thread.join()

    assert _deadlocks(coordinator) == before
    assert not [status for status in statuses if status >= 500], statuses
    assert set(statuses) <= {200, 204, 403, 409}, statuses
    steps = asyncio.run(fetch(coordinator.database_url, "SELECT count(*) AS n FROM history"))
    assert steps[0]["n"] >= 5, statuses
