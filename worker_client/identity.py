"""The worker's identity on disk: one token per (coordinator URL, worker name).

Registration shows the token once; keeping it means a restarted worker is the same
worker on the leaderboard. The file is JSON, readable by its owner only.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import platformdirs
import psutil

APP_NAME = "gan-worker"
FILE_NAME = "identities.json"


@dataclass(frozen=True)
class Identity:
    """Who this worker is to one coordinator."""

    url: str
    name: str
    worker_id: int
    token: str


def default_state_dir() -> Path:
    """The per-user data directory (e.g. ~/.local/share/gan-worker on Linux)."""
    return Path(platformdirs.user_data_dir(APP_NAME, appauthor=False))


class IdentityInUse(Exception):
    """Another running gan-worker already uses this identity."""

    def __init__(self, pid: int) -> None:
        super().__init__(f"process {pid} already uses this identity")
        self.pid = pid


class IdentityStore:
    """Identities of this user's workers, keyed by coordinator URL and worker name."""

    def __init__(self, state_dir: Path | None = None) -> None:
        self.path = (state_dir or default_state_dir()).expanduser() / FILE_NAME

    @staticmethod
    def _key(url: str, name: str) -> str:
        return f"{url.rstrip('/')} {name}"

    def _read(self) -> dict[str, dict]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError):
            return {}  # a damaged file only costs a new registration
        return data if isinstance(data, dict) else {}

    def load(self, url: str, name: str) -> Identity | None:
        """The stored identity for this coordinator and name, if any."""
        entry = self._read().get(self._key(url, name))
        try:
            return Identity(**entry) if isinstance(entry, dict) else None
        except TypeError:
            return None

    def save(self, identity: Identity) -> None:
        """Store (or replace) an identity, private to the user."""
        data = self._read()
        data[self._key(identity.url, identity.name)] = asdict(identity)
        self._write(data)

    def forget(self, url: str, name: str) -> None:
        """Drop the identity for this coordinator and name (next start registers anew)."""
        data = self._read()
        if data.pop(self._key(url, name), None) is not None:
            self._write(data)

    @contextmanager
    def in_use(self, url: str, name: str) -> Iterator[None]:
        """Mark the identity as used by this process; IdentityInUse if another one uses it.

        Two processes sharing one token would be one worker to the coordinator (one
        leaderboard row, each extending the other's leases), so the second is refused.
        A lock left by a killed worker is ignored once its process is gone.
        """
        digest = hashlib.sha256(self._key(url, name).encode()).hexdigest()[:16]
        lock = self.path.parent / "running" / f"{digest}.pid"
        try:
            pid = int(lock.read_text())
        except (OSError, ValueError):
            pid = 0
        if pid and pid != os.getpid() and psutil.pid_exists(pid):
            raise IdentityInUse(pid)
        lock.parent.mkdir(parents=True, exist_ok=True)
        lock.write_text(str(os.getpid()))
        try:
            yield
        finally:
            lock.unlink(missing_ok=True)

    def _write(self, data: dict[str, dict]) -> None:
        # Write a private temporary file and rename it: a crash never leaves half a file.
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2, sort_keys=True)
        os.replace(tmp, self.path)
