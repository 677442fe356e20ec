"""Worker registration (join code in, token out), identity and heartbeats."""

from __future__ import annotations

import secrets

from fastapi import APIRouter, Request, status

from coordinator_service.api.deps import (
    ConnDep,
    StateDep,
    WorkerDep,
    WorkerTokenDep,
    active_worker,
    hash_token,
)
from coordinator_service.api.responses import WORKER_AUTH, errors
from coordinator_service.db.leases import LeasesRepo
from coordinator_service.db.workers import WorkersRepo
from coordinator_service.errors import CoordinatorError
from shared.protocol import HeartbeatResponse, RegisterRequest, RegisterResponse, WorkerInfo

router = APIRouter(tags=["workers"])


@router.post(
    "/workers",
    status_code=status.HTTP_201_CREATED,
    responses=errors("invalid_join_code", "invalid_request", "rate_limited"),
)
async def register(
    body: RegisterRequest, request: Request, state: StateDep, conn: ConnDep
) -> RegisterResponse:
    """Join the class with its join code; the token in the answer is shown only once.

    At most ``registration_burst`` at once, then ``registrations_per_minute``, per client
    address (429 with Retry-After): a flood of identities and join-code guesses stop
    before the database. Behind a reverse proxy the address is the one uvicorn reads
    from X-Forwarded-For (``--forwarded-allow-ips``).
    """
    address = request.client.host if request.client else "unknown"
    state.limits.registrations.take(address)
    repo = WorkersRepo(conn)
    if not await repo.join_code_valid(code=body.join_code):
        raise CoordinatorError("invalid_join_code")
    token = secrets.token_urlsafe(32)
    worker = await repo.register(
        name=body.name, token_hash=hash_token(token), hardware=body.hardware
    )
    return RegisterResponse(worker_id=worker.worker_id, name=worker.name, token=token)


@router.get("/workers/me", responses=errors(*WORKER_AUTH))
async def whoami(worker: WorkerDep) -> WorkerInfo:
    """Who this token belongs to and what it has contributed."""
    return WorkerInfo(
        worker_id=worker.worker_id,
        name=worker.name,
        total_images=worker.total_images,
        total_work_units=worker.total_work_units,
    )


@router.post("/workers/me/heartbeat", responses=errors(*WORKER_AUTH))
async def heartbeat(token_hash: WorkerTokenDep, conn: ConnDep) -> HeartbeatResponse:
    """I am alive: every active lease of this worker gets a new deadline."""
    beat = await LeasesRepo(conn).heartbeat(token_hash=token_hash)  # one round trip
    if beat is None:
        raise CoordinatorError("invalid_token")
    active_worker(beat.worker)  # a revoked worker's heartbeat changed nothing: refused
    return HeartbeatResponse(
        worker_id=beat.worker.worker_id, leases_extended=beat.leases_extended,
        lease_deadline=beat.lease_deadline, lease_seconds_left=beat.lease_seconds_left,
    )  # fmt: skip
