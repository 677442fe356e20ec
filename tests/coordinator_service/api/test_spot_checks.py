"""Spot checks: a worker that lies gets caught by other workers' recomputations.

Three workers on a synchronous run that checks every result (``spot_check_fraction``
1): ada and bob compute honestly with real torch; eve sends every result sign-flipped
(which keeps every norm, so the result bounds let it through). One disagreement cannot
say who lied; eve disagrees with two different partners and is flagged, bob (who
disagreed only with eve) is not. Flagging quarantines eve's result that is not folded
yet (its unit goes back to the pool for the others) and changes no published state.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable

import asyncpg
import httpx
import pytest

from shared.codec import encode_result
from shared.protocol import WorkUnit
from shared.unit_result import UnitResult
from tests.conftest import NARROW_RUN, RunningCoordinator
from tests.coordinator_service.helpers import (
    claim,
    fetch,
    real_result,
    upload,
    wait_for_version,
)
from worker_client.api_client import CoordinatorClient
from worker_client.errors import WorkerFlagged


def _compute(client: httpx.Client, unit: WorkUnit, *, lie: bool = False) -> bytes:
    """What a worker uploads: the real result at the unit's version, or its sign flip."""
    weights = client.get(f"/weights/{unit.iteration}")
    assert weights.status_code == 200, weights.text
    result: UnitResult = real_result(unit, weights.content)
    if lie:
        for tensor in result.tensors.values():
            tensor.neg_()
    return encode_result(result)


def _claim(client: httpx.Client) -> WorkUnit:
    unit = claim(client)
    assert unit is not None, "no unit to claim"
    return unit


def _published(coordinator: RunningCoordinator) -> str:
    """A digest of every published state and history row."""
    rows = asyncio.run(fetch(
        coordinator.database_url,
        "SELECT iteration, weights_etag FROM run_states ORDER BY iteration",
    ))  # fmt: skip
    history = asyncio.run(fetch(coordinator.database_url, "SELECT * FROM history"))
    return hashlib.sha256(repr([tuple(r) for r in rows + history]).encode()).hexdigest()


def _checks(coordinator: RunningCoordinator) -> dict[int, tuple[str, float | None]]:
    """Each checked unit's verdict and distance."""
    rows = asyncio.run(fetch(
        coordinator.database_url, "SELECT unit_id, status, distance FROM spot_checks",
    ))  # fmt: skip
    return {r["unit_id"]: (r["status"], r["distance"]) for r in rows}


def _flagged(coordinator: RunningCoordinator) -> list[str]:
    board = httpx.get(coordinator.api + "/leaderboard").json()
    return [w["name"] for w in board if w["flagged"]]


@pytest.fixture
def coordinator(coordinator_factory: Callable[..., RunningCoordinator]) -> RunningCoordinator:
    """Every version stored with its Adam state, so each step drops the bodies of the
    results it consumed, except those that spot checks still compare against."""
    return coordinator_factory(checkpoint_every=1)


@pytest.fixture
def clients(coordinator: RunningCoordinator) -> dict[str, httpx.Client]:
    names = ("ada", "bob", "eve")
    workers = {name: coordinator.client(coordinator.register(name)) for name in names}
    coordinator.start_run(**NARROW_RUN, units_per_step=4, spot_check_fraction=1.0)
    return workers


