"""The token bucket on its own, on a hand-driven clock: burst, refill, Retry-After."""

from __future__ import annotations

import pytest

from coordinator_service import rate_limits
from coordinator_service.errors import CoordinatorError
from coordinator_service.rate_limits import RateLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def refusal(limiter: RateLimiter, key: object) -> CoordinatorError:
    with pytest.raises(CoordinatorError) as info:
        limiter.take(key)
    return info.value


def test_burst_then_rate_and_retry_after_rounds_up() -> None:
    clock = Clock()
    limiter = RateLimiter(rate=0.5, burst=3, what="tries", clock=clock)
    for _ in range(3):
        limiter.take("a")
    error = refusal(limiter, "a")
    assert (error.status, error.code) == (429, "rate_limited")
    assert error.headers == {"Retry-After": "2"}  # one token takes 1 / 0.5 s
    assert "at most 3 at once, then 0.5 a second" in error.detail
    limiter.take("b")  # another key has its own bucket
    clock.now += 1.5
    assert refusal(limiter, "a").headers == {"Retry-After": "1"}  # 0.25 token short: 0.5 s
    clock.now += 0.5
    limiter.take("a")  # refilled exactly one token
    assert refusal(limiter, "a").headers == {"Retry-After": "2"}
    clock.now += 3600
    for _ in range(3):  # never more than the burst, however long it rested
        limiter.take("a")
    refusal(limiter, "a")


def test_rate_zero_is_no_limit() -> None:
    limiter = RateLimiter(rate=0, burst=1, what="tries", clock=Clock())
    for _ in range(1000):
        limiter.take("a")


def test_idle_buckets_are_forgotten_when_there_are_too_many(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(rate_limits, "MAX_KEYS", 3)
    clock = Clock()
    limiter = RateLimiter(rate=1, burst=2, what="tries", clock=clock)
    for key in ("a", "b", "c"):
        limiter.take(key)
        limiter.take(key)
    clock.now += 1.0  # half refilled: nothing may be forgotten yet
    limiter.take("d")
    assert set(limiter._buckets) == {"a", "b", "c", "d"}
    clock.now += 5.0  # all full again: forgetting them changes no answer
    limiter.take("e")
    assert set(limiter._buckets) == {"e"}
