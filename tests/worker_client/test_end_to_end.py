"""gan-worker processes against a real coordinator over real sockets (issue 4's list)."""

from __future__ import annotations

import signal
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trustme

from tests.conftest import NARROW_RUN, TEST_ADMIN_TOKEN, TEST_JOIN_CODE, RunningCoordinator

from .processes import WorkerLauncher

# One unit per epoch of 640 images: a unit lasts about two seconds, long enough to be
# interrupted in the middle, and there is exactly one unit to redo or to finish.
ONE_BIG_UNIT: dict[str, Any] = {
    **NARROW_RUN,
    "images_per_unit": 640,
    "dataset": {"size": 640, "shard_size": 640},
    "units_per_step": 1,
    "backup_after_seconds": 1000.0,  # no backup copies: only an expired lease frees the unit
}


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[WorkerLauncher]:
    launcher = WorkerLauncher(tmp_path)
    yield launcher
    launcher.close()


def wait_until(check, timeout: float = 60.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def leaderboard(client: httpx.Client) -> dict[str, dict[str, Any]]:
    return {row["name"]: row for row in client.get("/leaderboard").json()}


def test_two_workers_train_three_iterations(coordinator: RunningCoordinator, workers):
    coordinator.start_run(**NARROW_RUN, units_per_step=2, max_iterations=3)
    procs = [workers.start(coordinator.url, name, join_code=coordinator.join_code)
             for name in ("ada", "grace")]  # fmt: skip
    for proc in procs:
        assert proc.wait() == 0, proc.output()
        assert "The training run is finished" in proc.output()
    api = coordinator.client()
    status = api.get("/status").json()
    # Three synchronous iterations are six versions: D phase, G phase, three times.
    assert status["iteration"] == 6 and status["state"] == "finished"
    board = leaderboard(api)
    for proc in procs:
        out = proc.output()
        assert "Worker id" in out and "Device: cpu" in out and "Dataset:" in out
        assert board[proc.name]["total_images"] == proc.images_done(), out
        hardware = board[proc.name]  # sent at registration, shown on the leaderboard
        assert hardware["device"] == "cpu" and hardware["cpu_cores"] >= 1
        assert hardware["ram_gb"] > 0 and hardware["device_name"]
    history = api.get("/history").json()
    assert [h["iteration"] for h in history] == [0, 1, 2, 3, 4, 5]
    consumed = sum(h["num_images"] for h in history)
    assert sum(p.images_done() for p in procs) == status["images_processed"] == consumed
    assert all(h["num_results"] >= 2 for h in history)


def test_two_workers_train_an_asynchronous_run_without_waiting_for_each_other(
    coordinator: RunningCoordinator, workers
):
    """No barrier: a fold takes whatever results are in once there is one (K = 1), and a
    claim always has a unit, so neither worker waits for the other's result; every
    accepted image is counted once, in the fold that consumed it. With dynamic local
    updates a measured worker's claims join units: it trains more inner steps per unit."""
    coordinator.start_run(**NARROW_RUN, result_kind="async_local_steps", batch_size=8,
                          units_per_step=1, max_iterations=6, unit_seconds=60.0,
                          max_units_per_claim=4)  # fmt: skip
    procs = [workers.start(coordinator.url, name, join_code=coordinator.join_code)
             for name in ("ada", "grace")]  # fmt: skip
    for proc in procs:
        assert proc.wait() == 0, proc.output()
        assert "The training run is finished" in proc.output()
        assert "(async local steps run)" in proc.output()
    api = coordinator.client()
    status = api.get("/status").json()
    assert status["iteration"] == 6 and status["state"] == "finished"
    history = api.get("/history").json()
    assert len(history) == 6 and all(h["num_results"] >= 1 for h in history)
    consumed = sum(h["num_images"] for h in history)
    assert sum(p.images_done() for p in procs) == status["images_processed"] == consumed
    board = leaderboard(api)
    assert all(board[p.name]["total_images"] == p.images_done() > 0 for p in procs)
    # Each next unit was claimed, and its weights fetched, while one computed.
    assert any("while the last unit computed" in p.output() for p in procs)
    # Units of 16 images are H = 2; a worker timed by its first result gets 4 joined.
    outputs = "".join(p.output() for p in procs)
    assert "16 images in micro-batches of 8, H = 2 inner steps" in outputs
    assert "64 images in micro-batches of 8, H = 8 inner steps" in outputs


def test_kill_9_mid_unit_the_lease_expires_and_another_worker_redoes_it(
    coordinator_factory, workers
):
    coordinator = coordinator_factory()
    coordinator.start_run(**ONE_BIG_UNIT, lease_seconds=3.0, max_iterations=1)
    victim = workers.start(coordinator.url, "victim", join_code=coordinator.join_code)
    victim.wait_for("Processing work unit")
    victim.process.send_signal(signal.SIGKILL)
    victim.wait()
    unit = victim.output().split("Processing work unit ", 1)[1].split()[0]
    rescuer = workers.start(coordinator.url, "rescuer", join_code=coordinator.join_code)
    assert rescuer.wait() == 0, rescuer.output()
    assert f"Processing work unit {unit} (iteration 0)" in rescuer.output()
    api = coordinator.client()
    board = leaderboard(api)
    assert board["victim"]["total_images"] == 0 and board["victim"]["total_work_units"] == 0
    # The rescuer redid the D phase's unit, then computed the G phase on the same images.
    assert board["rescuer"]["total_images"] == rescuer.images_done() == 2 * 640
    status = api.get("/status").json()
    assert status["images_processed"] == 2 * 640 and status["iteration"] == 2
    assert [h["num_results"] for h in api.get("/history").json()] == [1, 1]


def test_heartbeats_keep_a_lease_shorter_than_the_unit_alive(coordinator, workers):
    coordinator.start_run(**ONE_BIG_UNIT, lease_seconds=1.0, max_iterations=1)
    worker = workers.start(coordinator.url, "ada", "--verbose",
                           join_code=coordinator.join_code)  # fmt: skip
    assert worker.wait() == 0, worker.output()
    out = worker.output()
    started = out.index("Processing work unit")
    assert "heartbeat: 1 lease(s) extended" in out[started:]
    assert "completed successfully!" in out and "not needed any more" not in out
    assert leaderboard(coordinator.client())["ada"]["total_images"] == 2 * 640  # D and G


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_first_sigint_or_sigterm_finishes_and_uploads_the_unit_then_exits_0(
    coordinator, workers, signum
):
    coordinator.start_run(**ONE_BIG_UNIT, max_iterations=2)
    worker = workers.start(coordinator.url, "ada", join_code=coordinator.join_code)
    worker.wait_for("Processing work unit")
    worker.process.send_signal(signum)
    assert worker.wait() == 0, worker.output()
    out = worker.output()
    assert "Stopping after this work unit" in out
    assert "completed successfully!" in out and out.count("Processing work unit") == 1
    assert "Stopped. Totals: 1 units, 640 images" in out
    api = coordinator.client()
    wait_until(lambda: api.get("/status").json()["iteration"] == 1, what="the step")
    assert leaderboard(api)["ada"]["total_images"] == 640


def test_second_sigint_releases_the_lease_and_exits_at_once(coordinator, workers):
    coordinator.start_run(**ONE_BIG_UNIT, max_iterations=1)
    worker = workers.start(coordinator.url, "ada", join_code=coordinator.join_code)
    worker.wait_for("Processing work unit")
    worker.process.send_signal(signal.SIGINT)
    worker.wait_for("Stopping after this work unit")
    worker.process.send_signal(signal.SIGINT)
    assert worker.wait() == 130, worker.output()
    assert "Handed work unit" in worker.output()
    assert "completed successfully" not in worker.output()
    units = coordinator.client().get("/status").json()["units"]
    assert units["leased"] == 0 and units["pending"] >= 1, units


def test_coordinator_killed_and_restarted_while_workers_run(
    database_url, spawn_coordinator, workers
):
    served = spawn_coordinator(database_url)
    port = int(served.url.rsplit(":", 1)[1])
    admin = httpx.Client(base_url=served.url + "/api/v1", timeout=30,
                         headers={"Authorization": f"Bearer {TEST_ADMIN_TOKEN}"})  # fmt: skip
    with admin:
        body = {"config": {**NARROW_RUN, "units_per_step": 2, "max_iterations": 4}}
        assert admin.post("/admin/runs", json=body).status_code == 201
    procs = [workers.start(served.url, name, join_code=TEST_JOIN_CODE) for name in ("ada", "bob")]
    for proc in procs:
        proc.wait_for("completed successfully!")
    with httpx.Client(base_url=served.url + "/api/v1", timeout=30) as api:
        before = api.get("/status").json()["iteration"]
    served.kill()
    for proc in procs:
        proc.wait_for("Cannot reach the coordinator", timeout=30)
    served = spawn_coordinator(database_url, port=port)
    with httpx.Client(base_url=served.url + "/api/v1", timeout=30) as api:
        assert api.get("/status").json()["iteration"] >= before  # the committed steps survived
    for proc in procs:
        assert proc.wait() == 0, proc.output()
        assert "Reconnected to the coordinator" in proc.output()
    with httpx.Client(base_url=served.url + "/api/v1", timeout=30) as api:
        status = api.get("/status").json()
        history = api.get("/history").json()
        board = leaderboard(api)
    # 4 iterations, each a D phase and a G phase
    assert status["iteration"] == 8 and [h["iteration"] for h in history] == list(range(8))
    consumed = sum(h["num_images"] for h in history)
    assert sum(p.images_done() for p in procs) == status["images_processed"] == consumed
    for proc in procs:
        assert board[proc.name]["total_images"] == proc.images_done()


@pytest.fixture
def https_coordinator(coordinator_factory, tmp_path) -> tuple[RunningCoordinator, Path]:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    certfile, keyfile, ca_file = tmp_path / "cert.pem", tmp_path / "key.pem", tmp_path / "ca.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(certfile))
    cert.private_key_pem.write_to_path(str(keyfile))
    ca.cert_pem.write_to_path(str(ca_file))
    context = ssl.create_default_context()
    ca.configure_trust(context)
    coordinator = coordinator_factory(
        ssl_certfile=str(certfile), ssl_keyfile=str(keyfile), verify=context
    )
    return coordinator, ca_file


def test_https_with_ca_bundle_works_and_without_it_says_how_to_fix_it(https_coordinator, workers):
    coordinator, ca_file = https_coordinator
    assert coordinator.url.startswith("https://")
    coordinator.start_run(**NARROW_RUN, units_per_step=1)
    refused = workers.start(coordinator.url, "ada", "--once", join_code=coordinator.join_code)
    assert refused.wait() == 1
    assert "--ca-bundle" in refused.output() and "not trusted" in refused.output()
    trusted = workers.start(coordinator.url, "ada", "--once", "--ca-bundle", str(ca_file),
                            join_code=coordinator.join_code)  # fmt: skip
    assert trusted.wait() == 0, trusted.output()
    assert "completed successfully!" in trusted.output()
    # A restarted worker keeps its identity: same worker, no join code needed.
    again = workers.start(coordinator.url, "ada", "--once", "--ca-bundle", str(ca_file))
    assert again.wait() == 0, again.output()
    assert "Using the saved identity" in again.output()
    api = coordinator.client()
    wait_until(lambda: api.get("/status").json()["iteration"] >= 2, what="two steps")
    board = coordinator.client().get("/leaderboard").json()
    assert len(board) == 1 and board[0]["total_work_units"] == 2
