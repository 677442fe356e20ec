"""JSON bodies of the worker protocol (/api/v1), shared by the coordinator and the worker.

Tensors never appear here: weights and results travel as safetensors bodies (see
``shared.codec``). Torch is deliberately not imported, so the coordinator's API layer
and light clients can use these models without it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

API_PREFIX = "/api/v1"
LEASE_HEADER = "X-Lease-Id"

ResultKind = Literal["gradients", "local_steps"]
WireDtype = Literal["float32", "float16", "bfloat16"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class HardwareInfo(_Model):
    """What a worker runs on; shown on the leaderboard and summed as cluster resources."""

    hostname: str = Field(default="", max_length=255)
    platform: str = Field(default="", max_length=255)
    python_version: str = Field(default="", max_length=64)
    torch_version: str = Field(default="", max_length=64)
    device: str = Field(default="cpu", max_length=64, examples=["cuda:0"])
    device_name: str = Field(default="", max_length=255, examples=["NVIDIA T4"])
    cpu_cores: int = Field(default=1, ge=0, le=4096)
    ram_gb: float = Field(default=0.0, ge=0, le=1e6)
    gpu_count: int = Field(default=0, ge=0, le=1024)
    gpu_vram_gb: float = Field(default=0.0, ge=0, le=1e6)


class RegisterRequest(_Model):
    """A student's first call: the class join code and a display name."""

    join_code: str = Field(min_length=1, max_length=128, examples=["blue-otter-42"])
    name: str = Field(min_length=1, max_length=64, pattern=r"^[^\x00-\x1f\x7f]+$", examples=["ada"])
    hardware: HardwareInfo = Field(default_factory=HardwareInfo)


class RegisterResponse(_Model):
    """The worker token is shown once; the coordinator stores only its hash."""

    worker_id: int
    name: str
    token: str


class WorkerInfo(_Model):
    """Who the token belongs to (GET /workers/me)."""

    worker_id: int
    name: str
    total_images: int
    total_work_units: int


class HeartbeatResponse(_Model):
    """Heartbeats extend every lease the worker holds to ``lease_deadline``."""

    worker_id: int
    leases_extended: int
    lease_deadline: datetime | None


class ModelSpecInfo(_Model):
    """Network sizes of the run (mirrors shared.models.ModelConfig)."""

    latent_dim: int = Field(default=100, ge=1, le=4096)
    generator_features: int = Field(default=64, ge=1, le=1024)
    discriminator_features: int = Field(default=64, ge=1, le=1024)
    channels: int = Field(default=3, ge=1, le=4)
    image_size: int = Field(default=64)


class LocalStepsInfo(_Model):
    """Inner optimizer of a local-steps run: H Adam steps per unit from W_t."""

    inner_steps: int = Field(ge=1)
    inner_lr: float = Field(gt=0)
    inner_beta1: float = Field(ge=0, lt=1)
    inner_beta2: float = Field(ge=0, lt=1)


class DatasetInfo(_Model):
    """Where a unit's images come from: the built-in faces or an imported, sharded dataset."""

    dataset_id: str
    kind: Literal["builtin", "sharded"]
    num_images: int
    builtin_seed: int = 0
    shard_size: int | None = None


class RunInfo(_Model):
    """Everything a worker needs to compute a unit of this run exactly as specified."""

    run_id: int
    seed: int
    model: ModelSpecInfo
    dataset: DatasetInfo
    result_kind: ResultKind = "gradients"
    result_dtype: WireDtype = "float32"
    local_steps: LocalStepsInfo | None = None


class ClaimRequest(_Model):
    """Shards the worker already caches, so the coordinator can prefer units in them."""

    cached_shards: list[int] = Field(default_factory=list, max_length=100_000)


class WorkUnit(_Model):
    """A leased unit. The lease id goes back with the result in the X-Lease-Id header."""

    unit_id: int
    lease_id: str
    iteration: int
    epoch: int
    image_indices: list[int]
    lease_deadline: datetime
    weights_url: str = Field(examples=["/api/v1/weights/5"])
    is_backup: bool = False
    run: RunInfo


class ResultResponse(_Model):
    """An accepted result; a repeat upload of the same lease gets the same answer."""

    unit_id: int
    iteration: int
    accepted: bool
    num_samples: int
    duplicate: bool = False


class ReleaseResponse(_Model):
    """The unit went back to the pool."""

    unit_id: int
    released: bool


class ErrorResponse(_Model):
    """Every error body: a human-readable detail and a stable machine code."""

    detail: str
    code: str = Field(examples=["stale_iteration"])
