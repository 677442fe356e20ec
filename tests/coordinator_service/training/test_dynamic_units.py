"""Dynamic local updates (issue 13): a claim joins as many of the epoch's units as the
worker's measured speed fits into ``unit_seconds``, and the epoch still trains every
image exactly once."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from pydantic import ValidationError

from coordinator_service.training.planner import plan_epoch, units_per_claim
from shared.protocol import RunConfig, WorkUnit
from tests.conftest import NARROW_RUN, RunningCoordinator
from tests.coordinator_service.helpers import (
    LEASE_HEADER,
    claim_when_ready,
    fake_body,
    fetch,
    upload,
)

DYNAMIC = {**NARROW_RUN, "result_kind": "async_local_steps", "batch_size": 8,
           "units_per_step": 1, "step_timeout": 3600, "max_epochs": 1,
           "unit_seconds": 30.0, "max_units_per_claim": 4}  # fmt: skip


def test_the_rule_fits_the_unit_to_the_speed_within_its_bounds() -> None:
    config = RunConfig(result_kind="async_local_steps", images_per_unit=512, batch_size=64,
                       unit_seconds=60.0)  # fmt: skip
    assert config.max_units_per_claim == 16
    assert units_per_claim(config, None) == 1  # not measured yet: one unit
    assert units_per_claim(config, 8.0) == 1  # a slow laptop: 480 images in 60 s
    assert units_per_claim(config, 100.0) == 11  # a laptop: 6,000 images in 60 s
    assert units_per_claim(config, 1500.0) == 16  # a GPU: the bound
    plain = RunConfig(result_kind="local_steps", images_per_unit=512, batch_size=64)
    assert units_per_claim(plain, 1500.0) == 1  # no unit_seconds: every unit as planned


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"result_kind": "synchronous", "unit_seconds": 30.0}, "only apply"),
        ({"result_kind": "local_steps", "max_units_per_claim": 4}, "unit_seconds"),
    ],
)
def test_dynamic_options_are_refused_where_they_mean_nothing(
    options: dict[str, object], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        RunConfig(**options)


def _units(coordinator: RunningCoordinator, epoch: int) -> list[tuple[int, str, list[int]]]:
    rows = asyncio.run(fetch(coordinator.database_url,
                             "SELECT unit_id, status, image_indices FROM work_units "
                             "WHERE epoch = $1 ORDER BY unit_id", epoch))  # fmt: skip
    return [(r["unit_id"], r["status"], list(r["image_indices"])) for r in rows]


def test_a_measured_worker_gets_joined_units_and_the_epoch_trains_every_image_once(
    coordinator: RunningCoordinator,
) -> None:
    run = coordinator.start_run(**DYNAMIC)
    plan = [images for _, images in plan_epoch(RunConfig.model_validate(run["config"]), 0)]
    ada = coordinator.client(coordinator.register("ada"))
    bob = coordinator.client(coordinator.register("bob"))

    first = claim_when_ready(ada)  # not measured yet: one planned unit, H = 2
    assert first.image_indices == plan[0]
    assert upload(ada, first, fake_body(first)).status_code == 200
    (speed,) = asyncio.run(fetch(coordinator.database_url,
                                 "SELECT images_per_second FROM workers WHERE name = 'ada'"))
    # 16 images in well under 30 s / 64 images: the bound of 4 units applies.
    assert speed["images_per_second"] > 16 * 4 / 30.0

    joined = claim_when_ready(ada)
    assert joined.image_indices == plan[1] + plan[2] + plan[3] + plan[4]  # walk order kept
    single = claim_when_ready(bob)  # bob has no result yet: one unit
    assert single.image_indices == plan[5]
    board = {w["name"]: w for w in ada.get("/leaderboard").json()}
    assert (board["ada"]["inner_steps"], board["bob"]["inner_steps"]) == (8, 2)
    assert board["ada"]["images_per_second"] == pytest.approx(speed["images_per_second"])
    assert board["bob"]["images_per_second"] is None

    # A joined unit that comes back keeps its size and is never joined again.
    answer = ada.post(f"/work-units/{joined.unit_id}/release",
                      headers={LEASE_HEADER: joined.lease_id})  # fmt: skip
    assert answer.status_code == 200, answer.text
    again = claim_when_ready(ada)
    assert (again.unit_id, again.image_indices) == (joined.unit_id, joined.image_indices)
    assert upload(ada, again, fake_body(again)).status_code == 200
    assert upload(bob, single, fake_body(single)).status_code == 200

    # Two workers drain the epoch: every image in exactly one done unit, every one folded.
    deadline = time.monotonic() + 120
    while ada.get("/status").json()["state"] != "finished":
        assert time.monotonic() < deadline, "the epoch did not end"
        for client in (ada, bob):
            response = client.post("/work-units/claim", json={"cached_shards": []})
            if response.status_code == 200:
                unit = WorkUnit.model_validate(response.json())
                assert upload(client, unit, fake_body(unit)).status_code == 200
    units = _units(coordinator, 0)
    assert {status for _, status, _ in units} == {"done"}
    assert sorted(i for _, _, images in units for i in images) == list(range(640))
    assert len(units) < len(plan)  # claims joined units
    (folded,) = asyncio.run(fetch(coordinator.database_url,
                                  "SELECT sum(num_samples) AS n FROM results "
                                  "WHERE consumed_at IS NOT NULL"))  # fmt: skip
    assert folded["n"] == 640


def test_simultaneous_joined_claims_never_share_an_image(coordinator: RunningCoordinator) -> None:
    """Eight timed workers claim at once: SKIP LOCKED gives each its own four units,
    and the epoch's units still hold every image exactly once."""
    coordinator.start_run(**DYNAMIC)
    clients = [coordinator.client(coordinator.register(f"w{i}")) for i in range(8)]
    asyncio.run(fetch(coordinator.database_url, "UPDATE workers SET images_per_second = 1000"))
    with ThreadPoolExecutor(len(clients)) as pool:
        units = list(pool.map(claim_when_ready, clients))
    assert [len(unit.image_indices) for unit in units] == [64] * 8
    claimed = [i for unit in units for i in unit.image_indices]
    assert len(set(claimed)) == len(claimed) == 8 * 64
    stored = _units(coordinator, 0)
    assert len(stored) == 40 - 8 * 3  # 8 joined units and 8 planned ones left
    assert sorted(i for _, _, images in stored for i in images) == list(range(640))
