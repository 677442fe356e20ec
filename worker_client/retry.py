"""Calls to the coordinator that survive outages: retried with backoff, reported once.

A student should read one line when the coordinator goes away ("Cannot reach ..."),
a reminder every half minute, and one line when it is back; never a traceback.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from worker_client.backoff import Backoff
from worker_client.errors import CoordinatorUnavailable, RateLimited, ServerError
from worker_client.report import duration
from worker_client.stopping import StopSignal

log = logging.getLogger("worker_client")

_T = TypeVar("_T")
REMINDER_SECONDS = 30.0


class Retrier:
    """Retries ``CoordinatorUnavailable`` and tells the student what is going on."""

    def __init__(self, url: str, stop: StopSignal, *, initial: float, maximum: float) -> None:
        self.url = url
        self.stop = stop
        self.initial = initial
        self.maximum = maximum
        self._since: float | None = None  # when the current outage began
        self._reported = 0.0

    def call(
        self,
        fn: Callable[[], _T],
        *,
        holding_unit: bool = False,
        give_up_after: float | None = None,
    ) -> _T:
        """``fn()`` until the coordinator answers; outages are reported, never fatal.

        Without a unit in hand a stop request ends the wait (raising the outage again);
        with one the retries go on, because the first Ctrl+C promises to upload it.
        ``give_up_after`` seconds of failures re-raise the outage.
        """
        backoff = Backoff(self.initial, self.maximum)
        first_failure = time.monotonic()
        while True:
            try:
                value = fn()
            except CoordinatorUnavailable as exc:
                self._report_outage(exc)
                if give_up_after is not None and time.monotonic() - first_failure > give_up_after:
                    raise
                delay = backoff.next()
                if isinstance(exc, RateLimited):  # never sooner than the coordinator asked
                    delay = max(delay, exc.retry_after)
                if not holding_unit:
                    if self.stop.wait(delay):
                        raise
                else:
                    time.sleep(delay)  # only a second Ctrl+C (ForceStop) interrupts this
                continue
            self._report_recovery()
            return value

    def _report_outage(self, exc: CoordinatorUnavailable) -> None:
        now = time.monotonic()
        if self._since is None:
            self._since = self._reported = now
            if isinstance(exc, RateLimited):
                log.warning(
                    "The coordinator at %s keeps asking this worker to slow down (%s). "
                    "Waiting as it asks; the worker carries on when it accepts requests again.",
                    self.url,
                    exc.detail,
                )
            elif isinstance(exc, ServerError):
                log.warning(
                    "The coordinator at %s had a problem (%s). Retrying; the worker carries "
                    "on when it answers again.",
                    self.url,
                    exc,
                )
            else:
                log.warning(
                    "Cannot reach the coordinator at %s (%s). Retrying; the worker carries "
                    "on when it is back.",
                    self.url,
                    exc,
                )
        elif now - self._reported >= REMINDER_SECONDS:
            self._reported = now
            log.warning(
                "Still cannot reach the coordinator (for %s); retrying", duration(now - self._since)
            )

    def _report_recovery(self) -> None:
        if self._since is not None:
            log.info(
                "Reconnected to the coordinator after %s", duration(time.monotonic() - self._since)
            )
            self._since = None
