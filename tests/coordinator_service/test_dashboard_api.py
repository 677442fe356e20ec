"""The read-only JSON API and /metrics, with exact values after scripted results.

Workers register and post results through the real API of a real coordinator; the
aggregator steps for real. Results are fake gradients with known metrics (helpers'
``fake_body``: G loss 0.7, D loss 1.3, D accuracies 0.5), so every number the
dashboard shows is known in advance.
"""

from __future__ import annotations

import asyncio
import csv
import io
import time
from typing import Any

import httpx
import pytest

from coordinator_service.db import migrations
from coordinator_service.flops import flops_per_image
from shared.protocol import HardwareInfo
from tests.conftest import NARROW_RUN, RunningCoordinator
from tests.coordinator_service.helpers import claim, fake_body, fetch, sampled_through, upload

CPU_LAPTOP = HardwareInfo(device="cpu", cpu_cores=8, ram_gb=16.0)
T4_COLAB = HardwareInfo(
    device="cuda:0", device_name="NVIDIA T4", cpu_cores=2, ram_gb=12.5, gpu_count=1,
    gpu_vram_gb=15.0,
)  # fmt: skip


def register(coordinator: RunningCoordinator, name: str, hardware: HardwareInfo) -> httpx.Client:
    body = {"join_code": coordinator.join_code, "name": name, "hardware": hardware.model_dump()}
    response = coordinator.client().post("/workers", json=body)
    assert response.status_code == 201, response.text
    return coordinator.client(response.json()["token"])


def wait_for_iteration(client: httpx.Client, iteration: int) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while True:
        status = client.get("/status").json()
        if status["iteration"] >= iteration:
            return dict(status)
        assert time.monotonic() < deadline, status
        time.sleep(0.05)


def set_last_seen(coordinator: RunningCoordinator, name: str, seconds_ago: int) -> None:
    asyncio.run(
        fetch(
            coordinator.database_url,
            "UPDATE workers SET last_heartbeat = now() - make_interval(secs => $2) "
            "WHERE name = $1 RETURNING worker_id",
            name,
            seconds_ago,
        )
    )


