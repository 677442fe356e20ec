"""The order an epoch visits a dataset's images in: the coordinator cuts it into units,
``gan-train-local`` into batches, so both train the same images at the same step.

A seeded walk: shards in a random order, each shard's images shuffled, one stream.
Imported datasets are shuffled across shards at import (``coordinator_service.datasets
.importer``), so every shard is a uniform sample of the whole and every micro-batch
cut from the stream is a uniform draw, as a shuffled DataLoader's, while a unit still
touches only one or two shards (a worker downloads only those). Pure and deterministic
in (seed, epoch).
"""

from __future__ import annotations

import math

import numpy as np


def epoch_order(seed: int, epoch: int, size: int, shard_size: int) -> list[int]:
    """Every image index once, in the epoch's seeded shard walk."""
    if size < 1 or shard_size < 1:
        raise ValueError("size and shard_size must be positive")
    rng = np.random.default_rng([seed, epoch, 0x5EED])
    stream: list[int] = []
    for shard in rng.permutation(math.ceil(size / shard_size)).tolist():
        start = shard * shard_size
        stop = min(start + shard_size, size)
        stream.extend((start + rng.permutation(stop - start)).tolist())
    return stream


def cut(order: list[int], size: int) -> list[list[int]]:
    """Consecutive pieces of ``size`` images (the last may be short), order kept."""
    return [order[begin : begin + size] for begin in range(0, len(order), size)]
