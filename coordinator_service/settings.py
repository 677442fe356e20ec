"""The coordinator's one settings object: environment variables (prefix ``GAN_``) and ``.env``.

Everything configurable lives here and is passed into ``create_app()``, so tests can
build a fully isolated coordinator from a plain ``Settings(...)`` without touching the
process environment.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import platformdirs
from pydantic import AliasChoices, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PLACEHOLDER = "changeme"


def default_data_dir() -> Path:
    """Where embedded PostgreSQL keeps its data between restarts."""
    return Path(platformdirs.user_data_dir("gan-coordinator", appauthor=False))


class Settings(BaseSettings):
    """Coordinator configuration; secrets left at the placeholder only work in development."""

    model_config = SettingsConfigDict(
        env_prefix="GAN_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    environment: Literal["development", "production"] = "development"
    # DATABASE_URL is the name every hosting platform uses; GAN_DATABASE_URL also works.
    database_url: str | None = Field(
        default=None, validation_alias=AliasChoices("GAN_DATABASE_URL", "DATABASE_URL")
    )
    # A plain lower-case name: it is spliced into GRANT statements (quoted as well).
    app_role: str = Field(
        default="", pattern=r"^([a-z_][a-z0-9_]{0,62})?$",
        description="`gan-coordinator migrate`, run as the schema's owner, grants this "
        "PostgreSQL role exactly what `serve` needs (rows of the app's tables and "
        "temporary tables of its own; no schema changes, no TRUNCATE), so the coordinator "
        "can connect as it; empty: grant nothing",
    )  # fmt: skip
    data_dir: Path = Field(default_factory=default_data_dir)
    datasets_dir: Path | None = Field(
        default=None,
        description="where `gan-coordinator dataset import` writes datasets and the server "
        "reads them; not set: the `datasets` folder in the data dir",
    )
    admin_token: str = PLACEHOLDER
    join_code: str = PLACEHOLDER
    public_url: str = ""

    pool_min_size: int = Field(default=2, ge=1)
    pool_max_size: int = Field(default=20, ge=1)
    keep_alive_seconds: int = Field(
        default=75, ge=1,
        description="how long an idle client connection stays open (uvicorn's keep-alive); "
        "longer than gan-worker's heartbeat interval (15 s at most), so a worker reuses "
        "its connection rather than connecting, and with TLS shaking hands, anew for "
        "each request",
    )
    torch_threads: int = Field(default=1, ge=0, description="0 leaves torch's default")

    aggregator_enabled: bool = True
    aggregator_tick_seconds: float = Field(default=0.25, gt=0)
    keep_last_states: int = Field(default=3, ge=1)
    checkpoint_every: int = Field(
        default=100, ge=1,
        description="every Nth version's weights and Adam state are kept for good",
    )
    snapshot_seconds: float = Field(
        default=30.0, ge=0,
        description="Adam state is written with a version at most this often (and with "
        "every checkpoint_every-th); the versions between store only their weights, and a "
        "restarted coordinator replays their accepted results, bit for bit. 0: every version",
    )
    result_max_abs: float = Field(
        default=1e4, gt=0,
        description="a result holding a value of larger magnitude is refused (a finite 1e30 "
        "would overflow Adam's second moment)",
    )
    result_norm_ratio: float = Field(
        default=100.0, gt=1,
        description="a result whose global or per-tensor norm exceeds this many times the "
        "median of the run's last 32 accepted results of its kind is refused (honest results "
        "measured at most 10 times)",
    )
    sample_every: int = Field(
        default=10, ge=0, description="a sample grid every N iterations (0: by time only)"
    )
    sample_seconds: float = Field(
        default=30.0, ge=0,
        description="also a grid after any iteration once this many seconds passed since the "
        "last one (the first iteration always gets one); 0: by iterations only",
    )
    weights_cache_size: int = Field(default=4, ge=1)

    # Rate limits, per API process (coordinator_service/rate_limits.py says why these).
    registrations_per_minute: float = Field(
        default=60.0, ge=0,
        description="worker registrations per client address and minute, per API process, "
        "after the first registration_burst (429 with Retry-After beyond); 0: no limit",
    )
    registration_burst: int = Field(
        default=120, ge=1,
        description="registrations one address may make at once (a class behind one NAT)",
    )
    worker_requests_per_second: float = Field(
        default=30.0, ge=0,
        description="requests per worker and second, per API process, after the first "
        "worker_request_burst (429 with Retry-After beyond; an honest worker stays under 10); "
        "0: no limit",
    )
    worker_request_burst: int = Field(
        default=150, ge=1, description="requests one worker may make at once"
    )

    @model_validator(mode="after")
    def _refuse_placeholders(self) -> Settings:
        if self.environment != "development":
            for name in ("admin_token", "join_code"):
                value = getattr(self, name)
                if value == PLACEHOLDER or len(value) < 8:
                    raise ValueError(
                        f"GAN_{name.upper()} must be set to a real secret (8+ characters) "
                        f"when GAN_ENVIRONMENT={self.environment}"
                    )
        return self
