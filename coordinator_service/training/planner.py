"""Which images go into which unit: the epoch's shard walk (``shared.epoch_order``) cut
into units of ``images_per_unit``.

Cutting the stream, not each shard, keeps every unit full: a local-steps unit of
H micro-batches holds H x batch different images even when that is more than a shard.
A unit keeps the walk's order (its micro-batches are consecutive pieces of it), so it
is recomputable from the plan alone; its ``shard`` is the one holding most of its
images, which the claim uses to prefer units a worker already caches.
"""

from __future__ import annotations

from collections import Counter

from coordinator_service.db.runs import PlannedUnit
from shared.epoch_order import cut, epoch_order
from shared.protocol import RunConfig


def plan_epoch(config: RunConfig, epoch: int) -> list[PlannedUnit]:
    """The epoch's units, in the order they are handed out."""
    dataset = config.dataset
    order = epoch_order(config.seed, epoch, dataset.size, dataset.shard_size)
    units: list[PlannedUnit] = []
    for images in cut(order, config.images_per_unit):
        shards = Counter(i // dataset.shard_size for i in images)
        units.append((shards.most_common(1)[0][0], images))
    return units
