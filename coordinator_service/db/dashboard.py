"""Read-only queries behind the dashboard, /status, /leaderboard, /cluster and /metrics.

Every "how recently" judgement uses the database's clock (``now()``), the same clock
that stamped ``last_heartbeat`` and ``accepted_at``, so a coordinator host whose clock
drifts from PostgreSQL's never shows a worker as offline by mistake.
"""

from __future__ import annotations

from datetime import datetime

import asyncpg
from pydantic import BaseModel, ConfigDict

from coordinator_service.dashboard_models import (
    ACTIVE_SECONDS,
    IDLE_SECONDS,
    DeviceCount,
    WorkerCounts,
    WorkerStatus,
)


class _Row(BaseModel):
    model_config = ConfigDict(frozen=True)


class WorkerRow(_Row):
    """A worker with its hardware, rank and how recently it was heard from."""

    rank: int
    worker_id: int
    name: str
    status: WorkerStatus
    total_images: int
    total_work_units: int
    last_heartbeat: datetime | None
    seconds_since_seen: float | None
    device: str
    device_name: str
    cpu_cores: int
    ram_gb: float
    gpu_count: int
    gpu_vram_gb: float
    registered_at: datetime
    revoked: bool
    flagged: bool
    flag_reason: str | None
    images_per_second: float | None
    inner_steps: int | None


class ClusterTotals(_Row):
    workers_online: int
    workers_active: int
    cpu_cores: int
    ram_gb: float
    gpus: int
    gpu_vram_gb: float
    devices: list[DeviceCount]


class RunTotals(_Row):
    """Counters of one run at the moment of the query."""

    images_processed: int
    steps: int
    last_step_at: datetime | None
    recent_images: int
    latest_sample_iteration: int | None
    result_bytes: int
    result_images: int
    now: datetime


# $1 = active seconds, $2 = idle seconds.
_STATUS = """
CASE WHEN w.revoked_at IS NOT NULL THEN 'revoked'
     WHEN w.flagged_at IS NOT NULL THEN 'flagged'
     WHEN w.last_heartbeat >= now() - make_interval(secs => $1) THEN 'active'
     WHEN w.last_heartbeat >= now() - make_interval(secs => $2) THEN 'idle'
     ELSE 'offline' END
"""

_WORKERS = f"""
SELECT rank() OVER (PARTITION BY w.revoked_at IS NULL, w.flagged_at IS NULL
                    ORDER BY w.total_images DESC) AS rank,
       w.worker_id, w.name, {_STATUS} AS status, w.total_images, w.total_work_units,
       w.last_heartbeat, extract(epoch FROM now() - w.last_heartbeat)::float8 AS seconds_since_seen,
       w.device, w.device_name, w.cpu_cores, w.ram_gb, w.gpu_count, w.gpu_vram_gb,
       w.created_at AS registered_at, w.revoked_at IS NOT NULL AS revoked,
       w.flagged_at IS NOT NULL AS flagged, w.flag_reason, w.images_per_second,
       -- H of the local-steps unit it computes now: its speed sets it in a dynamic run.
       (SELECT ceil(cardinality(u.image_indices)::float8
                    / (r.config->>'batch_size')::integer)::integer
        FROM leases l JOIN work_units u USING (unit_id) JOIN runs r ON r.run_id = l.run_id
        WHERE l.worker_id = w.worker_id AND l.status = 'active' AND l.check_of IS NULL
          AND r.config->>'result_kind' IN ('local_steps', 'async_local_steps')
        ORDER BY l.created_at DESC LIMIT 1) AS inner_steps
FROM workers w
WHERE $3 OR w.revoked_at IS NULL
-- Flagged workers' credit is withheld: they rank among themselves, after everyone else.
ORDER BY w.revoked_at IS NOT NULL, w.flagged_at IS NOT NULL, w.total_images DESC,
         w.total_work_units DESC, w.worker_id
LIMIT $4
"""


