"""Plain http to another machine needs --allow-insecure-http: the token travels in clear.

Loopback (localhost, 127.0.0.0/8, ::1) never leaves the machine and needs no flag.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import httpx
import pytest

from tests.conftest import RunningCoordinator
from tests.coordinator_service.helpers import database_fingerprint
from worker_client.cli import EXIT_USAGE, load_settings, main
from worker_client.settings import WorkerSettings, is_loopback


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("GAN_WORKER_"):
            monkeypatch.delenv(key)


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("http://localhost:8000", True), ("http://127.0.0.1:8000", True),
        ("http://127.0.0.2", True), ("http://[::1]:8000", True), ("http://gan.localhost", True),
        ("https://192.168.1.10", True), ("https://gan.example.org", True),
        ("http://192.168.1.10:8000", False), ("http://gan.example.org", False),
        ("http://[2001:db8::1]:8000", False), ("http://localhost.example.org", False),
    ],
)  # fmt: skip
def test_only_https_or_loopback_without_the_flag(url: str, allowed: bool) -> None:
    assert (WorkerSettings(url=url).insecure_http_problem() is None) is allowed
    assert WorkerSettings(url=url, allow_insecure_http=True).insecure_http_problem() is None


def test_the_flag_comes_from_cli_env_or_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = ["--url", "http://192.168.1.10:8000"]
    assert load_settings([*url, "--allow-insecure-http"])[0].allow_insecure_http
    config = tmp_path / "config.yaml"
    config.write_text("allow_insecure_http: true\n")
    assert load_settings([*url, "--config", str(config)])[0].allow_insecure_http
    monkeypatch.setenv("GAN_WORKER_ALLOW_INSECURE_HTTP", "1")
    assert load_settings(url)[0].allow_insecure_http
    assert not is_loopback(None) and is_loopback("LOCALHOST.")


def test_refused_before_any_request_and_loopback_joins(
    coordinator: RunningCoordinator, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    """The refusal sends nothing (the real coordinator's database is unchanged, no worker
    joined); the same coordinator through its loopback address joins at once."""
    coordinator.start_run(generator_features=8, discriminator_features=8, latent_dim=32,
                          images_per_unit=16, dataset={"size": 64, "shard_size": 32})  # fmt: skip
    before = asyncio.run(database_fingerprint(coordinator.database_url))
    port = httpx.URL(coordinator.url).port
    common = ["--join-code", coordinator.join_code, "--state-dir", str(tmp_path),
              "--no-progress", "--torch-threads", "1", "--once"]  # fmt: skip
    # A name that resolves to this machine but is not loopback by its name: refused as is.
    remote = f"http://{_non_loopback_address()}:{port}"
    assert main(["--url", remote, "--name", "eve", *common]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "is plain http to another machine" in err and "--allow-insecure-http" in err
    assert asyncio.run(database_fingerprint(coordinator.database_url)) == before
    assert not (tmp_path / "identities.json").exists()
    assert main(["--url", coordinator.url, "--name", "ada", *common]) == 0
    names = [row["name"] for row in coordinator.client().get("/leaderboard").json()]
    assert names == ["ada"]


def _non_loopback_address() -> str:
    """An address that is not loopback; nothing is ever sent to it."""
    return "192.0.2.1"  # TEST-NET-1 (RFC 5737): never routed
