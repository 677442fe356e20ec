"""Exponential backoff with jitter, so a class of workers does not poll in lockstep."""

from __future__ import annotations

import random


class Backoff:
    """Delays ``initial``, ``initial*factor``, ... up to ``maximum``, each scaled by ±``jitter``."""

    def __init__(
        self,
        initial: float,
        maximum: float,
        *,
        factor: float = 2.0,
        jitter: float = 0.25,
        rng: random.Random | None = None,
    ) -> None:
        if initial <= 0 or maximum < initial or factor < 1 or not 0 <= jitter < 1:
            raise ValueError("need 0 < initial <= maximum, factor >= 1, 0 <= jitter < 1")
        self.initial = initial
        self.maximum = maximum
        self.factor = factor
        self.jitter = jitter
        self._rng = rng or random.Random()
        self.attempts = 0

    def next(self) -> float:
        """The next delay in seconds (never above ``maximum``)."""
        base = min(self.maximum, self.initial * self.factor**self.attempts)
        self.attempts += 1
        spread = 1.0 + self.jitter * (2.0 * self._rng.random() - 1.0)
        return min(self.maximum, base * spread)

    def reset(self) -> None:
        """Start again from ``initial`` (after a success)."""
        self.attempts = 0
