"""Long-polling claims wake up the moment this process's aggregator publishes a version.

In synchronous mode every worker of a phase finishes, asks for the next phase's unit and
finds none until the fold commits: a worker that polls backs off for seconds each time,
and two phases per iteration make that the largest cost of a small run. A claim that
waits on the publication instead answers within milliseconds of it.
"""

from __future__ import annotations

import asyncio


class Publications:
    """A new event per published version; waiters hold the one current when they looked."""

    def __init__(self) -> None:
        self._current = asyncio.Event()

    def ticket(self) -> asyncio.Event:
        """Take before looking for work: set once any version is published after that."""
        return self._current

    def announce(self) -> None:
        """A version was committed: wake everyone holding a ticket."""
        self._current.set()
        self._current = asyncio.Event()


async def wait_for(ticket: asyncio.Event, timeout: float) -> None:
    """Until the ticket's publication or ``timeout`` seconds, whichever comes first."""
    try:
        await asyncio.wait_for(ticket.wait(), timeout)
    except asyncio.TimeoutError:
        pass
