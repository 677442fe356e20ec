"""In-process token buckets: registrations per client address, requests per worker.

A bucket holds up to ``burst`` tokens and gains ``rate`` tokens a second; a request
takes one, and a request that finds none is refused with 429 ``rate_limited`` and a
``Retry-After`` of the whole seconds until the next token. The refusal happens before
the route does anything, so a throttled request changes no state.

The buckets live in this process's memory: several API replicas behind a proxy each
keep their own, so the class as a whole may go N times as fast with N replicas (the
limits are per API process, as the settings say). That is enough for what they are
for: a runaway client or a registration flood must not reach the database at full
speed, and the join code must not be guessable at the rate a client can try it
(``coordinator_service.join_codes`` does the arithmetic).

Why these defaults (``Settings``):

* Registrations: 120 at once, then 1 a second (60 a minute) per address. A lecture
  hall of students behind one NAT registers in the same minute, retries and typos
  included; 120 covers that four times over for the 30-student class, and the 100
  workers of ``bench/load_coordinator.py``. A guesser from one address gets 86,400
  tries a day, against a 60-bit join code.
* Worker requests: 150 at once, then 30 a second per worker. An honest worker sends a
  claim (held up to 5 s by the coordinator when there is no work), a weights download
  when the version changed, an upload, and a heartbeat every third of its lease (at
  most every 15 s): about 3 requests per unit, and a unit takes seconds (320 images of
  the 64-feature model; a 25 MB result to upload), so even a fast GPU stays under 10
  a second. A phase's worth of quick units comes as a burst, which the 150 absorbs; a
  client looping without waiting (hundreds a second) is slowed to 30 after 5 s.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass

from coordinator_service.errors import CoordinatorError
from coordinator_service.settings import Settings

MAX_KEYS = 10_000  # beyond this many buckets, the full (idle) ones are dropped


class RateLimiter:
    """One token bucket per key; ``rate`` 0 means no limit."""

    def __init__(self, *, rate: float, burst: int, what: str,
                 clock: Callable[[], float] = time.monotonic) -> None:  # fmt: skip
        self.rate = rate
        self.burst = float(burst)
        self.what = what  # for the refusal's detail: "registrations from this address"
        self._clock = clock
        self._buckets: dict[Hashable, tuple[float, float]] = {}  # key -> (tokens, at)
        self._lock = threading.Lock()

    def take(self, key: Hashable) -> None:
        """Spend one token of ``key``'s bucket, or raise 429 ``rate_limited``."""
        if self.rate <= 0:
            return
        with self._lock:
            now = self._clock()
            tokens = self._tokens(key, now)
            if tokens >= 1.0:
                self._buckets[key] = (tokens - 1.0, now)
                return
            self._buckets[key] = (tokens, now)
        wait = max(1, math.ceil((1.0 - tokens) / self.rate))
        raise CoordinatorError(
            "rate_limited",
            f"Too many {self.what} (at most {self.burst:.0f} at once, then "
            f"{self.rate:g} a second); try again in {wait} s.",
            headers={"Retry-After": str(wait)},
        )

    def _tokens(self, key: Hashable, now: float) -> float:
        if key not in self._buckets and len(self._buckets) >= MAX_KEYS:
            self._forget_full(now)
        tokens, at = self._buckets.get(key, (self.burst, now))
        return min(self.burst, tokens + (now - at) * self.rate)

    def _forget_full(self, now: float) -> None:
        """Drop the buckets that have refilled: forgetting them changes no answer."""
        full = [k for k, (tokens, at) in self._buckets.items()
                if tokens + (now - at) * self.rate >= self.burst]  # fmt: skip
        for key in full:
            del self._buckets[key]


@dataclass
class RateLimits:
    """The coordinator's two limiters, built from the settings."""

    registrations: RateLimiter
    workers: RateLimiter

    @classmethod
    def from_settings(cls, settings: Settings) -> RateLimits:
        return cls(
            registrations=RateLimiter(
                rate=settings.registrations_per_minute / 60.0,
                burst=settings.registration_burst,
                what="registrations from this address",
            ),
            workers=RateLimiter(
                rate=settings.worker_requests_per_second,
                burst=settings.worker_request_burst,
                what="requests from this worker",
            ),
        )
