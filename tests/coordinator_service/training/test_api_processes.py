"""Several API processes over one database, as `serve --workers N` or replicas run them.

Each process answers claims and uploads and runs an aggregator task, and only the one
holding the advisory lock steps. What must hold: a version committed in one process
wakes the claims waiting in the others, no unit is leased twice and no result counted
twice, and when the leading process is killed another one takes over the stepping with
nothing accepted lost.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from collections.abc import Callable

from coordinator_service.training.aggregator import ADVISORY_LOCK_KEY
from tests.conftest import TEST_ADMIN_TOKEN, TEST_JOIN_CODE, SpawnedCoordinator
from tests.coordinator_service.fake_class import (
    NO_BACKUPS_RUN,
    FakeClass,
    assert_nothing_lost_or_counted_twice,
)
from tests.coordinator_service.helpers import api_client, claim, fake_body, fetch, upload


def _leader_pid(database_url: str, *, other_than: int | None = None) -> int:
    """The OS process whose aggregator holds the lock (its connections' application_name);
    with ``other_than``, once a process other than that one holds it."""
    high, low = ADVISORY_LOCK_KEY >> 32, ADVISORY_LOCK_KEY & 0xFFFFFFFF
    deadline = time.monotonic() + 60
    while True:
        rows = asyncio.run(fetch(
            database_url,
            "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a USING (pid) "
            "WHERE l.locktype = 'advisory' AND l.granted AND l.classid = $1 AND l.objid = $2 "
            "AND l.objsubid = 1",
            high, low,
        ))  # fmt: skip
        if rows:
            name = rows[0]["application_name"]  # gan-coordinator[PID]
            pid = int(name[name.index("[") + 1 : -1])
            if pid != other_than:
                return pid
        assert time.monotonic() < deadline, "no (other) aggregator took the lock"
        time.sleep(0.1)


def _register(url: str, name: str) -> str:
    with api_client(url) as anon:
        response = anon.post("/workers", json={"join_code": TEST_JOIN_CODE, "name": name})
        assert response.status_code == 201, response.text
        return str(response.json()["token"])


def _start_run(url: str) -> None:
    with api_client(url, TEST_ADMIN_TOKEN) as admin:
        response = admin.post("/admin/runs", json={"config": NO_BACKUPS_RUN})
        assert response.status_code == 201, response.text


def _version(url: str) -> int:
    with api_client(url) as anon:
        return int(anon.get("/status").json()["run"]["iteration"])


def test_a_version_committed_by_one_process_wakes_claims_waiting_in_another(
    database_url: str, spawn_coordinator: Callable[..., SpawnedCoordinator]
) -> None:
    processes = [spawn_coordinator(database_url), spawn_coordinator(database_url)]
    leader = _leader_pid(database_url)
    (follower,) = [p for p in processes if p.process.pid != leader]
    _start_run(follower.url)
    ada = api_client(follower.url, _register(follower.url, "ada"))
    bob = api_client(follower.url, _register(follower.url, "bob"))
    units = [claim(ada), claim(ada)]  # the step's two units: bob must wait for the next
    assert all(units)
    answer: list[tuple[int, float]] = []

    def wait_for_work() -> None:
        started = time.monotonic()
        response = bob.post("/work-units/claim", params={"wait": 30}, json={"cached_shards": []})
        answer.append((response.status_code, time.monotonic() - started))

    waiter = threading.Thread(target=wait_for_work)
    waiter.start()
    time.sleep(1.0)  # bob is waiting in the follower process
    for unit in units:
        assert unit is not None
        assert upload(ada, unit, fake_body(unit)).status_code == 200
    waiter.join(timeout=60)
    # Without the notification bob's claim would sleep out its 30 s: the follower's own
    # aggregator task never steps, so nothing in its process would wake the claim.
    [(status, seconds)] = answer
    assert status == 200 and seconds < 15, (status, seconds)
    assert _version(follower.url) == 1
    ada.close()
    bob.close()


def test_two_processes_share_the_work_and_the_aggregator_fails_over(
    database_url: str, spawn_coordinator: Callable[..., SpawnedCoordinator]
) -> None:
    processes = [spawn_coordinator(database_url), spawn_coordinator(database_url)]
    urls = [p.url for p in processes]
    _start_run(urls[0])
    tokens = [_register(urls[i % 2], f"w{i}") for i in range(4)]
    # Each worker starts on process i % 2; on a dead socket it switches, as a proxy would.
    with FakeClass(urls, tokens) as workers:
        workers.wait_until(lambda: _version(urls[0]) >= 4, "4 versions before the kill")
        leader = _leader_pid(database_url)
        (dead,) = [p for p in processes if p.process.pid == leader]
        (survivor,) = [p for p in processes if p is not dead]
        dead.kill()
        before = _version(survivor.url)
        assert _leader_pid(database_url, other_than=leader) == survivor.process.pid
        workers.wait_until(lambda: _version(survivor.url) >= before + 4, "4 more after it")
    assert not workers.errors, workers.errors
    assert_nothing_lost_or_counted_twice(database_url, workers.accepted)


def _wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 120
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_serve_workers_runs_several_processes_and_replaces_a_killed_one(
    database_url: str, spawn_coordinator: Callable[..., SpawnedCoordinator]
) -> None:
    parent = spawn_coordinator(database_url, args=("--workers", "2"))
    _start_run(parent.url)
    worker = api_client(parent.url, _register(parent.url, "ada"))

    def step_once() -> None:
        version = _version(parent.url)
        for _ in range(2):
            unit = claim(worker)
            assert unit is not None
            assert upload(worker, unit, fake_body(unit)).status_code == 200
        _wait_until(lambda: _version(parent.url) > version, "a step")

    step_once()
    # /healthz answers once one child is up; the other may still be importing torch.
    _wait_until(lambda: len(_api_processes(database_url)) == 2, "two API processes")
    assert parent.process.pid not in _api_processes(database_url)
    leader = _leader_pid(database_url)
    os.kill(leader, signal.SIGKILL)
    _leader_pid(database_url, other_than=leader)  # the other child steps now ...
    step_once()
    # ... and uvicorn's supervisor started a replacement for the killed one.
    _wait_until(lambda: len(_api_processes(database_url) - {leader}) == 2, "a new child")
    worker.close()
    parent.process.send_signal(signal.SIGTERM)
    assert parent.process.wait(timeout=30) == 0, parent.log()
    assert _api_processes(database_url) == set()


def _api_processes(database_url: str) -> set[int]:
    """The OS processes with connections to the database (gan-coordinator[PID])."""
    rows = asyncio.run(fetch(
        database_url,
        "SELECT DISTINCT application_name FROM pg_stat_activity "
        "WHERE datname = current_database() AND application_name LIKE 'gan-coordinator[%'",
    ))  # fmt: skip
    return {int(r["application_name"][len("gan-coordinator[") : -1]) for r in rows}


