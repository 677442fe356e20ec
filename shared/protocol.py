"""JSON bodies of the worker protocol (/api/v1), shared by the coordinator and the worker.

Tensors never appear here: weights and results travel as safetensors bodies (see
``shared.codec``). Torch is deliberately not imported, so the coordinator's API layer
and light clients can use these models without it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, model_validator

API_PREFIX = "/api/v1"
# PostgreSQL's text and jsonb cannot hold NUL: such strings are refused with 422, not 500.
NO_NUL = r"^[^\x00]*$"
PRINTABLE = r"^[^\x00-\x1f\x7f]+$"  # and no control characters in names and codes
LEASE_HEADER = "X-Lease-Id"
# The longest a claim may wait for work (POST /work-units/claim?wait=): well inside any
# client's read timeout and any proxy's idle timeout.
MAX_CLAIM_WAIT = 30.0

ResultKind = Literal["synchronous", "local_steps", "async_local_steps"]
LOCAL_KINDS = ("local_steps", "async_local_steps")  # kinds that train H steps per unit
WireDtype = Literal["float32", "float16", "bfloat16"]
Aggregation = Literal["mean", "trimmed_mean", "median", "multi_krum"]
InnerOptimizerMode = Literal["per_unit", "per_worker"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class HardwareInfo(_Model):
    """What a worker runs on; shown on the leaderboard and summed as cluster resources."""

    hostname: str = Field(default="", max_length=255, pattern=NO_NUL)
    platform: str = Field(default="", max_length=255, pattern=NO_NUL)
    python_version: str = Field(default="", max_length=64, pattern=NO_NUL)
    torch_version: str = Field(default="", max_length=64, pattern=NO_NUL)
    device: str = Field(default="cpu", max_length=64, pattern=NO_NUL, examples=["cuda:0"])
    device_name: str = Field(default="", max_length=255, pattern=NO_NUL, examples=["NVIDIA T4"])
    cpu_cores: int = Field(default=1, ge=0, le=4096)
    ram_gb: float = Field(default=0.0, ge=0, le=1e6)
    gpu_count: int = Field(default=0, ge=0, le=1024)
    gpu_vram_gb: float = Field(default=0.0, ge=0, le=1e6)


class RegisterRequest(_Model):
    """A student's first call: the class join code and a display name."""

    join_code: str = Field(
        min_length=1, max_length=128, pattern=PRINTABLE, examples=["blue-otter-42"]
    )
    name: str = Field(min_length=1, max_length=64, pattern=PRINTABLE, examples=["ada"])
    hardware: HardwareInfo = Field(default_factory=HardwareInfo)


