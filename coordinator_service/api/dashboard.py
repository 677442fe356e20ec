"""The class dashboard (GET /) and the read-only JSON it polls: status, leaderboard, cluster.

History and sample grids come from :mod:`coordinator_service.api.progress`; this module
adds what the page needs on top, the instructor's CSV export of the leaderboard, and the
traffic middleware and gauges behind ``/metrics``.
"""

from __future__ import annotations

import csv
import io
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, Query, Response
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from coordinator_service.api.deps import AdminDep, ConnDep, CoordinatorState
from coordinator_service.api.responses import ADMIN_AUTH, errors
from coordinator_service.dashboard_models import (
    THROUGHPUT_WINDOW_SECONDS,
    ClassState,
    ClusterResources,
    DashboardStatus,
    LeaderboardRow,
    ThroughputInfo,
    WorkerCounts,
)
from coordinator_service.db.dashboard import DashboardRepo, WorkerRow
from coordinator_service.db.results import ResultsRepo
from coordinator_service.db.runs import RunsRepo
from coordinator_service.flops import flops_per_image
from coordinator_service.training import engine
from shared.protocol import API_PREFIX, LOCAL_KINDS, UnitCounts

router = APIRouter(tags=["progress"])

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
_STATES: dict[str, ClassState] = {
    "active": "running",
    "paused": "paused",
    "finished": "finished",
    "stopped": "stopped",
}


@router.get("/status")
async def status(conn: ConnDep) -> DashboardStatus:
    """The current (or latest) run, its progress, the class's activity and throughput."""
    run = await RunsRepo(conn).latest()
    workers = await DashboardRepo(conn).worker_counts()
    if run is None:
        now = datetime.now(timezone.utc)
        return DashboardStatus(
            state="no_run", run=None, result_kind=None, iteration=0, epoch=0, max_epochs=None,
            max_iterations=None, epoch_progress=0.0, images_per_epoch=0, units=UnitCounts(),
            results_waiting=0, images_processed=0, workers=workers,
            active_workers=workers.active, total_workers=workers.total,
            throughput=ThroughputInfo(window_seconds=0.0, recent_images=0, images_per_second=0.0,
                                      flops_per_image=0.0, gflops=0.0),
            started_at=None, finished_at=None, elapsed_seconds=0.0, last_step_at=None,
            latest_sample_iteration=None, server_time=now,
        )  # fmt: skip
    config = run.config
    units = await RunsRepo(conn).unit_counts(run_id=run.run_id, epoch=run.epoch)
    waiting = await ResultsRepo(conn).count_open(run_id=run.run_id)
    # An ended run shows the rate of its last minutes, not a rate decaying to zero.
    totals = await DashboardRepo(conn).run_totals(
        run_id=run.run_id, window_seconds=THROUGHPUT_WINDOW_SECONDS, until=run.finished_at
    )
    now = totals.now
    lifetime = ((run.finished_at or now) - run.created_at).total_seconds()
    # A run younger than the window is measured over its own lifetime, not diluted.
    window = max(1.0, min(THROUGHPUT_WINDOW_SECONDS, lifetime))
    rate = totals.recent_images / window
    # Results of a synchronous run count each image once per phase: spread its cost.
    per_image = flops_per_image(
        config.latent_dim, config.generator_features, config.discriminator_features
    ) / engine.strategy(config).versions_per_iteration
    in_epoch = units.pending + units.leased + units.done
    local = config.result_kind in LOCAL_KINDS
    return DashboardStatus(
        state=_STATES[run.status],
        run=run.summary(),
        result_kind=config.result_kind,
        versions_per_iteration=engine.strategy(config).versions_per_iteration,
        result_dtype=config.result_dtype,
        inner_steps=config.inner_steps if local else None,
        outer_steps=totals.steps if local else None,  # one outer step per coordinator step
        result_bytes_per_image=(
            totals.result_bytes / totals.result_images if totals.result_images else None
        ),
        iteration=run.iteration,
        epoch=run.epoch,
        max_epochs=config.max_epochs,
        max_iterations=config.max_iterations,
        epoch_progress=units.done_images / config.dataset.size if in_epoch else 0.0,
        images_per_epoch=config.dataset.size,
        units=units,
        results_waiting=waiting,
        images_processed=totals.images_processed,
        workers=workers,
        active_workers=workers.active,
        total_workers=workers.total,
        throughput=ThroughputInfo(
            window_seconds=window,
            recent_images=totals.recent_images,
            images_per_second=rate,
            flops_per_image=per_image,
            gflops=rate * per_image / 1e9,
        ),
        started_at=run.created_at,
        finished_at=run.finished_at,
        elapsed_seconds=lifetime,
        last_step_at=totals.last_step_at,
        latest_sample_iteration=totals.latest_sample_iteration,
        server_time=now,
    )


