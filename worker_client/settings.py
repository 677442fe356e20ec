"""The worker's one settings object: flags > GAN_WORKER_* env vars > config.yaml > defaults.

Command-line flags arrive as init keyword arguments, so pydantic-settings' own source
order gives the precedence. The YAML file's path is itself a setting (``--config`` or
``GAN_WORKER_CONFIG``), read before the file is, so no global state is needed.
"""

from __future__ import annotations

import getpass
import ipaddress
import os
import socket
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import ByteSize, Field, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

ENV_PREFIX = "GAN_WORKER_"


def default_name() -> str:
    """A display name when none is given: the login name, else the host name."""
    try:
        name = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (some containers)
        name = ""
    return (name or socket.gethostname() or "student")[:64]


class WorkerSettings(BaseSettings):
    """Everything ``gan-worker`` can be told; see config.yaml.template for the student view."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid")

    config: Path | None = Field(default=None, description="YAML file with these settings")
    url: str = Field(default="http://localhost:8000", description="coordinator base URL")
    join_code: str | None = Field(default=None, description="class join code (first run only)")
    name: str = Field(default_factory=default_name, min_length=1, max_length=64)
    device: str = Field(default="auto", description="auto, cpu, cuda, cuda:N or mps")
    poll_interval: float = Field(default=2.0, gt=0, description="first wait when no work (s)")
    max_poll_interval: float = Field(default=15.0, gt=0, description="longest wait (s)")
    ca_bundle: Path | None = Field(default=None, description="CA file for a self-signed HTTPS")
    max_units: int | None = Field(default=None, ge=1, description="stop after this many units")
    state_dir: Path | None = Field(default=None, description="where the worker token is kept")
    verbose: bool = False
    allow_insecure_http: bool = Field(
        default=False,
        description="allow a plain http:// URL to a host that is not this machine (the "
        "worker token then crosses the network unencrypted); loopback needs no flag",
    )
    progress: bool = Field(default=True, description="show a progress bar per unit")
    torch_threads: int | None = Field(default=None, ge=1, description="torch CPU threads")
    heartbeat_interval: float = Field(default=15.0, gt=0, description="longest heartbeat gap (s)")
    connect_timeout: float = Field(default=10.0, gt=0)
    request_timeout: float = Field(default=120.0, gt=0, description="read/write timeout (s)")
    upload_retry_seconds: float = Field(default=300.0, ge=0, description="retry an upload (s)")
    cache_dir: Path | None = Field(
        default=None,
        description="where downloaded dataset shards are kept; not set: your user cache "
        "folder (`~/.cache/gan-worker/shards` on Linux)",
    )
    cache_size: ByteSize = Field(
        default=ByteSize(3_000_000_000),
        description="largest size of the shard cache in bytes, also as 3GB, 500MB or 2GiB; "
        "least recently used shards go first",
    )
    dataset_dir: Path | None = Field(
        default=None,
        description="a local copy of the run's imported dataset (a folder with manifest.json "
        "and its shards, e.g. a prefetched cache folder): nothing is downloaded",
    )

    @model_validator(mode="before")
    @classmethod
    def _no_batch_size(cls, data: Any) -> Any:
        if isinstance(data, dict) and "batch_size" in data:
            raise ValueError(
                "batch_size is no longer a worker setting: the run fixes the micro-batch "
                "(BatchNorm makes a result depend on it, so every worker computes the same); "
                "remove it from your flags or config file"
            )
        return data

    @field_validator("url")
    @classmethod
    def _url_has_scheme(cls, value: str) -> str:
        value = value.strip().rstrip("/")
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://, e.g. http://192.168.1.10:8000")
        return value

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str) -> str:
        value = value.strip().lower()
        if value in ("auto", "cpu", "mps", "cuda") or (
            value.startswith("cuda:") and value[5:].isdigit()
        ):
            return value
        raise ValueError("must be auto, cpu, cuda, cuda:N (e.g. cuda:0) or mps")

    def insecure_http_problem(self) -> str | None:
        """Why this URL may not be used as it is, or None: plain http to another host
        carries the bearer token in clear, so it takes --allow-insecure-http."""
        parts = urlsplit(self.url)
        if parts.scheme != "http" or self.allow_insecure_http or is_loopback(parts.hostname):
            return None
        return (
            f"{self.url} is plain http to another machine: your worker token would cross the "
            "network unencrypted. Use the coordinator's https:// address (with --ca-bundle "
            "ca.pem if your instructor gave you one), or, on a classroom network you trust, "
            f"run again with --allow-insecure-http (or allow_insecure_http: true in "
            f"config.yaml, or {ENV_PREFIX}ALLOW_INSECURE_HTTP=1)"
        )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Flags, then environment, then the YAML file named by --config/GAN_WORKER_CONFIG."""
        config_path: Any = None
        if isinstance(init_settings, InitSettingsSource):
            config_path = init_settings.init_kwargs.get("config")
        config_path = config_path or os.environ.get(ENV_PREFIX + "CONFIG")
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if config_path:
            path = Path(config_path).expanduser()
            if not path.is_file():
                raise FileNotFoundError(f"config file {path} does not exist")
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=path))
        return tuple(sources)


def is_loopback(host: str | None) -> bool:
    """``localhost`` (and ``*.localhost``), 127.0.0.0/8 or ::1: traffic that never leaves."""
    if not host:
        return False
    host = host.rstrip(".").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