class RegisterResponse(_Model):
    """The worker token is shown once; the coordinator stores only its hash."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"worker_id": 3, "name": "ada",
                                         "token": "q3V9…(43 characters)"}]},
    )  # fmt: skip

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
    lease_seconds_left: float | None = Field(
        default=None,
        description="seconds until lease_deadline by the coordinator's clock: a worker paces "
        "its heartbeats by this duration and its own monotonic clock, never by comparing "
        "its wall clock with lease_deadline",
    )


class ModelSpecInfo(_Model):
    """Network sizes of the run (mirrors shared.models.ModelConfig)."""

    latent_dim: int = Field(default=100, ge=1, le=4096, description="size of G's input")
    generator_features: int = Field(default=64, ge=1, le=1024, description="G's feature maps")
    discriminator_features: int = Field(default=64, ge=1, le=1024, description="D's feature maps")
    channels: int = Field(default=3, ge=1, le=4)
    image_size: int = Field(default=64)


class LocalStepsInfo(_Model):
    """Inner optimizer of a local-steps run: H Adam steps per unit from W_t."""

    inner_steps: int = Field(ge=1)
    inner_lr: float = Field(gt=0)
    inner_beta1: float = Field(ge=0, lt=1)
    inner_beta2: float = Field(ge=0, lt=1)
    inner_optimizer: InnerOptimizerMode = Field(
        default="per_unit", description="per_worker: keep the inner Adam across your units"
    )


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
    result_kind: ResultKind = "synchronous"
    batch_size: int = Field(default=64, ge=1, description="the run's micro-batch size")
    result_dtype: WireDtype = "float32"
    local_steps: LocalStepsInfo | None = None
    max_staleness: int | None = Field(
        default=None, ge=0,
        description="asynchronous runs: a result computed more than this many versions "
        "before the current one is refused; a worker that claimed its next unit ahead "
        "checks it before computing",
    )  # fmt: skip


class ClaimRequest(_Model):
    """Shards the worker already caches, so the coordinator can prefer units in them,
    and an id that makes the claim safe to repeat."""

    cached_shards: list[int] = Field(default_factory=list, max_length=100_000)
    claim_id: UUID | None = Field(
        default=None,
        description="a fresh random id per claim, sent again when a claim is repeated "
        "because it got no answer: the coordinator then answers with the lease it already "
        "granted under this id (if it is still active) instead of leasing a second unit "
        "that nobody would compute",
    )


class WorkUnit(_Model):
    """A leased unit. The lease id goes back with the result in the X-Lease-Id header."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "unit_id": 17, "lease_id": "0b7e4c2a-5f7d-4d0e-9a51-2b8c0f7f1e3d",
                    "iteration": 5, "epoch": 0, "image_indices": [3, 8, 21],
                    "lease_deadline": "2026-11-21T09:35:00Z", "lease_seconds_left": 300.0,
                    "weights_url": "/api/v1/weights/5?run_id=1", "is_backup": False,
                    "run": {
                        "run_id": 1, "seed": 0,
                        "model": {"latent_dim": 100, "generator_features": 64,
                                  "discriminator_features": 64, "channels": 3,
                                  "image_size": 64},
                        "dataset": {"dataset_id": "builtin-faces-20000-seed0",
                                    "kind": "builtin", "num_images": 20000,
                                    "builtin_seed": 0, "shard_size": 1000},
                        "result_kind": "synchronous", "batch_size": 64,
                        "result_dtype": "float32",
                        "local_steps": None,
                    },
                }
            ]
        },
    )  # fmt: skip

    unit_id: int
    lease_id: str
    iteration: int
    epoch: int
    image_indices: list[int]
    lease_deadline: datetime
    lease_seconds_left: float = Field(
        description="seconds until lease_deadline by the coordinator's clock when it granted "
        "the lease (a duration: the worker's clock need not agree with the coordinator's)",
        examples=[300.0],
    )
    weights_url: str = Field(examples=["/api/v1/weights/5"])
    is_backup: bool = False
    run: RunInfo


