"""A background thread that keeps the current lease alive during a long unit.

The pace comes from durations the coordinator states (``lease_seconds_left`` in the
claim's WorkUnit and in every HeartbeatResponse), counted down on this process's own
monotonic clock. It never compares this machine's wall clock with the coordinator's
``lease_deadline``: a laptop whose clock is ahead by more than a lease would otherwise
think every lease already expired and beat every half second.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from shared.protocol import HeartbeatResponse
from worker_client.errors import RateLimited, WorkerError

log = logging.getLogger("worker_client")

MIN_INTERVAL = 0.5


class Heartbeat:
    """Beats while a lease is held: every third of the time left, at most ``max_interval``.

    ``clock`` is any clock whose differences are seconds (monotonic by default; tests
    pass a skewed one to show that only differences count).
    """

    def __init__(self, beat: Callable[[], HeartbeatResponse], max_interval: float,
                 clock: Callable[[], float] = time.monotonic) -> None:  # fmt: skip
        self._beat = beat
        self._max_interval = max_interval
        self._clock = clock
        self._deadline: float | None = None  # on self._clock
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopped = False
        self.beats = 0
        self._thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)

    def start(self) -> None:
        """Start the thread (it sleeps until a lease is held)."""
        self._thread.start()

    def stop(self) -> None:
        """End the thread."""
        self._stopped = True
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def hold(self, seconds_left: float) -> None:
        """A lease with ``seconds_left`` (as the coordinator said) is now held: start beating."""
        with self._lock:
            self._deadline = self._clock() + seconds_left
        self._wake.set()

    def drop(self) -> None:
        """No lease is held any more."""
        with self._lock:
            self._deadline = None

    def interval(self) -> float | None:
        """Seconds until the next beat, or None while no lease is held."""
        with self._lock:
            deadline = self._deadline
        if deadline is None:
            return None
        left = deadline - self._clock()
        return max(MIN_INTERVAL, min(self._max_interval, left / 3))

    def _run(self) -> None:
        while not self._stopped:
            woken = self._wake.wait(self.interval())  # None: sleep until hold() or stop()
            self._wake.clear()
            # Woken by hold() or stop(): a fresh lease needs no beat yet; just re-time.
            if woken or self._stopped or self.interval() is None:
                continue
            sent = self._clock()
            try:
                answer = self._beat()
            except WorkerError as exc:  # the main loop reports outages and auth problems
                log.debug("heartbeat failed: %s", exc)
                self._pause_after_failure(exc)
                continue
            except Exception as exc:  # never let a surprise kill the thread: the lease would lapse
                log.exception("heartbeat failed unexpectedly")
                self._pause_after_failure(exc)
                continue
            self.beats += 1
            with self._lock:
                if self._deadline is not None and answer.lease_seconds_left is not None:
                    # Counted from when the beat was sent: the answer's travel time only
                    # makes the worker beat a little early, never late.
                    self._deadline = sent + answer.lease_seconds_left
            log.debug("heartbeat: %d lease(s) extended", answer.leases_extended)

    def _pause_after_failure(self, exc: BaseException) -> None:
        # Past the deadline the interval is MIN_INTERVAL: do not hammer a coordinator that
        # is down (the main loop's own retries report the outage), nor one that asked to wait.
        pause = min(self._max_interval, 2.0)
        if isinstance(exc, RateLimited):
            pause = max(pause, exc.retry_after)
        self._wake.wait(pause)
        self._wake.clear()
