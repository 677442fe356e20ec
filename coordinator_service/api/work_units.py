"""Claim a unit, upload its result, or give it back: the heart of the worker protocol."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Body, Header, Query, Request, Response, status

from coordinator_service.api.convert import work_unit
from coordinator_service.api.deps import ConnDep, StateDep, WorkerDep
from coordinator_service.api.params import UnitIdPath
from coordinator_service.api.responses import WORKER_AUTH, errors
from coordinator_service.db.leases import LeasesRepo
from coordinator_service.db.models import AcceptedResult, Lease, ResultMetrics, Run
from coordinator_service.db.results import ResultsRepo
from coordinator_service.db.runs import RunsRepo
from coordinator_service.db.spot_checks import SpotChecksRepo
from coordinator_service.errors import CoordinatorError
from coordinator_service.publications import wait_for
from coordinator_service.settings import Settings
from coordinator_service.training import engine
from coordinator_service.training.result_bounds import HISTORY, result_norms, result_problem
from coordinator_service.training.spot_checks import result_distance
from shared.codec import CodecError
from shared.protocol import (
    LEASE_HEADER,
    MAX_CLAIM_WAIT,
    ClaimRequest,
    ReleaseResponse,
    ResultResponse,
    WorkUnit,
)
from shared.unit_result import UnitResult

router = APIRouter(tags=["work units"])
log = logging.getLogger(__name__)

LeaseHeader = Annotated[str, Header(alias=LEASE_HEADER, description="lease_id from the claim")]
WaitQuery = Annotated[
    float,
    Query(
        ge=0,
        le=MAX_CLAIM_WAIT,
        description="seconds to hold the request while there is nothing to do; the unit "
        "comes as soon as one is free, e.g. the moment the next phase is published "
        f"(0: answer at once; at most {MAX_CLAIM_WAIT:.0f})",
    ),
]
_FALLBACK_LIMIT = 64 << 20  # only for a lease that does not exist: refused anyway
# Which results are spot-checked: drawn by the coordinator when it accepts one, and
# never told to the worker.
_spot_check = random.SystemRandom()


@router.post(
    "/work-units/claim",
    response_model=WorkUnit,
    responses={
        204: {"description": "Nothing to do right now (within ``wait``); ask again."},
        **errors(*WORKER_AUTH, "worker_flagged", "no_run", "run_finished"),
    },
)
async def claim(
    worker: WorkerDep,
    state: StateDep,
    body: Annotated[ClaimRequest | None, Body()] = None,
    wait: WaitQuery = 0.0,
) -> WorkUnit | Response:
    """Lease the next unit of the current iteration (or a backup copy of a straggler, or
    a spot check of another worker's result); with ``wait``, hold the request until
    there is one (or the time is up)."""
    if worker.flagged_at is not None:
        raise CoordinatorError("worker_flagged")
    cached = body.cached_shards if body else []
    claim_id = body.claim_id if body else None
    deadline = time.monotonic() + wait
    while True:
        # Taken before looking, so a version published while we look still wakes us.
        ticket = state.publications.ticket()
        try:
            async with state.pool.acquire() as conn:  # no connection is held while waiting
                outcome = await LeasesRepo(conn).claim(
                    worker_id=worker.worker_id, cached_shards=cached, claim_id=claim_id
                )
            state.metrics.claim_lookups.inc()
            remaining = deadline - time.monotonic()
            if outcome.unit is not None or outcome.status in ("finished", "no_run") or (
                remaining <= 0
            ):
                break
            # While this process hears no notifications, look again every second.
            await wait_for(ticket, remaining if state.listening else min(1.0, remaining))
        finally:
            state.publications.forget(ticket)
    if outcome.unit is not None or outcome.status == "finished":
        # There may be more work (or the news that the run is over): the next in line looks.
        state.publications.pass_on()
    state.metrics.claims.labels(outcome.status).inc()
    if outcome.status == "finished":
        raise CoordinatorError("run_finished")
    if outcome.status == "no_run":
        raise CoordinatorError("no_run")  # the worker waits quietly for the instructor
    if outcome.unit is None or outcome.run is None:
        return Response(status_code=status.HTTP_204_NO_CONTENT)
    return work_unit(outcome.run, outcome.unit)


def _lease_uuid(value: str) -> UUID:
    try:
        return UUID(value)
    except ValueError:
        raise CoordinatorError("lease_lost", "The X-Lease-Id header is not a lease id.") from None


async def _read_capped(request: Request, limit: int) -> bytes:
    """The body, refused with 413 as soon as it is known to exceed ``limit``."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise CoordinatorError("result_too_large", f"The body is {declared} bytes; max {limit}.")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise CoordinatorError("result_too_large", f"The body exceeds {limit} bytes.")
        chunks.append(chunk)
    return b"".join(chunks)


def _answer(accepted: AcceptedResult, *, duplicate: bool) -> ResultResponse:
    return ResultResponse(
        unit_id=accepted.unit_id,
        iteration=accepted.iteration,
        accepted=True,
        num_samples=accepted.num_samples,
        duplicate=duplicate,
    )


@router.post(
    "/work-units/{unit_id}/result",
    responses=errors(
        *WORKER_AUTH,
        "worker_flagged",
        "unknown_unit",
        "lease_lost",
        "lease_expired",
        "stale_iteration",
        "unit_completed",
        "result_too_large",
        "invalid_result",
        "result_out_of_bounds",
    ),  # fmt: skip
    openapi_extra={
        "requestBody": {
            "required": True,
            "description": "safetensors result (shared.codec.encode_result)",
            "content": {
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
            },
        }
    },
)
async def upload_result(
    unit_id: UnitIdPath, request: Request, worker: WorkerDep, state: StateDep, lease_id: LeaseHeader
) -> ResultResponse:
    """Upload a unit's result (of the run's kind); the first valid result for a unit wins."""
    try:
        return await _upload_result(unit_id, request, worker, state, lease_id)
    except CoordinatorError as exc:
        state.metrics.results.labels(exc.code).inc()  # every refusal, by its reason
        raise


async def _upload_result(
    unit_id: int, request: Request, worker: WorkerDep, state: StateDep, lease_id: str
) -> ResultResponse:
    lease_key = _lease_uuid(lease_id)
    async with state.pool.acquire() as conn:
        lease = await LeasesRepo(conn).get(lease_id=lease_key)
        run = await RunsRepo(conn).get(run_id=lease.run_id) if lease else None
    limit = engine.result_limit(run.config) if run else _FALLBACK_LIMIT
    body = await _read_capped(request, limit)  # read before answering: clients see the status
    if lease is None or lease.unit_id != unit_id or lease.worker_id != worker.worker_id:
        async with state.pool.acquire() as conn:
            known = await LeasesRepo(conn).unit_exists(unit_id=unit_id)
        raise CoordinatorError("lease_lost" if known else "unknown_unit")
    if lease.status == "completed":  # only an accepted result completes a lease: a repeat
        async with state.pool.acquire() as conn:
            previous = await ResultsRepo(conn).previous_answer(lease_id=lease_key)
        if previous is not None:
            return _answer(previous, duplicate=True)
    assert run is not None
    if worker.flagged_at is not None:
        raise CoordinatorError("worker_flagged")
    if lease.check_of is not None:
        return await _upload_check(lease, run, body, worker.worker_id, state)
    too_old = run.iteration - lease.iteration > run.config.staleness_bound()
    if lease.status == "active" and too_old:
        await _end_stale(lease, state)
    if lease.status != "active" or too_old:
        code = {"expired": "lease_expired", "superseded": "unit_completed"}.get(
            lease.status, "stale_iteration" if too_old else "lease_lost"
        )
        raise CoordinatorError(code)
    kind = engine.result_layout(run.config, lease.iteration).kind  # what decoding demands
    async with state.pool.acquire() as conn:
        recent = await ResultsRepo(conn).recent_norms(run_id=run.run_id, kind=kind, limit=HISTORY)
    result, norms = await asyncio.to_thread(_validate, lease, run, body, recent, state.settings)
    try:
        async with state.pool.acquire() as conn:
            accepted = await ResultsRepo(conn).accept(
                lease_id=lease_key,
                run_id=run.run_id,
                worker_id=worker.worker_id,
                kind=result.kind,
                num_samples=result.num_samples,
                body=body,
                norms=norms,
                metrics=ResultMetrics(**vars(result.metrics)),
                spot_check=_spot_check.random() < run.config.spot_check_fraction,
                max_staleness=run.config.staleness_bound(),
            )
    except CoordinatorError as exc:
        if exc.code == "stale_iteration":  # too old by now: an asynchronous run folded meanwhile
            await _end_stale(lease, state)
        raise
    if accepted.duplicate:  # a simultaneous repeat of the upload that was accepted
        return _answer(accepted, duplicate=True)
    state.metrics.results.labels("accepted").inc()
    state.metrics.result_bytes.inc(len(body))
    state.hand_to_aggregator(run_id=run.run_id, lease_id=lease_key, result=result)
    return _answer(accepted, duplicate=False)


async def _end_stale(lease: Lease, state: StateDep) -> None:
    """A lease whose result is too old ends, and its images go to a worker with newer
    weights (with a barrier the step has done so already)."""
    async with state.pool.acquire() as conn:
        await LeasesRepo(conn).end_stale(lease_id=lease.lease_id)


def _validate(
    lease: Lease, run: Run, body: bytes, recent: list[list[float]], settings: Settings
) -> tuple[UnitResult, list[float]]:
    """The body decoded for this lease (422 ``invalid_result``) and its norms, within the
    bounds that ``recent`` norms set (422 ``result_out_of_bounds``). One call, for one
    hop to a thread: each hop queues behind the decoding of other uploads."""
    result = _decode_for(lease, run, body)
    norms = result_norms(result)
    problem = result_problem(
        result, norms, recent,
        max_abs=settings.result_max_abs, norm_ratio=settings.result_norm_ratio,
    )  # fmt: skip
    if problem is not None:
        raise CoordinatorError("result_out_of_bounds", f"The result was refused: {problem}.")
    return result, norms


def _decode_for(lease: Lease, run: Run, body: bytes) -> UnitResult:
    """The body as a result for this lease's unit and version, or 422 ``invalid_result``."""
    try:
        result = engine.decode(body, run.config, lease.iteration)
    except CodecError as exc:
        raise CoordinatorError("invalid_result", f"The result was refused: {exc}") from None
    if result.iteration != lease.iteration:
        raise CoordinatorError(
            "invalid_result",
            f"The result says iteration {result.iteration}; "
            f"the lease is for iteration {lease.iteration}.",
        )
    problem = engine.count_problem(result, run.config, lease.num_images)
    if problem is not None:
        raise CoordinatorError("invalid_result", f"The result says {problem}.")
    return result


async def _upload_check(
    lease: Lease, run: Run, body: bytes, worker_id: int, state: StateDep
) -> ResultResponse:
    """A spot check's recomputation: compared with the checked result, never folded.

    The worker is answered as for any result, agreed or not, so that a check teaches a
    dishonest worker nothing about which of its results are compared.
    """
    if lease.status not in ("active", "completed"):
        raise CoordinatorError("lease_expired" if lease.status == "expired" else "lease_lost")
    assert lease.check_of is not None
    mine = await asyncio.to_thread(_decode_for, lease, run, body)
    async with state.pool.acquire() as conn:
        target = await SpotChecksRepo(conn).target(result_lease_id=lease.check_of)
    if target is None or target.body is None:
        raise CoordinatorError("lease_lost", "The result this lease checks is gone.")
    theirs = await asyncio.to_thread(engine.decode, target.body, run.config, lease.iteration)
    distance = await asyncio.to_thread(result_distance, mine, theirs)
    async with state.pool.acquire() as conn:
        verdict = await SpotChecksRepo(conn).decide(
            lease_id=lease.lease_id,
            worker_id=worker_id,
            distance=distance,
            tolerance=run.config.spot_check_tolerance,
        )
    if verdict is None:
        raise CoordinatorError("lease_lost")
    if not verdict.duplicate:
        state.metrics.spot_checks.labels("agreed" if verdict.agreed else "disagreed").inc()
        if not verdict.agreed:
            log.warning(
                "spot check of unit %d (version %d): workers %d and %d disagree "
                "(relative distance %.3g, tolerance %.3g)%s",
                lease.unit_id, lease.iteration, target.worker_id, worker_id, distance,
                run.config.spot_check_tolerance,
                f"; flagged worker(s) {verdict.flagged}" if verdict.flagged else "",
            )  # fmt: skip
    answer = AcceptedResult(
        unit_id=lease.unit_id, iteration=lease.iteration, num_samples=mine.num_samples
    )
    return _answer(answer, duplicate=verdict.duplicate)


@router.post(
    "/work-units/{unit_id}/release",
    responses=errors(*WORKER_AUTH, "unknown_unit", "lease_lost"),
)
async def release(
    unit_id: UnitIdPath, worker: WorkerDep, conn: ConnDep, lease_id: LeaseHeader
) -> ReleaseResponse:
    """Give a lease back (a worker quitting mid-unit): the unit returns to the pool now."""
    repo = LeasesRepo(conn)
    if not await repo.unit_exists(unit_id=unit_id):
        raise CoordinatorError("unknown_unit")
    released = await repo.release(
        lease_id=_lease_uuid(lease_id), worker_id=worker.worker_id, unit_id=unit_id
    )
    if not released:
        raise CoordinatorError("lease_lost")
    return ReleaseResponse(unit_id=unit_id, released=True)
