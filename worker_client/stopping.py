"""Ctrl+C and SIGTERM: the first asks to stop after the current unit, the second forces it."""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType

log = logging.getLogger("worker_client")


class ForceStop(KeyboardInterrupt):
    """Raised in the main thread by the second Ctrl+C/SIGTERM: release the lease, quit now.

    A KeyboardInterrupt subclass so that no ``except Exception`` on the way swallows it.
    """


class StopSignal:
    """Stop requests from signals (or from code, e.g. tests and ``--max-units``)."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.busy = False  # True while a unit is in progress (decides the first message)

    @property
    def requested(self) -> bool:
        """Whether a stop was asked for."""
        return self._event.is_set()

    def request(self) -> None:
        """Ask the loop to stop after the current unit."""
        self._event.set()

    def wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; True at once if a stop is (or becomes) requested."""
        return self._event.wait(seconds)

    def install(self) -> None:
        """Handle SIGINT and SIGTERM in this (the main) thread."""
        signal.signal(signal.SIGINT, self._handle)
        signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested:
            raise ForceStop()
        self.request()
        if self.busy:
            log.info(
                "Stopping after this work unit (it will be uploaded first). "
                "Press Ctrl+C again to quit now and hand the unit back."
            )
