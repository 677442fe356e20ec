"""Epoch plans: every image once, full units over few shards, deterministic per seed."""

from __future__ import annotations

from collections import Counter

import pytest

from coordinator_service.training.planner import plan_epoch
from shared.protocol import RunConfig


@pytest.mark.parametrize(("unit", "shard"), [(320, 1000), (2048, 1000), (8, 16)])
def test_an_epoch_covers_every_image_once_in_full_units(unit: int, shard: int) -> None:
    config = RunConfig(images_per_unit=unit, dataset={"size": 10_500, "shard_size": shard})
    units = plan_epoch(config, 0)
    images = [i for _, unit_images in units for i in unit_images]
    assert sorted(images) == list(range(10_500))
    assert [len(u) for _, u in units[:-1]] == [unit] * (len(units) - 1)
    assert 0 < len(units[-1][1]) <= unit
    for majority, unit_images in units:
        shards = Counter(i // shard for i in unit_images)
        assert shards[majority] == max(shards.values())
        # Shards are walked whole, one after another: a unit touches only its neighbours.
        assert len(shards) <= -(-unit // shard) + 1
    assert plan_epoch(config, 0) == units
    assert plan_epoch(config, 1) != units
    assert plan_epoch(config.model_copy(update={"seed": 1}), 0) != units


def test_units_that_divide_a_shard_never_cross_it() -> None:
    """Two units of 8 per 16-image shard: each unit is half of one shard."""
    config = RunConfig(images_per_unit=8, dataset={"size": 64, "shard_size": 16})
    for shard, images in plan_epoch(config, 3):
        assert {i // 16 for i in images} == {shard}
