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


def units_per_claim(config: RunConfig, images_per_second: float | None) -> int:
    """Dynamic local updates: how many of the epoch's units one claim joins into one.

    As many as the worker trains in about ``unit_seconds`` at ``images_per_second``
    (measured by the coordinator from the worker's accepted results, never declared by
    it), between 1 and ``max_units_per_claim``. A worker not measured yet gets one unit;
    so does every worker of a run without ``unit_seconds``. H is then the joined unit's
    images over the micro-batch: a GPU ten times a laptop's speed takes ten times its
    inner steps per round trip, as Liu et al.'s Dynamic Local Updates do.
    """
    if config.unit_seconds is None or not images_per_second:
        return 1
    fit = int(config.unit_seconds * images_per_second // config.images_per_unit)
    return max(1, min(config.max_units_per_claim or 1, fit))
