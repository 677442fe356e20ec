"""The real ``gan-coordinator`` CLI: TLS, embedded PostgreSQL, schema guard, run commands."""

from __future__ import annotations

import asyncio
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import trustme

from coordinator_service.db import migrations
from coordinator_service.settings import Settings
from tests.conftest import TEST_ADMIN_TOKEN, SpawnedCoordinator, coordinator_env
from worker_client.api_client import KEEPALIVE_SECONDS
from worker_client.settings import WorkerSettings

GAN_COORDINATOR = str(Path(sys.executable).with_name("gan-coordinator"))


def test_tls_with_a_private_ca(
    tmp_path: Path, database_url: str, spawn_coordinator: Callable[..., SpawnedCoordinator]
) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert_path, key_path, ca_path = tmp_path / "cert.pem", tmp_path / "key.pem", tmp_path / "ca.pem"
    cert.cert_chain_pems[0].write_to_path(str(cert_path))
    cert.private_key_pem.write_to_path(str(key_path))
    ca.cert_pem.write_to_path(str(ca_path))
    trusting = ssl.create_default_context(cafile=str(ca_path))  # trusts only this CA
    server = spawn_coordinator(
        database_url,
        args=("--ssl-certfile", str(cert_path), "--ssl-keyfile", str(key_path)),
        verify=trusting,
    )
    assert server.url.startswith("https://")
    with httpx.Client(verify=trusting) as client:
        assert client.get(server.url + "/api/v1/status").status_code == 200
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(server.url + "/healthz", verify=ssl.create_default_context())
    with pytest.raises(httpx.TransportError):  # plain HTTP on the TLS port is not served
        httpx.get(server.url.replace("https", "http") + "/healthz", timeout=5)


def test_embedded_postgres_survives_a_restart(
    tmp_path: Path, spawn_coordinator: Callable[..., SpawnedCoordinator]
) -> None:
    data_dir = tmp_path / "data"
    first = spawn_coordinator(None, args=("--log-level", "info"), GAN_DATA_DIR=str(data_dir))
    # initdb and pg_ctl ran, quietly: one line says where the server lives.
    assert f"embedded PostgreSQL running in {data_dir / 'postgres'}" in first.log()
    assert "Running commandline" not in first.log() and "initdb" not in first.log()
    admin = {"Authorization": f"Bearer {TEST_ADMIN_TOKEN}"}
    body = {"config": {"generator_features": 8, "discriminator_features": 8}}
    started = httpx.post(first.url + "/api/v1/admin/runs", json=body, headers=admin, timeout=60)
    assert started.status_code == 201, started.text
    first.process.send_signal(signal.SIGTERM)  # a clean stop also stops embedded PostgreSQL
    assert first.process.wait(timeout=60) == 0, first.log()
    second = spawn_coordinator(None, GAN_DATA_DIR=str(data_dir))
    runs = httpx.get(second.url + "/api/v1/runs").json()
    assert [r["run_id"] for r in runs] == [started.json()["run_id"]]
    second.process.send_signal(signal.SIGTERM)
    assert second.process.wait(timeout=60) == 0, second.log()


