"""Epoch plans: every image once, units shard-aligned and bounded, deterministic per seed."""

from __future__ import annotations

from coordinator_service.training.planner import plan_epoch
from shared.protocol import RunConfig


def test_an_epoch_covers_every_image_once_in_shard_aligned_units() -> None:
    config = RunConfig(images_per_unit=320, dataset={"size": 2500, "shard_size": 1000})
    units = plan_epoch(config, 0)
    images = [i for _, unit in units for i in unit]
    assert sorted(images) == list(range(2500))
    for shard, unit in units:
        assert 0 < len(unit) <= 320
        assert all(i // 1000 == shard for i in unit)
    assert plan_epoch(config, 0) == units
    assert plan_epoch(config, 1) != units
    assert plan_epoch(config.model_copy(update={"seed": 1}), 0) != units