class ResultResponse(_Model):
    """An accepted result; a repeat upload of the same lease gets the same answer."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"unit_id": 17, "iteration": 5, "accepted": True,
                                         "num_samples": 320, "duplicate": False}]},
    )  # fmt: skip

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


# --- runs, progress and administration (added with the coordinator, issue 3) ---------------


class BuiltinDatasetConfig(_Model):
    """The built-in procedurally drawn faces (shared.builtin_faces), the default dataset."""

    kind: Literal["builtin"] = "builtin"
    size: int = Field(default=20_000, ge=1, le=10_000_000, description="built-in faces drawn")
    builtin_seed: int = Field(default=0, ge=0, description="which built-in faces are drawn")
    shard_size: int = Field(default=1000, ge=1, description="virtual shard size")


class ShardedDatasetConfig(_Model):
    """A dataset imported with ``gan-coordinator dataset import`` (shared.dataset_shards).

    At run start ``dataset_id`` may be an id prefix or a name; the coordinator replaces it
    with the full id and fills ``size``, ``shard_size`` and ``name`` from the manifest.
    """

    kind: Literal["sharded"] = "sharded"
    dataset_id: str = Field(
        min_length=1, max_length=200, pattern=PRINTABLE, examples=["3f9c0a1b2c3d4e5f"]
    )
    name: str = Field(default="", max_length=200, pattern=NO_NUL)
    size: int = Field(default=1, ge=1, le=100_000_000)
    shard_size: int = Field(default=1000, ge=1)


def _dataset_kind(value: Any) -> str:
    # Configs written before sharded datasets existed have no "kind": they are builtin.
    if isinstance(value, dict):
        return str(value.get("kind", "builtin"))
    return str(getattr(value, "kind", "builtin"))


DatasetConfig = Annotated[
    Annotated[BuiltinDatasetConfig, Tag("builtin")]
    | Annotated[ShardedDatasetConfig, Tag("sharded")],
    Discriminator(_dataset_kind),
]


class RunConfig(_Model):
    """Every option of a training run; stored with the run and never changed afterwards."""

    dataset: DatasetConfig = Field(default_factory=BuiltinDatasetConfig)
    images_per_unit: int = Field(default=64, ge=1, le=100_000, description="images in a work unit")
    units_per_step: int = Field(
        default=2,
        ge=1,
        le=10_000,
        description="units folded per step (per phase): the global batch is this x images_per_unit",
    )
    batch_size: int = Field(
        default=64,
        ge=1,
        le=4096,
        description="micro-batch size, fixed by the run: in training mode BatchNorm's "
        "batch statistics make a gradient depend on it, so every worker uses this one",
    )
    step_timeout: float = Field(default=300.0, gt=0, description="seconds from iteration start")
    lease_seconds: float = Field(
        default=300.0, gt=0, description="a lease lasts this long unless heartbeats extend it"
    )
    backup_after_seconds: float = Field(
        default=60.0, ge=0, description="an outstanding lease this old may get a backup copy"
    )
    lr: float = Field(default=2e-4, gt=0, description="Adam learning rate (synchronous runs)")
    beta1: float = Field(default=0.5, ge=0, lt=1, description="Adam beta1")
    beta2: float = Field(default=0.999, ge=0, lt=1, description="Adam beta2")
    latent_dim: int = Field(default=100, ge=1, le=4096, description="size of G's input")
    generator_features: int = Field(default=64, ge=1, le=1024, description="G's feature maps")
    discriminator_features: int = Field(default=64, ge=1, le=1024, description="D's feature maps")
    seed: int = Field(
        default=0, ge=0, le=2**62, description="seeds W_0, the epochs' order and the noise"
    )
    max_epochs: int | None = Field(
        default=None, ge=1, description="stop after this many epochs (default: never)"
    )
    max_iterations: int | None = Field(
        default=None, ge=1, description="stop after this many training iterations (default: never)"
    )
    result_kind: ResultKind = Field(
        default="synchronous",
        description="how the class trains: synchronous (the textbook D then G step, DDP's "
        "semantics), local_steps (DiLoCo: units_per_step units from the same weights, then "
        "one outer step) or async_local_steps (no barrier: every units_per_step results "
        "fold as they arrive, weighted by their staleness)",
    )
    result_dtype: WireDtype = Field(default="float32", description="what results travel in")
    aggregation: Aggregation = Field(
        default="mean",
        description="how a fold combines its results: mean (image-weighted, DDP's all-reduce); "
        "coordinate-wise trimmed_mean or median, which one poisoned result in five cannot "
        "move past the honest values; or multi_krum, which leaves out the results farthest "
        "from the others (a scaled or sign-flipped one). The robust ones need several "
        "results per fold",
    )
    aggregation_trim: float = Field(
        default=0.2, ge=0, lt=0.5,
        description="trimmed_mean: the fraction of results dropped at each end of every "
        "coordinate; multi_krum: the fraction of results left out (0.2: one of five)",
    )
    # Local-steps runs only (null otherwise; filled with the defaults below when a
    # local-steps run leaves them out). ``lr``/``beta1``/``beta2`` above are the
    # coordinator's Adam of a synchronous run; a local-steps run's coordinator applies the
    # outer optimizer instead.
    spot_check_fraction: float = Field(
        default=0.0,
        ge=0,
        le=1,
        description="the share of accepted results that a second worker recomputes and the "
        "coordinator compares (BOINC-style spot checks; 0: none)",
    )
    spot_check_tolerance: float = Field(
        default=1e-3,
        gt=0,
        description="the relative L2 distance up to which two computations of one unit agree "
        "(two CPUs differ by about 1e-6; a wrong result by 1 or more)",
    )
    inner_steps: int | None = Field(
        default=None,
        ge=1,
        le=100_000,
        description="H, a worker's Adam steps per unit: one per micro-batch, so it must be "
        "images_per_unit / batch_size rounded up (its default)",
    )
    inner_lr: float | None = Field(
        default=None, gt=0, description="local steps: inner Adam lr (default 2e-4)"
    )
    inner_beta1: float | None = Field(
        default=None, ge=0, lt=1, description="local steps: inner Adam beta1 (default 0.5)"
    )
    inner_beta2: float | None = Field(
        default=None, ge=0, lt=1, description="local steps: inner Adam beta2 (default 0.999)"
    )
    outer_lr: float | None = Field(
        default=None, gt=0, description="local steps: outer SGD lr (default 0.7)"
    )
    outer_momentum: float | None = Field(
        default=None, ge=0, lt=1, description="local steps: outer momentum (default 0.9)"
    )
    outer_nesterov: bool | None = Field(
        default=None, description="local steps: Nesterov momentum (default true)"
    )
    inner_optimizer: InnerOptimizerMode | None = Field(
        default=None,
        description="local steps: per_unit restarts each worker's inner Adam at every unit "
        "(a unit's result depends on the unit alone); per_worker keeps its moments across "
        "the worker's units while it runs, as DiLoCo does (default per_unit)",
    )

    max_staleness: int | None = Field(
        default=None,
        ge=0,
        le=100_000,
        description="async_local_steps: a result computed more than this many versions "
        "before the current one is refused and its images go back to the pool (default 64)",
    )
    staleness_exponent: float | None = Field(
        default=None,
        ge=0,
        le=8,
        description="async_local_steps: a result s versions old counts (s + 1) ** -a of a "
        "fresh one in its fold (FedAsync's polynomial weight; default a = 0.5)",
    )
    outer_momentum_delay: int | None = Field(
        default=None,
        ge=1,
        le=1024,
        description="async_local_steps: Delayed Nesterov (Liu et al. 2024): each fold "
        "applies its change at outer_lr / N at once, and the outer momentum takes in the "
        "mean of the last N folds' changes every N-th fold; 1 is Nesterov at every fold "
        "(default 1)",
    )

    unit_seconds: float | None = Field(
        default=None,
        gt=0,
        le=86_400,
        description="local steps, dynamic local updates: a claim joins as many of the "
        "epoch's units as the worker, at the speed the coordinator measured from its last "
        "results, trains in about this many seconds, so a GPU takes more inner steps per "
        "unit than a laptop (default: off, every unit is images_per_unit)",
    )
    max_units_per_claim: int | None = Field(
        default=None,
        ge=1,
        le=1024,
        description="with unit_seconds: the most units one claim joins, bounding H at this "
        "many times inner_steps (default 16)",
    )

    @model_validator(mode="after")
    def _local_steps_options(self) -> RunConfig:
        if self.spot_check_fraction > 0 and self.result_kind != "synchronous":
            # Measured (docs/coordinator.md): two honest CPUs' local steps of one unit end
            # 0.55 apart at H=32, as far as many a wrong result.
            raise ValueError(
                "spot checks need synchronous runs: local steps amplify floating-point "
                "differences between machines until honest results disagree"
            )
        given = [name for name in ASYNC_DEFAULTS if getattr(self, name) is not None]
        if given and self.result_kind != "async_local_steps":
            raise ValueError(
                f"{', '.join(given)} only apply to runs with result_kind 'async_local_steps'"
            )
        given = [name for name in LOCAL_STEPS_DEFAULTS if getattr(self, name) is not None]
        given += [n for n in ("unit_seconds", *DYNAMIC_DEFAULTS) if getattr(self, n) is not None]
        if self.result_kind not in LOCAL_KINDS:
            if given:
                raise ValueError(
                    f"{', '.join(given)} only apply to runs with result_kind 'local_steps' "
                    "or 'async_local_steps'"
                )
            return self
        steps = -(-self.images_per_unit // self.batch_size)  # ceil: each image once
        if self.inner_steps is None:
            self.inner_steps = steps
        elif self.inner_steps != steps:
            raise ValueError(
                f"inner_steps {self.inner_steps} would train a unit of {self.images_per_unit} "
                f"images at micro-batch {self.batch_size} in {steps} steps; set "
                "images_per_unit to inner_steps x batch_size "
                f"({self.inner_steps * self.batch_size}) or leave inner_steps out"
            )
        defaults = {**LOCAL_STEPS_DEFAULTS}
        if self.result_kind == "async_local_steps":
            defaults.update(ASYNC_DEFAULTS)
        if self.unit_seconds is not None:
            defaults.update(DYNAMIC_DEFAULTS)
        elif self.max_units_per_claim is not None:
            raise ValueError("max_units_per_claim only applies to runs with unit_seconds")
        for name, default in defaults.items():
            if getattr(self, name) is None:
                setattr(self, name, default)
        if (self.outer_momentum_delay or 1) > 1 and not self.outer_nesterov:
            raise ValueError(
                "outer_momentum_delay is Delayed Nesterov: it needs outer_nesterov true"
            )
        return self

    def staleness_bound(self) -> int:
        """How many versions old a result may be and still be accepted: 0 for the modes
        with a barrier, whose every fold ends the leases of the version before."""
        return (self.max_staleness or 0) if self.result_kind == "async_local_steps" else 0

    def local_steps_info(self) -> LocalStepsInfo | None:
        """What a worker of a local-steps run is told (None for a synchronous run)."""
        if self.result_kind not in LOCAL_KINDS:
            return None
        assert self.inner_steps is not None and self.inner_lr is not None
        assert self.inner_beta1 is not None and self.inner_beta2 is not None
        return LocalStepsInfo(
            inner_steps=self.inner_steps,
            inner_lr=self.inner_lr,
            inner_beta1=self.inner_beta1,
            inner_beta2=self.inner_beta2,
            inner_optimizer=self.inner_optimizer or "per_unit",
        )


# A local-steps run's defaults: inner Adam as DCGAN's, outer Nesterov SGD as DiLoCo's.
# inner_steps follows from the unit and the micro-batch (one pass over the unit).
LOCAL_STEPS_DEFAULTS: dict[str, object] = {
    "inner_steps": None,
    "inner_lr": 2e-4,
    "inner_beta1": 0.5,
    "inner_beta2": 0.999,
    "outer_lr": 0.7,
    "outer_momentum": 0.9,
    "outer_nesterov": True,
    "inner_optimizer": "per_unit",
}


# An asynchronous run's defaults (besides the local-steps ones).
ASYNC_DEFAULTS: dict[str, object] = {
    "max_staleness": 64, "staleness_exponent": 0.5, "outer_momentum_delay": 1,
}  # fmt: skip

# Dynamic local updates' bound, once unit_seconds turns them on.
DYNAMIC_DEFAULTS: dict[str, object] = {"max_units_per_claim": 16}


class RunStartRequest(_Model):
    """Start a run: a class-size preset fills values, ``config`` overrides any of them."""

    preset: Literal["small", "medium", "large"] | None = None
    config: dict[str, object] = Field(default_factory=dict, examples=[{"units_per_step": 2}])


RunStatusName = Literal["active", "paused", "finished", "stopped"]


class RunSummary(_Model):
    """A run as stored: its config and where it is."""

    run_id: int
    status: RunStatusName
    iteration: int
    epoch: int
    config: RunConfig
    created_at: datetime
    finished_at: datetime | None = None
    problem: str | None = Field(
        default=None,
        description="why training cannot go on (e.g. a stored state holding Inf); "
        "null while it can",
    )


class UnitCounts(_Model):
    """Work units of the current epoch by state."""

    pending: int = 0
    leased: int = 0
    done: int = 0
    done_images: int = Field(
        default=0,
        description="images in the done units (units differ in size with dynamic local updates)",
    )


class HistoryEntry(_Model):
    """One fold (a published version): the averaged losses and D accuracies of its results."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "iteration": 41, "epoch": 1, "g_loss": 2.31, "d_loss": 0.62,
                    "d_real_accuracy": 0.83, "d_fake_accuracy": 0.88, "num_results": 8,
                    "num_workers": 7, "num_images": 2560, "step_seconds": 0.41,
                    "staleness": 0, "created_at": "2026-11-21T09:30:12Z",
                }
            ]
        },
    )  # fmt: skip

    iteration: int
    epoch: int
    # A synchronous D phase has no G loss of its own and a G phase no D loss: None there.
    g_loss: float | None
    d_loss: float | None
    d_real_accuracy: float | None
    d_fake_accuracy: float | None
    num_results: int
    num_workers: int
    num_images: int
    step_seconds: float
    staleness: int = Field(
        default=0, ge=0,
        description="how many versions old the fold's oldest result was (0 with a barrier)",
    )  # fmt: skip
    created_at: datetime


class JoinCodeResponse(_Model):
    """The class join code students register with."""

    join_code: str


class WorkerFlagResponse(_Model):
    """A worker's spot-check flag after the instructor's decision."""

    worker_id: int
    flagged: bool


class RevokeResponse(_Model):
    """A revoked worker: its leases ended and its unconsumed results dropped."""

    worker_id: int
    leases_ended: int
    results_dropped: int