def test_serve_refuses_a_database_behind_head(tmp_path: Path, database_url: str) -> None:
    migrations.downgrade(database_url, "base")
    result = subprocess.run(
        [GAN_COORDINATOR, "serve", "--port", "1"], env=coordinator_env(database_url),
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 2
    assert "gan-coordinator migrate" in result.stderr
    migrate = subprocess.run([GAN_COORDINATOR, "migrate"], env=coordinator_env(database_url),
                             capture_output=True, text=True, timeout=120, cwd=tmp_path)  # fmt: skip
    assert migrate.returncode == 0, migrate.stderr


def test_placeholder_secrets_are_refused_in_production(tmp_path: Path) -> None:
    env = coordinator_env(None, GAN_ENVIRONMENT="production", GAN_ADMIN_TOKEN="changeme")
    result = subprocess.run([GAN_COORDINATOR, "migrate"], env=env, capture_output=True,
                            text=True, timeout=120, cwd=tmp_path)  # fmt: skip
    assert result.returncode == 2 and "GAN_ADMIN_TOKEN" in result.stderr


def test_run_commands_talk_to_the_server(
    tmp_path: Path, database_url: str, spawn_coordinator: Callable[..., SpawnedCoordinator]
) -> None:
    server = spawn_coordinator(database_url)
    env = coordinator_env(database_url)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([GAN_COORDINATOR, *args, "--url", server.url], env=env,
                              capture_output=True, text=True, timeout=120)  # fmt: skip

    started = cli("run", "start", "--preset", "large", "--generator-features", "8",
                  "--discriminator-features", "8", "--epochs", "2", "--images-per-unit", "100")
    assert started.returncode == 0, started.stderr
    assert '"units_per_step": 8' in started.stdout and '"max_epochs": 2' in started.stdout
    assert '"images_per_unit": 100' in started.stdout
    assert cli("run", "pause").returncode == 0
    assert '"status": "paused"' in cli("run", "status").stdout
    assert cli("run", "resume").returncode == 0
    rotated = cli("join-code", "rotate")
    assert rotated.returncode == 0 and "join_code" in rotated.stdout
    assert cli("workers", "revoke", "12345").returncode == 1  # unknown worker: 404
    assert cli("run", "stop").returncode == 0
    assert asyncio.run(_status(database_url)) == "stopped"


async def _status(database_url: str) -> str:
    from tests.coordinator_service.helpers import fetch

    return str((await fetch(database_url, "SELECT status FROM runs"))[0]["status"])


def test_run_start_flags_for_a_local_steps_run() -> None:
    from coordinator_service.cli import build_parser, run_start_body

    args = build_parser().parse_args(
        ["run", "start", "--result-kind", "local_steps", "--inner-steps", "16",
         "--inner-lr", "0.0004", "--outer-lr", "0.5", "--outer-momentum", "0.8",
         "--outer-nesterov", "false", "--result-dtype", "bfloat16"]
    )  # fmt: skip
    assert run_start_body(args)["config"] == {
        "result_kind": "local_steps", "result_dtype": "bfloat16", "inner_steps": 16,
        "inner_lr": 0.0004, "outer_lr": 0.5, "outer_momentum": 0.8, "outer_nesterov": False,
    }  # fmt: skip
    with pytest.raises(SystemExit):
        build_parser().parse_args(["run", "start", "--outer-nesterov", "maybe"])


def _healthz_over(sock: socket.socket) -> bytes:
    """One whole response to GET /healthz on this connection (head and body may come
    in separate segments)."""
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: coordinator\r\n\r\n")
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
    while len(body) < length:
        body += sock.recv(65536)
    return head + b"\r\n\r\n" + body


def test_serve_keeps_an_idle_connection_as_long_as_set(
    database_url: str, spawn_coordinator: Callable[..., SpawnedCoordinator]
) -> None:
    """A worker's requests are seconds apart: each would open a connection (and with TLS
    shake hands) anew if the coordinator dropped idle ones sooner, as uvicorn's 5 s did."""
    server = spawn_coordinator(database_url, GAN_KEEP_ALIVE_SECONDS="3")
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        assert _healthz_over(sock).startswith(b"HTTP/1.1 200")
        time.sleep(1.5)
        assert _healthz_over(sock).startswith(b"HTTP/1.1 200")  # the same connection
        time.sleep(4)
        assert sock.recv(1) == b""  # closed by the coordinator after 3 s idle
    # gan-worker drops its idle connections first, and keeps them past its heartbeats.
    worker_heartbeat_gap = WorkerSettings().heartbeat_interval
    assert worker_heartbeat_gap < KEEPALIVE_SECONDS < Settings().keep_alive_seconds