def test_a_lying_worker_is_flagged_and_its_open_result_quarantined(
    coordinator: RunningCoordinator, clients: dict[str, httpx.Client]
) -> None:
    ada, bob, eve = clients["ada"], clients["bob"], clients["eve"]
    # Version 0 (a D phase): four units, eve's first. Every accepted result is checked.
    u_eve, u_ada, u_bob, u_ada2 = _claim(eve), _claim(ada), _claim(bob), _claim(ada)
    for client, unit, lie in ((eve, u_eve, True), (ada, u_ada, False), (bob, u_bob, False),
                              (ada, u_ada2, False)):  # fmt: skip
        assert upload(client, unit, _compute(client, unit, lie=lie)).status_code == 200
    wait_for_version(ada, 1)

    # Version 1 (its G phase): eve's result is accepted, the others are still computing.
    g_eve = _claim(eve)
    assert upload(eve, g_eve, _compute(eve, g_eve, lie=True)).status_code == 200
    g_ada, g_bob, g_ada2 = _claim(ada), _claim(bob), _claim(ada)

    # Nothing this version needs is left: claims now hand out checks, oldest first, never
    # of one's own result, for the checked version (its weights are still served).
    check = _claim(ada)
    assert (check.unit_id, check.iteration) == (u_eve.unit_id, 0)
    assert upload(ada, check, _compute(ada, check)).json()["accepted"] is True
    check = _claim(bob)
    assert (check.unit_id, check.iteration) == (u_ada.unit_id, 0)
    assert upload(bob, check, _compute(bob, check)).status_code == 200
    verdicts = _checks(coordinator)
    assert verdicts[u_eve.unit_id][0] == "disagreed" and verdicts[u_eve.unit_id][1] > 1.9
    assert verdicts[u_ada.unit_id] == ("agreed", 0.0)  # one machine: bit for bit
    assert not _flagged(coordinator)  # one partner cannot tell who lied

    published = _published(coordinator)
    check = _claim(eve)
    assert check.unit_id == u_bob.unit_id
    # Eve lies about bob's unit too: her second partner. She is answered like anyone.
    assert upload(eve, check, _compute(eve, check, lie=True)).status_code == 200
    assert _checks(coordinator)[u_bob.unit_id][0] == "disagreed"

    # Flagged: no more work, and her result of version 1 is out of the open set.
    refused = eve.post("/work-units/claim", json={"cached_shards": []})
    assert refused.status_code == 403 and refused.json()["code"] == "worker_flagged"
    token = eve.headers["Authorization"].removeprefix("Bearer ")
    with CoordinatorClient(coordinator.url, token=token) as worker_side, pytest.raises(
        WorkerFlagged
    ):
        worker_side.claim()  # what stops gan-worker with its message
    results = asyncio.run(fetch(
        coordinator.database_url,
        "SELECT w.name, r.iteration FROM results r JOIN workers w USING (worker_id) "
        "WHERE r.consumed_at IS NULL",
    ))  # fmt: skip
    assert [tuple(r) for r in results] == []
    unit = asyncio.run(fetch(
        coordinator.database_url, "SELECT status FROM work_units WHERE unit_id = $1",
        g_eve.unit_id,
    ))  # fmt: skip
    assert unit[0]["status"] == "pending"
    assert _published(coordinator) == published  # no state moved, no step was taken
    board = {w["name"]: w for w in httpx.get(coordinator.api + "/leaderboard").json()}
    assert board["eve"]["status"] == "flagged" and board["eve"]["flagged"] is True
    assert "2 other workers" in board["eve"]["flag_reason"]
    assert not board["ada"]["flagged"] and not board["bob"]["flagged"]
    names = [w["name"] for w in httpx.get(coordinator.api + "/leaderboard").json()]
    assert names[-1] == "eve"  # her credit is withheld: after everyone else
    assert _flagged(coordinator) == ["eve"]  # bob's only partner was eve

    # The honest workers finish version 1 without her; the fold holds only their results.
    for client, unit in ((ada, g_ada), (bob, g_bob), (ada, g_ada2)):
        assert upload(client, unit, _compute(client, unit)).status_code == 200
    again = _claim(bob)
    assert again.unit_id == g_eve.unit_id and again.iteration == 1
    assert upload(bob, again, _compute(bob, again)).status_code == 200
    wait_for_version(ada, 2)
    history = asyncio.run(fetch(
        coordinator.database_url, "SELECT num_results, num_workers FROM history "
        "WHERE iteration = 1",
    ))  # fmt: skip
    assert tuple(history[0]) == (4, 2)

    # The instructor decides: clearing lets eve work again; revoking shuts her out.
    admin = coordinator.admin()
    eve_id = board["eve"]["worker_id"]
    assert admin.post(f"/admin/workers/{eve_id}/clear-flag").json() == {
        "worker_id": eve_id, "flagged": False,
    }  # fmt: skip
    assert eve.post("/work-units/claim", json={"cached_shards": []}).status_code in (200, 204)
    assert admin.post(f"/admin/workers/{eve_id}/revoke").status_code == 200
    assert eve.post("/work-units/claim", json={}).json()["code"] == "worker_revoked"


def test_spot_checks_need_a_synchronous_run(coordinator: RunningCoordinator) -> None:
    response = coordinator.admin().post("/admin/runs", json={"config": {
        **NARROW_RUN, "result_kind": "local_steps", "spot_check_fraction": 0.1,
    }})  # fmt: skip
    assert response.status_code == 422
    assert "spot checks need synchronous runs" in response.json()["detail"]


