"""The instructor's endpoints (admin token): runs, join codes, revoking workers."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, status
from pydantic import ValidationError

from coordinator_service.api.deps import AdminDep, ConnDep, StateDep
from coordinator_service.api.params import WorkerIdPath
from coordinator_service.api.responses import ADMIN_AUTH, errors
from coordinator_service.datasets.binding import bind_dataset
from coordinator_service.datasets.catalog import datasets_root
from coordinator_service.db.runs import RunsRepo
from coordinator_service.db.workers import WorkersRepo
from coordinator_service.errors import CoordinatorError
from coordinator_service.join_codes import new_join_code
from coordinator_service.training import engine
from coordinator_service.training.planner import plan_epoch
from coordinator_service.training.presets import resolve
from coordinator_service.weights_cache import CachedWeights
from shared.protocol import (
    JoinCodeResponse,
    RevokeResponse,
    RunStartRequest,
    RunSummary,
    WorkerFlagResponse,
)

router = APIRouter(prefix="/admin", tags=["admin"])

@router.post(
    "/runs",
    status_code=status.HTTP_201_CREATED,
    responses=errors(*ADMIN_AUTH, "run_active", "invalid_request"),
)
async def start_run(
    body: RunStartRequest, _: AdminDep, conn: ConnDep, state: StateDep
) -> RunSummary:
    """Start a run: W_0 from the seed, the first epoch's units; one live run at a time."""
    overrides = bind_dataset(body.config, datasets_root(state.settings))
    try:
        config = resolve(body.preset, overrides)
    except ValidationError as exc:
        raise CoordinatorError("invalid_request", f"Invalid run options: {exc}") from None
    if await RunsRepo(conn).live() is not None:
        raise CoordinatorError("run_active")
    _state, encoded = await asyncio.to_thread(engine.initial_state, config)
    assert encoded.checkpoint is not None  # W_0 always carries its (empty) Adam state
    run = await RunsRepo(conn).create(
        config=config,
        weights=encoded.weights,
        weights_etag=encoded.weights_etag,
        checkpoint=encoded.checkpoint,
        units=await asyncio.to_thread(plan_epoch, config, 0),  # 50 ms at CelebA's size
    )
    state.cache.put(run.run_id, 0, CachedWeights(encoded.weights, encoded.weights_etag))
    return run.summary()


async def _set_status(conn: ConnDep, new_status: str) -> RunSummary:
    run = await RunsRepo(conn).live()
    if run is None:
        raise CoordinatorError("run_not_live")
    return (await RunsRepo(conn).set_status(run_id=run.run_id, status=new_status)).summary()


@router.post("/runs/current/pause", responses=errors(*ADMIN_AUTH, "run_not_live"))
async def pause_run(_: AdminDep, conn: ConnDep) -> RunSummary:
    """No new claims and no steps until resumed; results in flight are still accepted."""
    return await _set_status(conn, "paused")


@router.post("/runs/current/resume", responses=errors(*ADMIN_AUTH, "run_not_live"))
async def resume_run(_: AdminDep, conn: ConnDep) -> RunSummary:
    """Back to training."""
    return await _set_status(conn, "active")


@router.post("/runs/current/stop", responses=errors(*ADMIN_AUTH, "run_not_live"))
async def stop_run(_: AdminDep, conn: ConnDep) -> RunSummary:
    """End the run for good (workers get 410); its history stays queryable."""
    return await _set_status(conn, "stopped")


@router.get("/join-code", responses=errors(*ADMIN_AUTH))
async def join_code(_: AdminDep, conn: ConnDep) -> JoinCodeResponse:
    """The code students register with."""
    return JoinCodeResponse(join_code=await WorkersRepo(conn).current_join_code() or "")


@router.post("/join-code/rotate", responses=errors(*ADMIN_AUTH))
async def rotate_join_code(_: AdminDep, conn: ConnDep) -> JoinCodeResponse:
    """A fresh join code of 60 bits, e.g. ``k7q2-m9xd-4hpt`` (coordinator_service.join_codes:
    about 1.8e10 years to guess at the registration limit); the old one stops working
    (registered workers keep their tokens)."""
    code = new_join_code()
    return JoinCodeResponse(join_code=await WorkersRepo(conn).rotate_join_code(code=code))


@router.post("/workers/{worker_id}/revoke", responses=errors(*ADMIN_AUTH, "unknown_worker"))
async def revoke_worker(worker_id: WorkerIdPath, _: AdminDep, conn: ConnDep) -> RevokeResponse:
    """Shut a worker out: 403 from now on, its leases ended, its unconsumed results dropped."""
    revoked = await WorkersRepo(conn).revoke(worker_id=worker_id)
    if revoked is None:
        raise CoordinatorError("unknown_worker")
    return revoked


@router.post("/workers/{worker_id}/clear-flag", responses=errors(*ADMIN_AUTH, "unknown_worker"))
async def clear_flag(worker_id: WorkerIdPath, _: AdminDep, conn: ConnDep) -> WorkerFlagResponse:
    """Trust a worker that spot checks flagged again (e.g. after checking its machine): it
    may claim and upload again, and only disagreements from now on count towards a flag."""
    if not await WorkersRepo(conn).clear_flag(worker_id=worker_id):
        raise CoordinatorError("unknown_worker")
    return WorkerFlagResponse(worker_id=worker_id, flagged=False)
