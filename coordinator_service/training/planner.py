"""Which images go into which unit: a seeded walk over the dataset, one epoch at a time.

Pure and deterministic in (seed, epoch), so a restarted coordinator or a test can
recompute any epoch's plan.
"""

from __future__ import annotations

import math
from collections import Counter

import numpy as np

from coordinator_service.db.runs import PlannedUnit
from shared.protocol import RunConfig


def plan_epoch(config: RunConfig, epoch: int) -> list[PlannedUnit]:
    """The epoch's units: shards in a seeded order, each shard's images shuffled, and that
    stream cut into units of exactly ``images_per_unit`` images (the last may be short).

    Cutting the stream, not each shard, keeps every unit full: a local-steps unit of
    H micro-batches of 64 holds H x 64 different images even when that is more than a
    shard (1,000 images), instead of one shard's images used twice. A unit still touches
    only the few shards next to each other in the walk, so a worker downloads only
    those; its ``shard`` is the one holding most of its images, which the claim uses to
    prefer units a worker already caches.
    """
    dataset = config.dataset
    rng = np.random.default_rng([config.seed, epoch, 0x5EED])
    num_shards = math.ceil(dataset.size / dataset.shard_size)
    stream: list[int] = []
    for shard in rng.permutation(num_shards).tolist():
        start = shard * dataset.shard_size
        stop = min(start + dataset.shard_size, dataset.size)
        stream.extend((start + rng.permutation(stop - start)).tolist())
    units: list[PlannedUnit] = []
    for begin in range(0, len(stream), config.images_per_unit):
        images = sorted(stream[begin : begin + config.images_per_unit])
        shards = Counter(i // dataset.shard_size for i in images)
        units.append((shards.most_common(1)[0][0], images))
    return units
