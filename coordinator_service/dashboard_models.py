"""Response models of the read-only progress API the dashboard and curious students poll.

They are supersets of the first ``/status`` and ``/leaderboard`` answers (the fields
``run``, ``units``, ``results_waiting``, ``active_workers``, ``total_workers`` and the
leaderboard's ``worker_id`` … ``revoked`` keep their meaning), so scripts written
against those keep working.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from shared.protocol import ResultKind, RunSummary, UnitCounts, WireDtype

# A worker is "active" if heard from (register, claim, heartbeat) within ACTIVE_SECONDS,
# "idle" within IDLE_SECONDS, else "offline". Workers heartbeat every few seconds while
# computing, so a minute of silence already means a closed laptop or a lost Wi-Fi.
ACTIVE_SECONDS = 60
IDLE_SECONDS = 300
THROUGHPUT_WINDOW_SECONDS = 300

ClassState = Literal["no_run", "running", "paused", "finished", "stopped"]
WorkerStatus = Literal["active", "idle", "offline", "flagged", "revoked"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class WorkerCounts(_Model):
    """Registered, non-revoked workers by how recently they were heard from."""

    active: int = Field(description=f"heard from within {ACTIVE_SECONDS} s")
    idle: int = Field(description=f"heard from within {IDLE_SECONDS} s, not active")
    offline: int
    total: int


class ThroughputInfo(_Model):
    """Images accepted over the last few minutes and what that means in compute."""

    window_seconds: float = Field(description="length of the window the rate is measured over")
    recent_images: int = Field(description="images in results accepted within the window")
    images_per_second: float
    flops_per_image: float = Field(
        description="convolution FLOPs of one image's D-real, D-fake and G passes"
    )
    gflops: float = Field(description="estimated GFLOP/s of the whole class")


class DashboardStatus(_Model):
    """GET /status: the current (or latest) run and what the class is doing right now."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "state": "running",
                    "run": None,
                    "result_kind": "local_steps",
                    "result_dtype": "bfloat16",
                    "inner_steps": 5,
                    "outer_steps": 42,
                    "result_bytes_per_image": 39651.2,
                    "iteration": 42,
                    "epoch": 1,
                    "max_epochs": 5,
                    "max_iterations": None,
                    "epoch_progress": 0.375,
                    "images_per_epoch": 20000,
                    "units": {"pending": 38, "leased": 4, "done": 24},
                    "results_waiting": 2,
                    "images_processed": 53760,
                    "workers": {"active": 11, "idle": 2, "offline": 3, "total": 16},
                    "active_workers": 11,
                    "total_workers": 16,
                    "throughput": {
                        "window_seconds": 300.0,
                        "recent_images": 38400,
                        "images_per_second": 128.0,
                        "flops_per_image": 2.07e9,
                        "gflops": 265.0,
                    },
                    "started_at": "2026-11-21T09:00:00Z",
                    "finished_at": None,
                    "elapsed_seconds": 1820.5,
                    "last_step_at": "2026-11-21T09:30:12Z",
                    "latest_sample_iteration": 40,
                    "server_time": "2026-11-21T09:30:20Z",
                }
            ]
        },
    )

    state: ClassState = Field(description="no_run until the instructor starts one")
    run: RunSummary | None
    result_kind: ResultKind | None = Field(description="what workers send back: the run's mode")
    versions_per_iteration: int = Field(
        default=1, description="published versions per training iteration: 2 in a "
        "synchronous run (the D phase, then the G phase); ``iteration`` counts versions",
    )
    result_dtype: WireDtype | None = Field(default=None, description="wire dtype of results")
    inner_steps: int | None = Field(
        default=None, description="H, each worker's Adam steps per unit (local-steps runs)"
    )
    outer_steps: int | None = Field(
        default=None, description="outer optimizer steps taken so far (local-steps runs)"
    )
    result_bytes_per_image: float | None = Field(
        default=None,
        description="bytes of accepted results per image trained on (null before the first)",
    )
    iteration: int
    epoch: int
    max_epochs: int | None
    max_iterations: int | None
    epoch_progress: float = Field(ge=0, le=1, description="done units / units of this epoch")
    images_per_epoch: int
    units: UnitCounts
    results_waiting: int = Field(description="accepted results for the current iteration")
    images_processed: int = Field(description="images that went into optimizer steps")
    workers: WorkerCounts
    active_workers: int = Field(description=f"workers heard from in the last {ACTIVE_SECONDS} s")
    total_workers: int
    throughput: ThroughputInfo
    started_at: datetime | None
    finished_at: datetime | None
    elapsed_seconds: float
    last_step_at: datetime | None
    latest_sample_iteration: int | None
    server_time: datetime


class LeaderboardRow(_Model):
    """A worker's contribution (counted when its results go into a step) and its hardware."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "rank": 1,
                    "worker_id": 7,
                    "name": "ada",
                    "status": "active",
                    "total_images": 9600,
                    "total_work_units": 30,
                    "last_heartbeat": "2026-11-21T09:30:18Z",
                    "seconds_since_seen": 2.1,
                    "hardware": "NVIDIA T4 (15 GB)",
                    "device": "cuda:0",
                    "device_name": "NVIDIA T4",
                    "cpu_cores": 2,
                    "ram_gb": 12.7,
                    "gpu_count": 1,
                    "gpu_vram_gb": 15.0,
                    "registered_at": "2026-11-21T08:58:00Z",
                    "revoked": False,
                    "images_per_second": 1210.5,
                    "inner_steps": 256,
                }
            ]
        },
    )

    rank: int = Field(description="1 = most images; equal images share a rank")
    worker_id: int
    name: str
    status: WorkerStatus
    total_images: int
    total_work_units: int
    last_heartbeat: datetime | None = Field(description="last seen: register, claim, heartbeat")
    seconds_since_seen: float | None
    hardware: str = Field(description="a one-line summary of the device")
    device: str
    device_name: str
    cpu_cores: int
    ram_gb: float
    gpu_count: int
    gpu_vram_gb: float
    registered_at: datetime
    revoked: bool = False
    flagged: bool = Field(
        default=False,
        description="spot checks found its results wrong: its credit is withheld (it ranks "
        "after every unflagged worker) until the instructor clears the flag or revokes it",
    )
    flag_reason: str | None = None
    images_per_second: float | None = Field(
        default=None,
        description="its speed as the coordinator measured it from its accepted results "
        "(images over the time since its previous result); null before its first",
    )
    inner_steps: int | None = Field(
        default=None,
        description="H of the local-steps unit it computes now (with unit_seconds, its "
        "speed sets it); null while it computes none",
    )


class DeviceCount(_Model):
    device: str = Field(examples=["NVIDIA T4", "CPU"])
    workers: int


class ClusterResources(_Model):
    """What the class's online workers (heard from within the idle window) bring together."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "workers_online": 13,
                    "workers_active": 11,
                    "cpu_cores": 96,
                    "ram_gb": 204.5,
                    "gpus": 3,
                    "gpu_vram_gb": 45.0,
                    "devices": [
                        {"device": "CPU", "workers": 10},
                        {"device": "NVIDIA T4", "workers": 3},
                    ],
                }
            ]
        },
    )

    workers_online: int
    workers_active: int
    cpu_cores: int
    ram_gb: float
    gpus: int
    gpu_vram_gb: float
    devices: list[DeviceCount]
