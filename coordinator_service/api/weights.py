"""W_t as safetensors: immutable per iteration, so served from memory with a strong ETag.

Only for registered, unrevoked workers and the instructor (``ReaderDep``): the weights
are the class's work, not for whoever can reach the port.
"""

from __future__ import annotations

import asyncio
import time
from typing import Annotated, Literal

from fastapi import APIRouter, Header, Query, Response
from fastapi.responses import RedirectResponse

from coordinator_service.api.convert import weights_url
from coordinator_service.api.deps import ReaderDep, StateDep
from coordinator_service.api.params import IterationPath, RunIdQuery
from coordinator_service.api.responses import WORKER_AUTH, errors
from coordinator_service.db.models import Run
from coordinator_service.db.runs import RunsRepo
from coordinator_service.db.states import StatesRepo
from coordinator_service.errors import CoordinatorError
from coordinator_service.weights_cache import CachedWeights
from shared.codec import select_snapshot

router = APIRouter(tags=["weights"])

NetworksQuery = Annotated[
    list[Literal["generator", "discriminator"]] | None,
    Query(
        description="only these networks' parameters (and every BatchNorm buffer): what a "
        "worker holding the previous iteration lacks after one synchronous phase"
    ),
]
IMMUTABLE = "public, max-age=31536000, immutable"
PENDING_POLL = 0.05  # seconds between looks at a published version's unwritten weights
PENDING_PATIENCE = 10.0  # then a 503 that workers retry (it takes a fraction of a second)


async def _run(state: StateDep, run_id: int | None) -> Run:
    async with state.pool.acquire() as conn:
        repo = RunsRepo(conn)
        run = await (repo.get(run_id=run_id) if run_id is not None else repo.latest())
    if run is None:
        raise CoordinatorError("unknown_run" if run_id is not None else "no_run")
    return run


@router.get(
    "/weights/current",
    status_code=307,
    response_class=RedirectResponse,
    responses={307: {"description": "Redirect to the current iteration's weights"},
               **errors(*WORKER_AUTH, "no_run", "unknown_run")},
)
async def current_weights(
    _reader: ReaderDep, state: StateDep, run_id: RunIdQuery = None
) -> RedirectResponse:
    """Where the newest weights are: a redirect, never cached, to an immutable URL."""
    run = await _run(state, run_id)
    return RedirectResponse(
        weights_url(run.run_id, run.iteration), 307, headers={"Cache-Control": "no-store"}
    )


@router.get(
    "/weights/{iteration}",
    response_class=Response,
    responses={
        200: {"content": {"application/octet-stream": {}},
              "description": "safetensors W_t (shared.codec.encode_snapshot)"},
        304: {"description": "Not modified (If-None-Match matched the ETag)"},
        **errors(*WORKER_AUTH, "no_run", "unknown_run", "unknown_iteration", "weights_pending"),
    },
)
async def weights(
    iteration: IterationPath,
    _reader: ReaderDep,
    state: StateDep,
    run_id: RunIdQuery = None,
    networks: NetworksQuery = None,
    if_none_match: Annotated[str | None, Header()] = None,
) -> Response:
    """The weights of one iteration (parameters and BatchNorm buffers), or a part."""
    run = await _run(state, run_id)

    async def load() -> CachedWeights | None:
        """From the database; a version published a moment ago by another process may
        not have its weights stored yet (``commit_step``): wait for them a while."""
        deadline = time.monotonic() + PENDING_PATIENCE
        while True:
            async with state.pool.acquire() as conn:
                stored = await StatesRepo(conn).weights(run_id=run.run_id, iteration=iteration)
            if stored is None:
                return None
            if stored.weights is not None:
                return CachedWeights(stored.weights, stored.weights_etag)
            if time.monotonic() >= deadline:
                raise CoordinatorError("weights_pending", headers={"Retry-After": "1"})
            await asyncio.sleep(PENDING_POLL)
            written = state.cache.peek(run.run_id, iteration)  # by this process's aggregator
            if written is not None:
                return written

    cached = await state.cache.get(run.run_id, iteration, load)
    if cached is None:
        raise CoordinatorError("unknown_iteration")
    chosen = sorted(set(networks or []))
    etag = cached.etag if not chosen else cached.etag[:-1] + "-" + "-".join(chosen) + '"'
    headers = {"ETag": etag, "Cache-Control": IMMUTABLE}
    if if_none_match is not None and etag in if_none_match:
        return Response(status_code=304, headers=headers)
    data = select_snapshot(cached.data, chosen) if chosen else cached.data
    return Response(data, media_type="application/octet-stream", headers=headers)
