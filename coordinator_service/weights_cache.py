"""Encoded W_t bytes kept in memory: every worker of a class downloads the same weights.

Snapshots are immutable, so a cached entry never goes stale; the aggregator puts each
new iteration in as soon as it commits it, and a miss (another replica stepped, or an
older iteration) reads the database once per key, not once per request.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class CachedWeights:
    data: bytes
    etag: str


Loader = Callable[[], Awaitable[CachedWeights | None]]


class WeightsCache:
    """A small LRU of (run_id, iteration) -> encoded weights, with single-flight loading."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._entries: OrderedDict[tuple[int, int], CachedWeights] = OrderedDict()
        self._locks: dict[tuple[int, int], asyncio.Lock] = {}

    def put(self, run_id: int, iteration: int, weights: CachedWeights) -> None:
        key = (run_id, iteration)
        self._entries[key] = weights
        self._entries.move_to_end(key)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)

    def peek(self, run_id: int, iteration: int) -> CachedWeights | None:
        """The entry if it is here, without loading it."""
        return self._entries.get((run_id, iteration))

    async def get(self, run_id: int, iteration: int, load: Loader) -> CachedWeights | None:
        key = (run_id, iteration)
        if key in self._entries:
            self._entries.move_to_end(key)
            return self._entries[key]
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            if key in self._entries:
                return self._entries[key]
            loaded = await load()
            if loaded is not None:
                self.put(run_id, iteration, loaded)
        self._locks.pop(key, None)
        return loaded
