"""A background thread that keeps the current lease alive during a long unit."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime, timezone

from shared.protocol import HeartbeatResponse
from worker_client.errors import WorkerError

log = logging.getLogger("worker_client")

MIN_INTERVAL = 0.5


class Heartbeat:
    """Beats while a lease is held: every third of the time left, at most ``max_interval``."""

    def __init__(self, beat: Callable[[], HeartbeatResponse], max_interval: float) -> None:
        self._beat = beat
        self._max_interval = max_interval
        self._deadline: datetime | None = None
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

    def hold(self, deadline: datetime) -> None:
        """A lease with this deadline is now held: start beating."""
        with self._lock:
            self._deadline = deadline
        self._wake.set()

    def drop(self) -> None:
        """No lease is held any more."""
        with self._lock:
            self._deadline = None

    def interval(self, now: datetime | None = None) -> float | None:
        """Seconds until the next beat, or None while no lease is held."""
        with self._lock:
            deadline = self._deadline
        if deadline is None:
            return None
        now = now or datetime.now(timezone.utc)
        if deadline.tzinfo is None:
            deadline = deadline.replace(tzinfo=timezone.utc)
        left = (deadline - now).total_seconds()
        return max(MIN_INTERVAL, min(self._max_interval, left / 3))

    def _run(self) -> None:
        while not self._stopped:
            woken = self._wake.wait(self.interval())  # None: sleep until hold() or stop()
            self._wake.clear()
            # Woken by hold() or stop(): a fresh lease needs no beat yet; just re-time.
            if woken or self._stopped or self.interval() is None:
                continue
            try:
                answer = self._beat()
            except WorkerError as exc:  # the main loop reports outages and auth problems
                log.debug("heartbeat failed: %s", exc)
                self._pause_after_failure()
                continue
            except Exception:  # never let a surprise kill the thread: the lease would lapse
                log.exception("heartbeat failed unexpectedly")
                self._pause_after_failure()
                continue
            self.beats += 1
            with self._lock:
                if self._deadline is not None and answer.lease_deadline is not None:
                    self._deadline = answer.lease_deadline
            log.debug("heartbeat: %d lease(s) extended", answer.leases_extended)

    def _pause_after_failure(self) -> None:
        # Past the deadline the interval is MIN_INTERVAL: do not hammer a coordinator that
        # is down; the main loop's own retries report the outage.
        self._wake.wait(min(self._max_interval, 2.0))
        self._wake.clear()
