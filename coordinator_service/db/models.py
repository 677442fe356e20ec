"""Rows as pydantic models: what the repositories return instead of asyncpg records."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict

from shared.protocol import RunConfig, RunStatusName, RunSummary


class _Row(BaseModel):
    model_config = ConfigDict(frozen=True)

    @classmethod
    def of(cls, record: Any) -> Any:
        return cls.model_validate(dict(record))


class Run(_Row):
    run_id: int
    status: RunStatusName
    config: RunConfig
    iteration: int
    epoch: int
    iteration_started_at: datetime
    created_at: datetime
    finished_at: datetime | None
    problem: str | None = None  # why the aggregator cannot advance it, if it cannot

    @property
    def live(self) -> bool:
        return self.status in ("active", "paused")

    def summary(self) -> RunSummary:
        return RunSummary.model_validate(
            self.model_dump(exclude={"iteration_started_at"}), from_attributes=False
        )


class Worker(_Row):
    worker_id: int
    name: str
    revoked_at: datetime | None
    total_images: int
    total_work_units: int
    last_heartbeat: datetime | None
    flagged_at: datetime | None = None  # spot checks found its results wrong


class LeasedUnit(_Row):
    """A lease just granted by a claim."""

    lease_id: UUID
    unit_id: int
    iteration: int
    epoch: int
    image_indices: list[int]
    deadline: datetime
    seconds_left: float  # deadline minus the database's clock when the lease was granted
    is_backup: bool


ClaimStatus = Literal["leased", "nothing", "finished", "no_run"]


class ClaimOutcome(_Row):
    status: ClaimStatus
    run: Run | None = None
    unit: LeasedUnit | None = None


class Lease(_Row):
    lease_id: UUID
    unit_id: int
    worker_id: int
    run_id: int
    iteration: int
    status: str
    num_images: int
    check_of: UUID | None = None  # a spot check's lease: the result it recomputes


class AcceptedResult(_Row):
    """What a result upload answered; a repeat upload of the same lease answers the same."""

    unit_id: int
    iteration: int
    num_samples: int
    duplicate: bool = False  # this upload repeated one already accepted


class OpenResult(_Row):
    """An accepted, not yet consumed result (its body is fetched separately, once)."""

    lease_id: UUID
    unit_id: int
    worker_id: int
    num_samples: int


class ResultMetrics(_Row):
    # None where a phase has none (a synchronous G phase computes no D loss).
    g_loss: float | None
    d_loss: float | None
    d_real_accuracy: float | None
    d_fake_accuracy: float | None


class StepReadiness(_Row):
    """What the step rule reads at every tick: how many results wait to be folded, and
    whether any unit is still to hand out or being computed (not how many: counting a
    million-image epoch's pending units took PostgreSQL 5 ms, four times a second)."""

    accepted: int
    any_pending: bool  # a unit of the version's pool still waits for a worker
    any_leased: bool  # a unit is out with a worker


class StoredWeights(_Row):
    iteration: int
    weights: bytes | None  # None for a moment after the version is published
    weights_etag: str


class StoredCheckpoint(_Row):
    iteration: int
    checkpoint: bytes
