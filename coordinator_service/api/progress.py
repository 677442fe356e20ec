"""Read-only progress for everyone: history, samples, runs (the dataset is in api/dataset.py).

/status, /leaderboard and /cluster, richer, are in :mod:`coordinator_service.api.dashboard`.
"""

from __future__ import annotations

from fastapi import APIRouter, Response

from coordinator_service.api.deps import ConnDep
from coordinator_service.api.params import IterationPath, RunIdPath, RunIdQuery, SinceQuery
from coordinator_service.api.responses import errors
from coordinator_service.db.models import Run
from coordinator_service.db.runs import RunsRepo
from coordinator_service.db.states import StatesRepo
from coordinator_service.errors import CoordinatorError
from shared.protocol import HistoryEntry, RunSummary

router = APIRouter(tags=["progress"])


async def _run(conn: ConnDep, run_id: int | None) -> Run:
    repo = RunsRepo(conn)
    run = await (repo.get(run_id=run_id) if run_id is not None else repo.latest())
    if run is None:
        raise CoordinatorError("unknown_run" if run_id is not None else "no_run")
    return run


@router.get("/history", responses=errors("no_run", "unknown_run"))
async def history(
    conn: ConnDep, run_id: RunIdQuery = None, since: SinceQuery = 0
) -> list[HistoryEntry]:
    """One entry per optimizer step: losses, D accuracies, workers, images."""
    run = await _run(conn, run_id)
    return await StatesRepo(conn).history(run_id=run.run_id, since=since)


@router.get(
    "/samples/{iteration}.png",
    response_class=Response,
    responses={200: {"content": {"image/png": {}}}, **errors("no_run", "unknown_sample")},
)
async def sample(iteration: IterationPath, conn: ConnDep, run_id: RunIdQuery = None) -> Response:
    """The fixed-noise sample grid G produced after ``iteration`` steps."""
    run = await _run(conn, run_id)
    png = await StatesRepo(conn).sample_png(run_id=run.run_id, iteration=iteration)
    if png is None:
        raise CoordinatorError("unknown_sample")
    return Response(png, media_type="image/png", headers={"Cache-Control": "public, max-age=86400"})


@router.get(
    "/samples",
    responses={
        200: {"content": {"application/json": {"example": [10, 20, 30, 40]}}},
        **errors("no_run", "unknown_run"),
    },
)
async def sample_list(conn: ConnDep, run_id: RunIdQuery = None) -> list[int]:
    """Iterations that have a sample grid."""
    run = await _run(conn, run_id)
    return await StatesRepo(conn).sample_iterations(run_id=run.run_id)


@router.get("/runs")
async def runs(conn: ConnDep) -> list[RunSummary]:
    """Every run, past and present."""
    return [r.summary() for r in await RunsRepo(conn).all()]


@router.get("/runs/{run_id}", responses=errors("unknown_run"))
async def run_detail(run_id: RunIdPath, conn: ConnDep) -> RunSummary:
    """One run's config and position."""
    return (await _run(conn, run_id)).summary()