class DashboardRepo:
    """Aggregates over ``workers``, ``history``, ``results`` and ``samples``; never writes."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    async def leaderboard(
        self, *, include_revoked: bool = False, limit: int = 1000
    ) -> list[WorkerRow]:
        """Workers by images contributed; revoked ones only when asked (the admin export)."""
        records = await self.conn.fetch(
            _WORKERS, ACTIVE_SECONDS, IDLE_SECONDS, include_revoked, limit
        )
        return [WorkerRow.model_validate(dict(r)) for r in records]

    async def worker_counts(self) -> WorkerCounts:
        """Non-revoked workers by status."""
        record = await self.conn.fetchrow(
            f"SELECT count(*) FILTER (WHERE s = 'active') AS active, "
            f"count(*) FILTER (WHERE s = 'idle') AS idle, "
            f"count(*) FILTER (WHERE s = 'offline') AS offline, count(*) AS total "
            f"FROM (SELECT {_STATUS} AS s FROM workers w WHERE w.revoked_at IS NULL) t",
            ACTIVE_SECONDS,
            IDLE_SECONDS,
        )
        return WorkerCounts.model_validate(dict(record))

    async def cluster(self) -> ClusterTotals:
        """Summed hardware of the workers heard from within the idle window."""

        def online(idle: str) -> str:
            return (
                "FROM workers WHERE revoked_at IS NULL "
                f"AND last_heartbeat >= now() - make_interval(secs => {idle})"
            )

        totals = await self.conn.fetchrow(
            "SELECT count(*) AS workers_online, "
            "count(*) FILTER (WHERE last_heartbeat >= now() - make_interval(secs => $1)) "
            "AS workers_active, coalesce(sum(cpu_cores), 0)::int AS cpu_cores, "
            "coalesce(sum(ram_gb), 0)::float8 AS ram_gb, coalesce(sum(gpu_count), 0)::int AS gpus, "
            f"coalesce(sum(gpu_vram_gb), 0)::float8 AS gpu_vram_gb {online('$2')}",
            ACTIVE_SECONDS,
            IDLE_SECONDS,
        )
        devices = await self.conn.fetch(
            "SELECT CASE WHEN gpu_count > 0 AND device_name <> '' THEN device_name "
            "WHEN gpu_count > 0 OR device NOT LIKE 'cpu%' THEN upper(split_part(device, ':', 1)) "
            f"ELSE 'CPU' END AS device, count(*) AS workers {online('$1')} "
            "GROUP BY 1 ORDER BY workers DESC, device",
            IDLE_SECONDS,
        )
        return ClusterTotals(
            **dict(totals), devices=[DeviceCount.model_validate(dict(d)) for d in devices]
        )

    async def run_totals(
        self, *, run_id: int, window_seconds: float, until: datetime | None = None
    ) -> RunTotals:
        """Images stepped, steps, the last step, images accepted in the window before
        ``until`` (default: now; a finished run passes its end, so its rate stays put),
        and the bytes and images of the run's accepted results of known size."""
        record = await self.conn.fetchrow(
            """
            SELECT
              (SELECT coalesce(sum(num_images), 0) FROM history WHERE run_id = $1)
                AS images_processed,
              (SELECT count(*) FROM history WHERE run_id = $1) AS steps,
              (SELECT max(created_at) FROM history WHERE run_id = $1) AS last_step_at,
              (SELECT coalesce(sum(num_samples), 0) FROM results
                WHERE run_id = $1
                  AND accepted_at > coalesce($3::timestamptz, now()) - make_interval(secs => $2)
                  AND accepted_at <= coalesce($3::timestamptz, now()))
                AS recent_images,
              (SELECT max(iteration) FROM samples WHERE run_id = $1) AS latest_sample_iteration,
              r.result_bytes, r.result_images,
              now() AS now
            FROM (SELECT coalesce(sum(body_bytes), 0)::bigint AS result_bytes,
                         coalesce(sum(num_samples), 0)::bigint AS result_images
                  FROM results WHERE run_id = $1 AND body_bytes IS NOT NULL) r
            """,
            run_id,
            window_seconds,
            until,
        )
        return RunTotals.model_validate(dict(record))

    async def live_iteration(self) -> int | None:
        """The iteration of the active or paused run (the /metrics gauge)."""
        return await self.conn.fetchval(
            "SELECT iteration FROM runs WHERE status IN ('active', 'paused')"
        )
