"""Which images go into which unit: a seeded walk over the dataset, one epoch at a time.

Pure and deterministic in (seed, epoch), so a restarted coordinator or a test can
recompute any epoch's plan. Units never cross a shard boundary: a worker that caches
shards then only ever needs the shards its units touch.
"""

from __future__ import annotations

import math

import numpy as np

from coordinator_service.db.runs import PlannedUnit
from shared.protocol import RunConfig


def plan_epoch(config: RunConfig, epoch: int) -> list[PlannedUnit]:
    """The epoch's units: shards in a seeded order, each shard's images shuffled and split
    into near-equal units of at most ``images_per_unit`` images."""
    dataset = config.dataset
    rng = np.random.default_rng([config.seed, epoch, 0x5EED])
    num_shards = math.ceil(dataset.size / dataset.shard_size)
    units: list[PlannedUnit] = []
    for shard in rng.permutation(num_shards).tolist():
        start = shard * dataset.shard_size
        stop = min(start + dataset.shard_size, dataset.size)
        images = (start + rng.permutation(stop - start)).tolist()
        parts = math.ceil(len(images) / config.images_per_unit)
        for chunk in np.array_split(np.asarray(images), parts):
            units.append((shard, sorted(int(i) for i in chunk)))
    return units
