"""The app factory and its one lifespan, which owns the pool and the aggregator task."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Literal

from fastapi import APIRouter, FastAPI
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, Field

from coordinator_service import notifications
from coordinator_service.api import (
    admin,
    dashboard,
    dataset,
    progress,
    weights,
    work_units,
    workers,
)
from coordinator_service.api import errors as error_handlers
from coordinator_service.api import responses as error_docs
from coordinator_service.api.deps import CoordinatorState, StateDep
from coordinator_service.db.pool import check_schema, create_pool
from coordinator_service.db.runs import RunsRepo
from coordinator_service.db.workers import WorkersRepo
from coordinator_service.metrics import Metrics, watch_event_loop
from coordinator_service.settings import Settings
from coordinator_service.training.aggregator import Aggregator
from coordinator_service.weights_cache import WeightsCache
from shared.protocol import API_PREFIX

log = logging.getLogger(__name__)


class Health(BaseModel):
    """What /healthz answers: load balancers read the status code, people the body."""

    status: Literal["ok", "degraded"]
    problem: str | None = Field(default=None, description="why training cannot go on")


def create_app(settings: Settings) -> FastAPI:
    """A coordinator for ``settings``; nothing happens until the lifespan starts."""
    if not settings.database_url:
        raise ValueError("create_app needs settings.database_url (the CLI starts embedded PG)")
    database_url = settings.database_url

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if settings.torch_threads > 0:
            import torch

            torch.set_num_threads(settings.torch_threads)
        pool = await create_pool(
            database_url, min_size=settings.pool_min_size, max_size=settings.pool_max_size
        )
        tasks: list[asyncio.Task[None]] = []
        try:
            await check_schema(pool)
            async with pool.acquire() as conn:
                await WorkersRepo(conn).ensure_join_code(code=settings.join_code)
            state = CoordinatorState(
                settings=settings,
                pool=pool,
                cache=WeightsCache(settings.weights_cache_size),
                metrics=Metrics(),
            )
            tasks.append(asyncio.create_task(watch_event_loop(state.metrics.loop_lag)))
            handlers = {notifications.VERSIONS: state.publications.announce}
            if settings.aggregator_enabled:
                aggregator = Aggregator(
                    pool=pool,
                    settings=settings,
                    database_url=database_url,
                    cache=state.cache,
                    metrics=state.metrics,
                )
                state.aggregator = aggregator
                handlers[notifications.RESULTS] = aggregator.wake.set
                tasks.append(asyncio.create_task(aggregator.run_forever(), name="aggregator"))
            state.listener = notifications.Listener(database_url, handlers)
            tasks.append(asyncio.create_task(state.listener.run_forever(), name="listener"))
            app.state.coordinator = state
            yield
        finally:
            for task in tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await pool.close()

    app = FastAPI(
        title="GANNs with friends: coordinator",
        version="1.0",
        summary="Distributed DCGAN training for a classroom.",
        lifespan=lifespan,
    )
    error_handlers.install(app)
    error_docs.install(app)  # /openapi.json documents what those handlers send
    api = APIRouter(prefix=API_PREFIX)
    for module in (workers, work_units, weights, dataset, progress, dashboard, admin):
        api.include_router(module.router)
    app.include_router(api)

    @app.get(
        "/healthz",
        tags=["ops"],
        responses={
            200: {"model": Health, "description": "Serving, and the live run (if any) advances"},
            503: {"model": Health, "description": "Training is stuck: ``problem`` says why"},
        },
    )
    async def healthz(state: StateDep) -> Response:
        """Liveness, database reachability and whether the live run can advance."""
        async with state.pool.acquire() as conn:
            run = await RunsRepo(conn).live()
        if run is not None and run.problem is not None:
            return JSONResponse({"status": "degraded", "problem": run.problem}, status_code=503)
        return JSONResponse({"status": "ok"})

    @app.get("/metrics", tags=["ops"], response_class=Response)
    async def metrics(state: StateDep) -> Response:
        """Prometheus metrics."""
        await dashboard.refresh_gauges(state)
        return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    dashboard.install(app)  # GET /, /static, traffic metrics
    return app