def hardware_summary(row: WorkerRow) -> str:
    """One line for the leaderboard: the GPU if there is one, else the CPU."""
    if row.gpu_count > 0:
        name = row.device_name or "GPU"
        count = f"{row.gpu_count}× " if row.gpu_count > 1 else ""
        vram = f" ({row.gpu_vram_gb:.0f} GB)" if row.gpu_vram_gb > 0 else ""
        return f"{count}{name}{vram}"
    if row.device.startswith("mps"):
        return row.device_name or "Apple GPU (MPS)"
    ram = f", {row.ram_gb:.0f} GB RAM" if row.ram_gb > 0 else ""
    cores = f"{row.cpu_cores} core{'s' if row.cpu_cores != 1 else ''}"
    return f"CPU, {cores}{ram}"


def leaderboard_row(row: WorkerRow) -> LeaderboardRow:
    return LeaderboardRow(**row.model_dump(), hardware=hardware_summary(row))


@router.get("/leaderboard")
async def leaderboard(
    conn: ConnDep, limit: Annotated[int, Query(ge=1, le=1000)] = 100
) -> list[LeaderboardRow]:
    """Workers by images contributed to steps, with hardware and active/idle/offline."""
    rows = await DashboardRepo(conn).leaderboard(limit=limit)
    return [leaderboard_row(r) for r in rows]


@router.get("/cluster")
async def cluster(conn: ConnDep) -> ClusterResources:
    """CPU cores, RAM, GPUs and VRAM of the workers online now (heard from in 5 minutes)."""
    totals = await DashboardRepo(conn).cluster()
    return ClusterResources.model_validate(totals.model_dump())


CSV_COLUMNS = (
    "rank", "worker_id", "name", "status", "total_images", "total_work_units", "last_heartbeat",
    "registered_at", "hardware", "device", "device_name", "cpu_cores", "ram_gb", "gpu_count",
    "gpu_vram_gb", "revoked", "flagged",
)  # fmt: skip


@router.get(
    "/admin/leaderboard.csv",
    tags=["admin"],
    response_class=Response,
    responses={
        200: {
            "content": {"text/csv": {"example": ",".join(CSV_COLUMNS) + "\n1,7,ada,active,…"}},
            "description": "Every worker, revoked ones included, for grading.",
        },
        **errors(*ADMIN_AUTH),
    },
)
async def leaderboard_csv(_: AdminDep, conn: ConnDep) -> Response:
    """The whole leaderboard as CSV (a spreadsheet opens it as is)."""
    rows = await DashboardRepo(conn).leaderboard(include_revoked=True, limit=1_000_000)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        record: dict[str, Any] = leaderboard_row(row).model_dump()
        for key in ("last_heartbeat", "registered_at"):
            record[key] = record[key].isoformat() if record[key] else ""
        writer.writerow(record)
    return Response(
        buffer.getvalue(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": 'attachment; filename="leaderboard.csv"'},
    )


async def refresh_gauges(state: CoordinatorState) -> None:
    """Set the /metrics gauges that describe the database rather than this process."""
    async with state.pool.acquire() as conn:
        repo = DashboardRepo(conn)
        iteration = await repo.live_iteration()
        counts: WorkerCounts = await repo.worker_counts()
    metrics = state.metrics
    metrics.iteration.set(iteration if iteration is not None else 0)
    for name in ("active", "idle", "offline"):
        metrics.workers.labels(name).set(getattr(counts, name))


CLAIM_PATH = f"{API_PREFIX}/work-units/claim"


class TrafficMetrics:
    """ASGI middleware: request and response body bytes, how long claims take, and each
    response's ``Server-Timing: app;dur=<ms>`` (its time in the app until its headers).

    Counting at the ASGI level sees every body (results in, weights and shards out)
    without each route having to remember to count. The header splits a slow answer into
    the coordinator's share and the network's or client's (the load bench reads it, and
    browsers show it in their developer tools).
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        coordinator = getattr(scope["app"].state, "coordinator", None)
        if scope["type"] != "http" or coordinator is None:
            await self.app(scope, receive, send)
            return
        metrics = coordinator.metrics
        started = time.perf_counter()

        async def counting_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                metrics.bytes_in.inc(len(message.get("body", b"")))
            return message

        async def counting_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                took = f"app;dur={(time.perf_counter() - started) * 1000:.2f}"
                headers = [*message.get("headers", ()), (b"server-timing", took.encode())]
                message = {**message, "headers": headers}
            elif message["type"] == "http.response.body":
                metrics.bytes_out.inc(len(message.get("body", b"")))
            await send(message)

        try:
            await self.app(scope, counting_receive, counting_send)
        finally:
            if scope["path"] == CLAIM_PATH:
                metrics.claim_seconds.observe(time.perf_counter() - started)


def install(app: FastAPI) -> None:
    """The page at /, its files at /static, and the traffic middleware."""
    app.add_middleware(TrafficMetrics)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/", include_in_schema=False)
    async def dashboard_page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})