def test_a_check_lease_outlives_the_steps_after_it(
    coordinator: RunningCoordinator, clients: dict[str, httpx.Client]
) -> None:
    """Steps end every lease of the old version except a check's: it is for its own."""
    ada, bob = clients["ada"], clients["bob"]
    first = [_claim(ada) for _ in range(4)]
    for unit in first:
        assert upload(ada, unit, _compute(ada, unit)).status_code == 200
    wait_for_version(bob, 1)
    g_units = [_claim(bob) for _ in range(4)]  # the G phase, all of it out
    check = _claim(bob)
    assert (check.unit_id, check.iteration) == (first[0].unit_id, 0)
    for unit in g_units:
        assert upload(bob, unit, _compute(bob, unit)).status_code == 200
    wait_for_version(bob, 2)
    answer = upload(bob, check, _compute(bob, check))
    assert answer.status_code == 200, answer.text
    assert _checks(coordinator)[first[0].unit_id] == ("agreed", 0.0)
    assert _flagged(coordinator) == []


def test_a_revoke_racing_the_verdict_that_flags_the_same_worker(
    coordinator: RunningCoordinator, clients: dict[str, httpx.Client]
) -> None:
    """The instructor revokes eve while bob's check is about to flag her: both shut her
    out (her leases, then her results and, by cascade, their spot checks), and the
    verdict already holds the spot check of her result. A third connection holds her
    lease so that the revoke waits first and the verdict second, the order in which the
    two used to deadlock; now one waits for the other, nothing is answered 5xx and
    PostgreSQL's deadlock counter does not move."""
    ada, bob, eve = clients["ada"], clients["bob"], clients["eve"]
    units = [_claim(eve), _claim(ada), _claim(bob), _claim(ada)]
    for client, unit in zip((eve, ada, bob, ada), units, strict=True):
        assert upload(client, unit, _compute(client, unit, lie=client is eve)).status_code == 200
    wait_for_version(ada, 1)
    g_eve = _claim(eve)
    assert upload(eve, g_eve, _compute(eve, g_eve, lie=True)).status_code == 200
    for client in (ada, bob, ada):
        _claim(client)  # the G phase's other units, out
    check = _claim(ada)  # eve's first partner
    assert check.unit_id == units[0].unit_id
    assert upload(ada, check, _compute(ada, check)).status_code == 200
    held = _claim(eve)  # a check of ada's unit: eve's one active lease, held below
    check = _claim(bob)  # ada's second unit (his own is not his to check)
    assert upload(bob, check, _compute(bob, check)).status_code == 200
    check = _claim(bob)  # eve's G-phase result: bob becomes her second partner
    assert (check.unit_id, check.iteration) == (g_eve.unit_id, 1)
    body = _compute(bob, check)
    eve_id = {w["name"]: w for w in httpx.get(coordinator.api + "/leaderboard").json()}["eve"][
        "worker_id"
    ]

    async def race() -> tuple[int, int, int]:
        conn = await asyncpg.connect(coordinator.database_url)
        try:
            before = await conn.fetchval(_DEADLOCKS)
            blocker = conn.transaction()
            await blocker.start()
            await conn.execute(
                "SELECT 1 FROM leases WHERE unit_id = $1 AND worker_id = $2 "
                "AND status = 'active' FOR UPDATE",
                held.unit_id,
                eve_id,
            )
            admin = coordinator.admin()
            revoke = asyncio.create_task(asyncio.to_thread(
                admin.post, f"/admin/workers/{eve_id}/revoke"
            ))  # fmt: skip
            await _until_waiting(1)
            verdict = asyncio.create_task(asyncio.to_thread(upload, bob, check, body))
            await _until_waiting(2)
            await blocker.commit()
            revoked, checked = await revoke, await verdict
            admin.close()
            deadlocks = await conn.fetchval(_DEADLOCKS) - before
            return revoked.status_code, checked.status_code, deadlocks
        finally:
            await conn.close()

    async def _until_waiting(count: int) -> None:
        watcher = await asyncpg.connect(coordinator.database_url)
        try:
            for _ in range(300):
                waiting = await watcher.fetchval(
                    "SELECT count(*) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND wait_event_type = 'Lock'"
                )
                if waiting >= count:
                    return
                await asyncio.sleep(0.02)
            raise AssertionError(f"fewer than {count} requests ever waited for the held lease")
        finally:
            await watcher.close()

    revoked, checked, deadlocks = asyncio.run(race())
    assert revoked == 200
    assert checked < 500
    assert deadlocks == 0
    assert eve.post("/work-units/claim", json={}).json()["code"] == "worker_revoked"
    rows = asyncio.run(fetch(
        coordinator.database_url,
        "SELECT count(*) AS n FROM results WHERE worker_id = $1 AND consumed_at IS NULL", eve_id,
    ))  # fmt: skip
    assert rows[0]["n"] == 0  # her open result is dropped, its unit back in the pool


_DEADLOCKS = "SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()"
