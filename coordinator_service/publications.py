"""Long-polling claims wake up the moment a version is published, a few at a time.

In synchronous mode every worker of a phase finishes, asks for the next phase's unit and
finds none until the fold commits: a worker that polls backs off for seconds each time,
and two phases per iteration make that the largest cost of a small run. A claim that
waits on the publication instead answers within milliseconds of it.

Waking every waiting claim at once is a thundering herd: in a lecture hall 300 claims
each run a claim transaction for the few units a version brings, and the rest find
nothing (measured in docs/coordinator.md: a third of the server's time went to them).
So a publication wakes the longest-waiting ``WAVE`` claims, and each claim that gets
work wakes the next one in line: the chain runs while there is work to hand out (units,
backup copies, spot checks) and stops at the first claim that finds none, which a
later publication would have changed anyway.
"""

from __future__ import annotations

import asyncio
from collections import deque

WAVE = 8  # claims a publication wakes at first; a class's unit count per version is near


class Publications:
    """Waiting claims, longest-waiting first; each holds a ticket that a wake-up sets."""

    def __init__(self, wave: int = WAVE) -> None:
        self.wave = wave
        self._waiting: deque[asyncio.Event] = deque()

    def ticket(self) -> asyncio.Event:
        """Take before looking for work: set when this claim's turn comes after that."""
        ticket = asyncio.Event()
        self._waiting.append(ticket)
        return ticket

    def forget(self, ticket: asyncio.Event) -> None:
        """A claim that stops waiting gives its place up."""
        try:
            self._waiting.remove(ticket)
        except ValueError:
            pass  # already woken

    def announce(self) -> None:
        """A version was committed: wake the first wave."""
        for _ in range(self.wave):
            self.pass_on()

    def pass_on(self) -> None:
        """A claim found work, so there may be more: wake the next claim in line."""
        if self._waiting:
            self._waiting.popleft().set()


async def wait_for(ticket: asyncio.Event, timeout: float) -> None:
    """Until the ticket's turn or ``timeout`` seconds, whichever comes first."""
    try:
        await asyncio.wait_for(ticket.wait(), timeout)
    except asyncio.TimeoutError:
        pass
