"""Wake-ups between API processes, through the database they share (LISTEN/NOTIFY).

Several API processes may serve one class (``gan-coordinator serve --workers N``, or
replicas behind a proxy), and only one of them holds the aggregator's advisory lock. A
version it commits must wake the claims long-polling in every process, and a result
accepted by any process must wake it. The transaction that commits a version or accepts
a result sends a notification, which PostgreSQL delivers at commit (never for a rollback)
to one listening connection per process.

While that connection is down, nothing is lost: claims look again every second and the
aggregator every ``aggregator_tick_seconds``, as they would without notifications.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping

import asyncpg

from coordinator_service.db.pool import connect

log = logging.getLogger(__name__)

VERSIONS = "gann_versions"  # a version was committed: claims look for work again
RESULTS = "gann_results"  # a result was accepted: the aggregator looks at the step rule

RECONNECT_SECONDS = 1.0


async def notify(conn: asyncpg.Connection, channel: str) -> None:
    """Inside a transaction: tell every process once it commits."""
    await conn.execute("SELECT pg_notify($1, '')", channel)


class Listener:
    """One connection per process that listens on the channels and calls their handlers."""

    def __init__(self, database_url: str, handlers: Mapping[str, Callable[[], None]]) -> None:
        self.database_url = database_url
        self.handlers = dict(handlers)
        self.connected = False

    def _on_notification(self, _conn: object, _pid: int, channel: str, _payload: str) -> None:
        self.handlers[channel]()

    async def run_forever(self) -> None:
        """Listen, and after a lost connection reconnect every second, until cancelled."""
        while True:
            try:
                await self._listen()
                log.warning("lost the notification connection; reconnecting")
            except (OSError, asyncpg.PostgresError) as exc:
                log.warning("not listening for notifications (%s); retrying", exc)
            await asyncio.sleep(RECONNECT_SECONDS)

    async def _listen(self) -> None:
        """Until the connection is lost."""
        conn = await connect(self.database_url)
        lost = asyncio.Event()
        conn.add_termination_listener(lambda _conn: lost.set())
        try:
            for channel in self.handlers:
                await conn.add_listener(channel, self._on_notification)
            self.connected = True
            for handler in self.handlers.values():  # whatever happened while we were away
                handler()
            await lost.wait()
        finally:
            self.connected = False
            if not conn.is_closed():
                await conn.close(timeout=2)
