"""Worker threads that keep a class's coordinator busy, and what must hold afterwards.

Used where API processes come and go under a class at work (several processes on one
database, replicas behind Caddy): each thread claims and uploads fake results as
gan-worker would, and `assert_nothing_lost_or_counted_twice` checks the database.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any
from uuid import uuid4

import httpx

from shared.protocol import API_PREFIX, WorkUnit
from tests.conftest import NARROW_RUN
from tests.coordinator_service.helpers import fake_body, fetch, upload

# Two units per step, no backup copies and no step timeout: every lease of a unit at a
# version is a double, so `assert_nothing_lost_or_counted_twice` can check for overlaps.
NO_BACKUPS_RUN = {**NARROW_RUN, "units_per_step": 2, "step_timeout": 3600,
                  "backup_after_seconds": 3600}  # fmt: skip

# What a proxy answers while the process behind it is gone or going.
_PROXY_GAVE_UP = {502, 503, 504}


class FakeClass:
    """One thread per token, each claiming (``wait`` 2 s) and uploading through
    ``urls[i % len(urls)]`` until the ``with`` block ends. As gan-worker does, a request
    that reached no process (a dead socket, or a proxy's 502-504) is sent again, to the
    next URL, a claim with its claim id: repeating one is safe. ``accepted`` holds the
    lease ids answered 200, ``errors`` whatever went wrong in a thread."""

    def __init__(self, urls: list[str], tokens: list[str], verify: Any = True) -> None:
        self.urls, self.tokens, self.verify = urls, tokens, verify
        self.accepted: list[str] = []
        self.errors: list[BaseException] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._work, args=(i,)) for i in range(len(tokens))]

    def __enter__(self) -> FakeClass:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)

    def wait_until(self, condition: Callable[[], bool], what: str, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            assert not self.errors, self.errors
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            time.sleep(0.1)

    def _work(self, i: int) -> None:
        which = i % len(self.urls)
        headers = {"Authorization": f"Bearer {self.tokens[i]}"}
        clients = [
            httpx.Client(base_url=url + API_PREFIX, headers=headers, timeout=60, verify=self.verify)
            for url in self.urls
        ]

        def call(send: Callable[[httpx.Client], httpx.Response]) -> httpx.Response:
            nonlocal which
            for _ in range(20):
                try:
                    response = send(clients[which])
                    if response.status_code not in _PROXY_GAVE_UP:
                        return response
                except httpx.TransportError:
                    pass
                which = (which + 1) % len(clients)
                time.sleep(0.2)
            raise AssertionError("no process answers")

        try:
            while not self._stop.is_set():
                asked = {"cached_shards": [], "claim_id": str(uuid4())}
                response = call(lambda c, a=asked: c.post(
                    "/work-units/claim", params={"wait": 2}, json=a
                ))  # fmt: skip
                if response.status_code == 204:
                    continue
                assert response.status_code == 200, response.text
                unit = WorkUnit.model_validate(response.json())
                body = fake_body(unit)
                answer = call(lambda c, u=unit, b=body: upload(c, u, b))
                if answer.status_code == 200:
                    self.accepted.append(unit.lease_id)
                else:  # the step went on without it: the unit is back in the pool
                    assert answer.status_code == 409, answer.text
        except BaseException as exc:  # noqa: BLE001 - reported by the test thread
            self.errors.append(exc)
        finally:
            for client in clients:
                client.close()


def assert_nothing_lost_or_counted_twice(database_url: str, accepted: list[str]) -> None:
    """Every result answered 200 is stored, none twice per unit and version; history,
    consumed results and workers' credit agree; no unit was leased twice at once
    (for runs without backup copies or spot checks)."""
    results = asyncio.run(fetch(
        database_url, "SELECT lease_id::text AS lease_id, unit_id, iteration FROM results",
    ))  # fmt: skip
    assert set(accepted) <= {r["lease_id"] for r in results}
    per_unit_version = [(r["unit_id"], r["iteration"]) for r in results]
    assert len(per_unit_version) == len(set(per_unit_version))
    folded = asyncio.run(fetch(
        database_url,
        "SELECT (SELECT coalesce(sum(num_results), 0) FROM history) AS in_history, "
        "(SELECT count(*) FROM results WHERE consumed_at IS NOT NULL) AS consumed, "
        "(SELECT coalesce(sum(total_work_units), 0) FROM workers) AS credited",
    ))[0]  # fmt: skip
    assert folded["in_history"] == folded["consumed"] == folded["credited"] > 0, dict(folded)
    overlapping = asyncio.run(fetch(
        database_url,
        "SELECT count(*) AS n FROM leases a JOIN leases b "
        "ON a.unit_id = b.unit_id AND a.lease_id < b.lease_id "
        "WHERE tstzrange(a.created_at, coalesce(a.ended_at, 'infinity')) "
        "&& tstzrange(b.created_at, coalesce(b.ended_at, 'infinity'))",
    ))[0]["n"]  # fmt: skip
    assert overlapping == 0