def metric(text: str, name: str) -> float:
    """The value of one sample line of a Prometheus text exposition."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{name} not in /metrics")


def test_no_run_yet(coordinator: RunningCoordinator) -> None:
    public = coordinator.client()
    status = public.get("/status").json()
    assert status["state"] == "no_run"
    assert status["run"] is None and status["result_kind"] is None
    assert (status["iteration"], status["epoch"], status["images_processed"]) == (0, 0, 0)
    assert status["workers"] == {"active": 0, "idle": 0, "offline": 0, "total": 0}
    assert status["throughput"]["images_per_second"] == 0.0
    assert public.get("/leaderboard").json() == []
    assert public.get("/cluster").json() == {
        "workers_online": 0, "workers_active": 0, "cpu_cores": 0, "ram_gb": 0.0, "gpus": 0,
        "gpu_vram_gb": 0.0, "devices": [],
    }  # fmt: skip
    assert public.get("/history").json()["code"] == "no_run"
    page = httpx.get(coordinator.url + "/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert '<script src="/static/app.js"' in page.text
    assert httpx.get(coordinator.url + "/static/app.js").status_code == 200


def test_status_leaderboard_cluster_after_scripted_results(
    coordinator: RunningCoordinator,
) -> None:
    ada = register(coordinator, "ada", CPU_LAPTOP)
    grace = register(coordinator, "grace", T4_COLAB)
    register(coordinator, "linus", HardwareInfo())  # idle: seen 2 minutes ago
    register(coordinator, "ken", HardwareInfo())  # offline: seen an hour ago
    mallory = register(coordinator, "mallory", HardwareInfo())
    admin = coordinator.admin()
    assert admin.post("/admin/workers/5/revoke").status_code == 200
    assert mallory.get("/workers/me").status_code == 403
    coordinator.start_run(  # local steps: one version per iteration keeps the script short
        **NARROW_RUN, units_per_step=2, max_iterations=3, backup_after_seconds=0.0,
        result_kind="local_steps",
    )
    public = coordinator.client()

    # Iteration 0: one unit each.
    for worker in (ada, grace):
        unit = claim(worker)
        assert unit is not None
        assert upload(worker, unit, fake_body(unit)).status_code == 200
    wait_for_iteration(public, 1)
    # Iteration 1: ada holds both units of the step, so grace gets a backup copy of the
    # older one; ada's result comes first and wins, grace's copy is then refused.
    units = [claim(ada) for _ in range(2)]
    backup = claim(grace)
    assert all(u is not None for u in units) and backup is not None and backup.is_backup
    for unit in units:
        assert unit is not None and upload(ada, unit, fake_body(unit)).status_code == 200
    wait_for_iteration(public, 2)
    late = upload(grace, backup, fake_body(backup))
    assert late.status_code == 409 and late.json()["code"] == "unit_completed"
    # ada posting grace's lease: refused before the body is even decoded.
    lost = upload(ada, backup, b"not safetensors")
    assert lost.status_code == 409 and lost.json()["code"] == "lease_lost"
    set_last_seen(coordinator, "linus", 120)
    set_last_seen(coordinator, "ken", 3600)
    assert sampled_through(public, 2) == [1, 2]  # each grid is drawn just after its version

    status = public.get("/status").json()
    assert status["state"] == "running" and status["result_kind"] == "local_steps"
    assert (status["result_dtype"], status["inner_steps"], status["outer_steps"]) == (
        "float32", 1, 2
    )
    # Four accepted fp32 results of 16 images each (the refused ones were not received).
    assert status["result_bytes_per_image"] == pytest.approx(len(fake_body(units[0])) / 16)
    assert (status["iteration"], status["epoch"]) == (2, 0)
    assert (status["max_iterations"], status["max_epochs"]) == (3, None)
    # 640 images in units of 16: 40 units; 4 in steps, none out.
    assert status["units"] == {"pending": 36, "leased": 0, "done": 4, "done_images": 64}
    assert status["epoch_progress"] == pytest.approx(0.1)
    assert status["images_per_epoch"] == 640
    assert status["images_processed"] == 64
    assert status["results_waiting"] == 0
    assert status["workers"] == {"active": 2, "idle": 1, "offline": 1, "total": 4}
    assert (status["active_workers"], status["total_workers"]) == (2, 4)
    assert status["latest_sample_iteration"] == 2
    assert status["last_step_at"] is not None and status["finished_at"] is None
    throughput = status["throughput"]
    assert throughput["recent_images"] == 64
    expected_flops = flops_per_image(32, 8, 8)
    assert throughput["flops_per_image"] == expected_flops
    window = throughput["window_seconds"]
    assert 1.0 <= window <= status["elapsed_seconds"] + 1.0
    assert throughput["images_per_second"] == pytest.approx(64 / window)
    assert throughput["gflops"] == pytest.approx(64 / window * expected_flops / 1e9)

    board = public.get("/leaderboard").json()
    assert [(r["rank"], r["name"], r["total_work_units"], r["total_images"], r["status"])
            for r in board] == [
        (1, "ada", 3, 48, "active"),
        (2, "grace", 1, 16, "active"),
        (3, "linus", 0, 0, "idle"),  # equal images, equal rank: by registration
        (3, "ken", 0, 0, "offline"),
    ]  # fmt: skip
    assert [r["hardware"] for r in board] == [
        "CPU, 8 cores, 16 GB RAM", "NVIDIA T4 (15 GB)", "CPU, 1 core", "CPU, 1 core",
    ]  # fmt: skip
    assert board[1]["gpu_vram_gb"] == 15.0 and board[1]["device_name"] == "NVIDIA T4"
    assert 115 <= board[2]["seconds_since_seen"] <= 180

    assert public.get("/cluster").json() == {
        "workers_online": 3, "workers_active": 2, "cpu_cores": 11, "ram_gb": 28.5, "gpus": 1,
        "gpu_vram_gb": 15.0,
        "devices": [{"device": "CPU", "workers": 2}, {"device": "NVIDIA T4", "workers": 1}],
    }  # fmt: skip

    history = public.get("/history").json()
    keys = ("iteration", "num_results", "num_workers", "num_images")
    counts = [tuple(h[k] for k in keys) for h in history]
    assert counts == [(0, 2, 2, 32), (1, 2, 1, 32)]
    for entry in history:
        assert entry["g_loss"] == pytest.approx(0.7) and entry["d_loss"] == pytest.approx(1.3)
        assert entry["d_real_accuracy"] == pytest.approx(0.5)
        assert entry["d_fake_accuracy"] == pytest.approx(0.5)
    png = public.get("/samples/2.png")
    assert png.headers["content-type"] == "image/png" and png.content[:4] == b"\x89PNG"

    # The grading export: everyone, the revoked worker too, and only for the instructor.
    assert public.get("/admin/leaderboard.csv").status_code == 401
    export = admin.get("/admin/leaderboard.csv")
    assert export.status_code == 200 and export.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(export.text)))
    assert [(r["rank"], r["name"], r["total_images"], r["status"], r["revoked"]) for r in rows] == [
        ("1", "ada", "48", "active", "False"),
        ("2", "grace", "16", "active", "False"),
        ("3", "linus", "0", "idle", "False"),
        ("3", "ken", "0", "offline", "False"),
        ("1", "mallory", "0", "revoked", "True"),
    ]  # fmt: skip

    scraped = httpx.get(coordinator.url + "/metrics")
    metrics = scraped.text
    # Every answer says how long the coordinator itself took (what the load bench reads).
    app_ms = float(scraped.headers["server-timing"].removeprefix("app;dur="))
    assert 0 < app_ms < 60_000
    assert metric(metrics, "gan_iteration") == 2
    assert metric(metrics, 'gan_workers{status="active"}') == 2
    assert metric(metrics, 'gan_workers{status="idle"}') == 1
    assert metric(metrics, 'gan_workers{status="offline"}') == 1
    assert metric(metrics, 'gan_results_total{outcome="accepted"}') == 4
    assert metric(metrics, 'gan_results_total{outcome="unit_completed"}') == 1
    assert metric(metrics, 'gan_results_total{outcome="lease_lost"}') == 1
    assert metric(metrics, "gan_claim_seconds_count") == 5
    assert metric(metrics, 'gan_claims_total{outcome="leased"}') == 5
    body_bytes = len(fake_body(units[0]))  # every result of this model has the same size
    assert metric(metrics, "gan_http_bytes_in_total") >= 5 * body_bytes + len(b"not safetensors")
    assert metric(metrics, "gan_http_bytes_out_total") >= len(png.content)

    # Pause, resume, finish: the state follows, and a finished run's clock stops.
    assert admin.post("/admin/runs/current/pause").status_code == 200
    assert public.get("/status").json()["state"] == "paused"
    assert admin.post("/admin/runs/current/resume").status_code == 200
    for worker in (ada, grace):
        unit = claim(worker)
        assert unit is not None and upload(worker, unit, fake_body(unit)).status_code == 200
    finished = wait_for_iteration(public, 3)
    assert finished["state"] == "finished" and finished["finished_at"] is not None
    assert finished["images_processed"] == 96
    assert finished["units"] == {"pending": 34, "leased": 0, "done": 6, "done_images": 96}
    assert finished["throughput"]["recent_images"] == 96
    time.sleep(0.2)
    later = public.get("/status").json()  # a finished run's clock and rate stand still
    assert later["elapsed_seconds"] == finished["elapsed_seconds"]
    assert later["throughput"] == finished["throughput"]
    assert metric(httpx.get(coordinator.url + "/metrics").text, "gan_iteration") == 0


def test_openapi_documents_the_read_only_api(coordinator: RunningCoordinator) -> None:
    spec = httpx.get(coordinator.url + "/openapi.json").json()
    paths = spec["paths"]
    for path in ("status", "leaderboard", "cluster", "history", "samples",
                 "samples/{iteration}.png"):  # fmt: skip
        assert "get" in paths[f"/api/v1/{path}"], path
    schemas = spec["components"]["schemas"]
    for name in ("DashboardStatus", "LeaderboardRow", "ClusterResources", "HistoryEntry"):
        assert schemas[name]["examples"], name
    samples = paths["/api/v1/samples"]["get"]["responses"]["200"]["content"]
    assert samples["application/json"]["example"] == [10, 20, 30, 40]
    png = paths["/api/v1/samples/{iteration}.png"]["get"]["responses"]["200"]["content"]
    assert "image/png" in png
    csv_route = paths["/api/v1/admin/leaderboard.csv"]["get"]
    assert "text/csv" in csv_route["responses"]["200"]["content"]
    assert csv_route["security"] == [{"AdminToken": []}]
    assert "/" not in paths  # the page itself is not API


def test_dashboard_index_migration_is_reversible(database_url: str) -> None:
    query = "SELECT indexname FROM pg_indexes WHERE indexname = 'results_run_accepted'"
    assert len(asyncio.run(fetch(database_url, query))) == 1
    migrations.downgrade(database_url, "0001")
    assert asyncio.run(fetch(database_url, query)) == []
    migrations.upgrade(database_url)
    assert len(asyncio.run(fetch(database_url, query))) == 1
