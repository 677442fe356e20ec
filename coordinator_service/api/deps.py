"""Typed dependencies: the app's state, a pooled connection, the calling worker or admin.

Worker tokens are random 32-byte secrets, so a plain SHA-256 is a sound way to store
them (no dictionary to attack); the database never holds a usable token.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated
from uuid import UUID

import asyncpg
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from coordinator_service.db.models import Worker
from coordinator_service.db.workers import WorkersRepo
from coordinator_service.errors import CoordinatorError
from coordinator_service.metrics import Metrics
from coordinator_service.notifications import Listener
from coordinator_service.publications import Publications
from coordinator_service.rate_limits import RateLimits
from coordinator_service.settings import Settings
from coordinator_service.weights_cache import WeightsCache

if TYPE_CHECKING:  # the aggregator imports torch; routes and tests of deps need not
    from coordinator_service.training.aggregator import Aggregator
    from shared.unit_result import UnitResult


@dataclass
class CoordinatorState:
    """Everything the lifespan creates; reachable from a request, never global."""

    settings: Settings
    pool: asyncpg.Pool
    cache: WeightsCache
    metrics: Metrics
    aggregator: Aggregator | None = None  # when this process runs one
    publications: Publications = field(default_factory=Publications)
    listener: Listener | None = None  # wakes ``publications`` and the aggregator
    limits: RateLimits = field(init=False)  # per process: see coordinator_service.rate_limits

    def __post_init__(self) -> None:
        self.limits = RateLimits.from_settings(self.settings)

    @property
    def listening(self) -> bool:
        """Whether published versions wake long-polling claims (else they poll)."""
        return self.listener is not None and self.listener.connected

    def hand_to_aggregator(self, *, run_id: int, lease_id: UUID, result: UnitResult) -> None:
        """Give an accepted, decoded result to this process's aggregator, which saves it
        decoding the body again if it is the one that steps (the accepting transaction's
        notification wakes whichever process does)."""
        if self.aggregator is not None:
            self.aggregator.remember(run_id=run_id, lease_id=lease_id, result=result)


def hash_token(token: str) -> str:
    """How a worker token is stored and looked up."""
    return hashlib.sha256(token.encode()).hexdigest()


# Dependencies are ``async def`` even where they never await: FastAPI runs a plain
# ``def`` dependency in its thread pool, a thread hop on every request that, under load,
# queues behind uploads being decoded in threads.
async def get_state(request: Request) -> CoordinatorState:
    state: CoordinatorState = request.app.state.coordinator
    return state


StateDep = Annotated[CoordinatorState, Depends(get_state)]


async def get_settings(state: StateDep) -> Settings:
    return state.settings


SettingsDep = Annotated[Settings, Depends(get_settings)]


async def get_conn(state: StateDep) -> AsyncIterator[asyncpg.Connection]:
    async with state.pool.acquire() as conn:
        yield conn


ConnDep = Annotated[asyncpg.Connection, Depends(get_conn)]

worker_bearer = HTTPBearer(auto_error=False, scheme_name="WorkerToken",
                           description="The token POST /workers returned.")
admin_bearer = HTTPBearer(auto_error=False, scheme_name="AdminToken",
                          description="The instructor's GAN_ADMIN_TOKEN.")


async def worker_token(
    state: StateDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(worker_bearer)],
) -> str:
    """The stored form of the bearer token (401 without one), within its request rate:
    429 past ``worker_requests_per_second``, before the database is asked anything, so a
    throttled request changes nothing. One token belongs to one worker, so its hash keys
    that worker's budget; a flood of made-up tokens fills idle buckets, which the
    limiter forgets (``rate_limits.MAX_KEYS``)."""
    if credentials is None or not credentials.credentials:
        raise CoordinatorError("not_authenticated")
    token_hash = hash_token(credentials.credentials)
    state.limits.workers.take(token_hash)
    return token_hash


WorkerTokenDep = Annotated[str, Depends(worker_token)]


async def current_worker(state: StateDep, token_hash: WorkerTokenDep) -> Worker:
    """The worker behind the bearer token: 401 without or with a bad token, 403 if
    revoked, 429 past its request rate."""
    # A short-lived connection: result uploads must not hold one while the body streams in.
    async with state.pool.acquire() as conn:
        worker = await WorkersRepo(conn).by_token_hash(token_hash=token_hash)
    return active_worker(worker)


def active_worker(worker: Worker | None) -> Worker:
    """The worker a token lookup found, refused if there is none or it was revoked."""
    if worker is None:
        raise CoordinatorError("invalid_token")
    if worker.revoked_at is not None:
        raise CoordinatorError("worker_revoked")
    return worker


WorkerDep = Annotated[Worker, Depends(current_worker)]


def _is_admin(settings: Settings, token: str) -> bool:
    """The instructor's token, compared in constant time."""
    return hmac.compare_digest(token.encode(), settings.admin_token.encode())


async def current_reader(
    state: StateDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(worker_bearer)],
    _admin: Annotated[HTTPAuthorizationCredentials | None, Depends(admin_bearer)],
) -> Worker | None:
    """Who may read the weights and the dataset: a registered, unrevoked worker (returned,
    and rate-limited as on every worker route) or the instructor (None; e.g.
    ``gan-coordinator export --url``). The class's work is not for anyone who can reach
    the port; the dashboard and its sample grids stay public.

    ``_admin`` reads the same header; it is here so /openapi.json lists both schemes.
    """
    if credentials is None or not credentials.credentials:
        raise CoordinatorError("not_authenticated")
    if _is_admin(state.settings, credentials.credentials):
        return None
    return await current_worker(state, await worker_token(state, credentials))


ReaderDep = Annotated[Worker | None, Depends(current_reader)]


async def require_admin(
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(admin_bearer)],
) -> None:
    """The instructor's token, compared in constant time."""
    if credentials is None or not credentials.credentials:
        raise CoordinatorError("not_authenticated")
    if not _is_admin(settings, credentials.credentials):
        raise CoordinatorError("not_admin")


AdminDep = Annotated[None, Depends(require_admin)]
