"""Claims, leases, backups, repeats and releases against a real server and database."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from uuid import uuid4

import httpx
import pytest

from coordinator_service.publications import WAVE
from shared.protocol import WorkUnit
from tests.conftest import NARROW_RUN, RunningCoordinator
from tests.coordinator_service.helpers import claim, database_fingerprint, fake_body, fetch, upload
from tests.coordinator_service.test_dashboard_api import metric

TWENTY_UNITS = {**NARROW_RUN, "dataset": {"size": 320, "shard_size": 320}}  # 20 units of 16
ONE_UNIT = {**NARROW_RUN, "dataset": {"size": 16, "shard_size": 16}}


async def _claim_all(coordinator: RunningCoordinator, tokens: list[str]) -> list[httpx.Response]:
    async with httpx.AsyncClient(base_url=coordinator.api, timeout=60) as client:
        return list(await asyncio.gather(*(
            client.post("/work-units/claim", json={}, headers={"Authorization": f"Bearer {t}"})
            for t in tokens
        )))  # fmt: skip


def test_100_concurrent_claims_on_20_units_lease_each_once(
    coordinator: RunningCoordinator,
) -> None:
    tokens = [coordinator.register(f"w{i}") for i in range(100)]
    coordinator.start_run(**TWENTY_UNITS, units_per_step=20)
    responses = asyncio.run(_claim_all(coordinator, tokens))
    leased = [r.json() for r in responses if r.status_code == 200]
    assert sorted(r.status_code for r in responses) == [200] * 20 + [204] * 80
    assert len({u["unit_id"] for u in leased}) == 20
    rows = asyncio.run(fetch(
        coordinator.database_url,
        "SELECT unit_id, count(*) AS n FROM leases WHERE status = 'active' GROUP BY unit_id",
    ))  # fmt: skip
    assert len(rows) == 20 and all(r["n"] == 1 for r in rows)


def test_expired_lease_is_claimed_again_and_the_late_result_gets_409(
    coordinator: RunningCoordinator,
) -> None:
    slow, fast = (coordinator.client(coordinator.register(n)) for n in ("slow", "fast"))
    coordinator.start_run(**ONE_UNIT, lease_seconds=3)
    lost = claim(slow)
    assert lost is not None and claim(fast) is None  # the only unit is out
    time.sleep(3.5)
    again = claim(fast)
    assert again is not None and again.unit_id == lost.unit_id
    assert again.lease_id != lost.lease_id
    before = asyncio.run(database_fingerprint(coordinator.database_url))
    late = upload(slow, lost, fake_body(lost))
    assert late.status_code == 409 and late.json()["code"] == "lease_expired"
    assert asyncio.run(database_fingerprint(coordinator.database_url)) == before
    assert upload(fast, again, fake_body(again)).status_code == 200


def test_idle_worker_gets_a_backup_and_the_first_result_wins(
    coordinator: RunningCoordinator,
) -> None:
    a, b = (coordinator.client(coordinator.register(n)) for n in ("a", "b"))
    coordinator.start_run(**ONE_UNIT, backup_after_seconds=0.0, units_per_step=5)
    first = claim(a)
    backup = claim(b)
    assert first is not None and backup is not None
    assert backup.is_backup and backup.unit_id == first.unit_id
    assert claim(a) is None  # never a backup of your own lease, at most one backup
    assert upload(b, backup, fake_body(backup)).status_code == 200
    loser = upload(a, first, fake_body(first))
    assert loser.status_code == 409 and loser.json()["code"] == "unit_completed"


def test_a_repeat_upload_answers_as_the_first(coordinator: RunningCoordinator) -> None:
    worker = coordinator.client(coordinator.register())
    coordinator.start_run(**NARROW_RUN, units_per_step=10)
    unit = claim(worker)
    assert unit is not None
    body = fake_body(unit)
    first, again = upload(worker, unit, body), upload(worker, unit, body)
    assert first.status_code == again.status_code == 200
    assert {**first.json(), "duplicate": True} == again.json()
    rows = asyncio.run(fetch(coordinator.database_url, "SELECT count(*) AS n FROM results"))
    assert rows[0]["n"] == 1


# Synchronous claims queue at the step's gate; asynchronous ones race each other.
@pytest.mark.parametrize("mode", [{}, {"result_kind": "async_local_steps", "batch_size": 8}])
def test_a_repeated_claim_id_gets_the_lease_it_was_granted(
    coordinator: RunningCoordinator, mode: dict[str, str | int]
) -> None:
    ada, bob = (coordinator.client(coordinator.register(n)) for n in ("ada", "bob"))
    coordinator.start_run(**{**TWENTY_UNITS, **mode}, units_per_step=20)
    lost = str(uuid4())  # a claim whose answer never reached ada

    def claim_as(client: httpx.Client, claim_id: str) -> WorkUnit:
        response = client.post("/work-units/claim", json={"claim_id": claim_id})
        assert response.status_code == 200, response.text
        return WorkUnit.model_validate(response.json())

    first = claim_as(ada, lost)
    again = claim_as(ada, lost)
    assert (again.lease_id, again.unit_id, again.image_indices) == (
        first.lease_id, first.unit_id, first.image_indices
    )
    assert claim_as(ada, str(uuid4())).unit_id != first.unit_id  # a new claim: a new unit
    assert claim_as(bob, lost).unit_id != first.unit_id  # ids are per worker
    # Repeats racing each other and the original's answer: still one lease.
    racing = str(uuid4())
    with ThreadPoolExecutor(8) as pool:
        units = list(pool.map(lambda _: claim_as(ada, racing), range(8)))
    assert len({u.lease_id for u in units}) == 1
    # Once that lease has ended, its id leases afresh: the first answer was seen after all.
    assert upload(ada, first, fake_body(first)).status_code == 200
    assert claim_as(ada, lost).unit_id not in {first.unit_id, units[0].unit_id}
    rows = asyncio.run(fetch(
        coordinator.database_url,
        "SELECT w.name, count(*) AS n FROM leases l JOIN workers w USING (worker_id) "
        "WHERE l.status = 'active' GROUP BY w.name ORDER BY w.name",
    ))  # fmt: skip
    assert [(r["name"], r["n"]) for r in rows] == [("ada", 3), ("bob", 1)]


def test_release_puts_the_unit_back_and_heartbeat_extends_leases(
    coordinator: RunningCoordinator,
) -> None:
    worker = coordinator.client(coordinator.register())
    coordinator.start_run(**ONE_UNIT, lease_seconds=30)
    unit = claim(worker)
    assert unit is not None
    beat = worker.post("/workers/me/heartbeat").json()
    assert beat["leases_extended"] == 1
    assert beat["lease_deadline"] >= unit.lease_deadline.isoformat()
    released = worker.post(f"/work-units/{unit.unit_id}/release",
                           headers={"X-Lease-Id": unit.lease_id})  # fmt: skip
    assert released.status_code == 200 and released.json()["released"] is True
    again = claim(worker)
    assert again is not None and again.unit_id == unit.unit_id
    twice = worker.post(f"/work-units/{unit.unit_id}/release",
                        headers={"X-Lease-Id": unit.lease_id})  # fmt: skip
    assert twice.status_code == 409


def test_no_run_404_paused_204_stopped_410(coordinator: RunningCoordinator) -> None:
    worker = coordinator.client(coordinator.register())
    none = worker.post("/work-units/claim", json={})
    assert none.status_code == 404 and none.json()["code"] == "no_run"
    coordinator.start_run(**NARROW_RUN)
    admin = coordinator.admin()
    assert admin.post("/admin/runs", json={}).json()["code"] == "run_active"
    assert admin.post("/admin/runs/current/pause").json()["status"] == "paused"
    assert worker.post("/work-units/claim", json={}).status_code == 204
    assert admin.post("/admin/runs/current/resume").json()["status"] == "active"
    assert claim(worker) is not None
    assert admin.post("/admin/runs/current/stop").json()["status"] == "stopped"
    gone = worker.post("/work-units/claim", json={})
    assert gone.status_code == 410 and gone.json()["code"] == "run_finished"
    # past runs stay queryable, and a new run may start
    assert [r["status"] for r in worker.get("/runs").json()] == ["stopped"]
    coordinator.start_run(**NARROW_RUN)
    assert len(worker.get("/runs").json()) == 2


def test_cached_shards_are_preferred(coordinator: RunningCoordinator) -> None:
    worker = coordinator.client(coordinator.register())
    coordinator.start_run(**NARROW_RUN, units_per_step=10)  # 640 images, two shards of 320
    for shard in (1, 0, 1):
        unit = claim(worker, cached_shards=[shard])
        assert unit is not None
        assert all(shard * 320 <= i < (shard + 1) * 320 for i in unit.image_indices)


def test_a_waiting_claim_gets_the_next_phase_as_soon_as_it_is_published(
    coordinator: RunningCoordinator,
) -> None:
    first, second = (coordinator.client(coordinator.register(n)) for n in ("ada", "grace"))
    coordinator.start_run(**ONE_UNIT, units_per_step=1)
    d_phase = claim(first)
    assert d_phase is not None and d_phase.iteration == 0
    with ThreadPoolExecutor(1) as pool:
        asked = time.monotonic()
        waiting = pool.submit(second.post, "/work-units/claim", json={}, params={"wait": 25})
        time.sleep(0.5)
        assert not waiting.done()  # held open: the only unit of version 0 is out
        uploaded = time.monotonic()
        assert upload(first, d_phase, fake_body(d_phase)).status_code == 200
        answer = waiting.result(timeout=30)
    assert answer.status_code == 200, answer.text
    g_phase = WorkUnit.model_validate(answer.json())
    # The G phase of the same images, handed out by the fold, not by the 25 s timeout.
    assert (g_phase.iteration, g_phase.image_indices) == (1, d_phase.image_indices)
    assert time.monotonic() - asked < 25 and time.monotonic() > uploaded


def test_a_publication_wakes_a_wave_of_waiting_claims_not_the_whole_class(
    coordinator: RunningCoordinator,
) -> None:
    """30 claims wait for a version that brings one unit: one gets it at once, and the
    publication wakes only the longest-waiting few (``WAVE``, then one more for the claim
    that got work), not all 30 (a thundering herd of claim transactions)."""
    first = coordinator.client(coordinator.register("ada"))
    tokens = [coordinator.register(f"w{i}") for i in range(30)]
    coordinator.start_run(**ONE_UNIT, units_per_step=1)
    d_phase = claim(first)
    assert d_phase is not None

    def lookups() -> float:
        return metric(httpx.get(coordinator.url + "/metrics").text, "gan_claim_lookups_total")

    async def scenario() -> tuple[float, list[int], float]:
        async with httpx.AsyncClient(base_url=coordinator.api, timeout=60) as client:
            waiting = [asyncio.create_task(client.post(
                "/work-units/claim", json={}, params={"wait": 15},
                headers={"Authorization": f"Bearer {token}"},
            )) for token in tokens]  # fmt: skip
            while await asyncio.to_thread(lookups) < 1 + len(tokens):
                await asyncio.sleep(0.05)  # every claim looked once and now waits
            before = await asyncio.to_thread(lookups)
            assert (await asyncio.to_thread(upload, first, d_phase, fake_body(d_phase))).is_success
            done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            await asyncio.sleep(1.0)  # what else the publication woke has looked by now
            woken = await asyncio.to_thread(lookups) - before
            answered = [t.result().status_code for t in waiting if t.done()]
            for task in waiting:
                task.cancel()
            await asyncio.gather(*waiting, return_exceptions=True)
            return woken, answered, before

    woken, answered, _ = asyncio.run(scenario())
    assert answered == [200]  # the G phase's one unit, and nobody else answered yet
    assert woken <= WAVE + 1
    assert woken < 30, "every waiting claim looked again"


def test_a_waiting_claim_with_nothing_to_do_answers_204_when_its_time_is_up(
    coordinator: RunningCoordinator,
) -> None:
    first, second = (coordinator.client(coordinator.register(n)) for n in ("ada", "grace"))
    coordinator.start_run(**ONE_UNIT)
    assert claim(first) is not None
    asked = time.monotonic()
    answer = second.post("/work-units/claim", json={}, params={"wait": 1.5})
    assert answer.status_code == 204 and time.monotonic() - asked >= 1.5
    for bad in (-1, 31, "soon"):
        refused = second.post("/work-units/claim", json={}, params={"wait": bad})
        assert refused.status_code == 422, refused.text
    # The refused and timed-out claims leased nothing.
    rows = asyncio.run(fetch(coordinator.database_url, "SELECT worker_id FROM leases"))
    assert len(rows) == 1
