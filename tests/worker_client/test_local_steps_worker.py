"""A real gan-worker computes a local-steps unit for a real coordinator (issue 8)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.builtin_faces import BuiltinFaces
from shared.codec import decode_snapshot
from shared.models import ModelConfig, StateSpec
from shared.unit_result import image_noise
from tests.conftest import NARROW_RUN, RunningCoordinator
from tests.coordinator_service.helpers import fetch
from tests.shared.helpers import textbook_dcgan

from .processes import WorkerLauncher

NARROW = ModelConfig(32, 8, 8)  # NARROW_RUN's model


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[WorkerLauncher]:
    launcher = WorkerLauncher(tmp_path)
    yield launcher
    launcher.close()


def test_a_worker_trains_one_local_steps_unit_in_bf16(
    coordinator: RunningCoordinator, workers: WorkerLauncher
) -> None:
    coordinator.start_run(
        **NARROW_RUN, units_per_step=1, max_iterations=1, result_kind="local_steps",
        result_dtype="bfloat16", batch_size=5,
    )  # fmt: skip
    proc = workers.start(coordinator.url, "ada", join_code=coordinator.join_code)
    assert proc.wait() == 0, proc.output()
    out = proc.output()
    assert "16 images in micro-batches of 5, H = 4 inner steps (local steps run)" in out
    assert "completed successfully" in out and "The training run is finished" in out
    # Micro-batches of 5, 5, 5, 1: four inner steps, each of the 16 images once.
    trained = 16
    assert proc.images_done() == trained
    api = coordinator.client()
    status = api.get("/status").json()
    assert status["state"] == "finished" and status["result_kind"] == "local_steps"
    assert status["inner_steps"] == 4 and status["outer_steps"] == 1
    assert status["images_processed"] == trained
    # bf16 on the wire: 2 bytes per value (float32 would be 4) plus the header.
    values = StateSpec.from_config(ModelConfig(32, 8, 8)).numel()  # NARROW_RUN's model
    assert 2 * values / trained < status["result_bytes_per_image"] < 3 * values / trained
    history = api.get("/history").json()
    assert [(h["iteration"], h["num_images"]) for h in history] == [(0, trained)]
    board = {row["name"]: row for row in api.get("/leaderboard").json()}
    assert board["ada"]["total_images"] == trained and board["ada"]["total_work_units"] == 1


def test_a_worker_keeps_its_inner_adam_across_units(
    coordinator: RunningCoordinator, workers: WorkerLauncher
) -> None:
    """inner_optimizer per_worker, outer SGD lr 1 without momentum, one unit per step:
    one gan-worker's three units are the textbook loop over their six micro-batches
    with one Adam (written out in tests/shared/helpers.py), up to the rounding of
    W_t - (W_t - W_local) in each outer step."""
    coordinator.start_run(
        **NARROW_RUN, units_per_step=1, max_iterations=3, result_kind="local_steps",
        batch_size=8, outer_lr=1.0, outer_momentum=0.0, outer_nesterov=False,
        inner_optimizer="per_worker",
    )  # fmt: skip
    proc = workers.start(coordinator.url, "ada", join_code=coordinator.join_code)
    assert proc.wait() == 0, proc.output()
    admin = coordinator.admin()
    spec = StateSpec.from_config(NARROW)
    w0 = decode_snapshot(admin.get("/weights/0").content, spec).weights
    ours = decode_snapshot(admin.get("/weights/3").content, spec).weights
    units = asyncio.run(fetch(
        coordinator.database_url,
        "SELECT image_indices, done_iteration FROM work_units "
        "WHERE done_iteration IS NOT NULL ORDER BY done_iteration",
    ))  # fmt: skip
    assert [u["done_iteration"] for u in units] == [0, 1, 2]
    run = admin.get("/status").json()["run"]["config"]
    faces = BuiltinFaces(run["dataset"]["size"], run["dataset"]["builtin_seed"])
    batches = []
    for unit in units:
        indices = list(unit["image_indices"])
        noise = image_noise(run["seed"], unit["done_iteration"], indices, NARROW.latent_dim)
        batches += [(faces.load(indices[i : i + 8]), noise[i : i + 8]) for i in (0, 8)]
    reference = textbook_dcgan(NARROW, w0, batches)
    for name, expected in reference.items():
        error = float((ours[name] - expected).norm() / expected.norm().clamp_min(1e-12))
        assert error <= 1e-5, f"{name}: relative difference {error:.2e}"
    # Fresh moments at every unit land elsewhere: the kept state is what made it equal.
    fresh = w0
    for start in range(0, len(batches), 2):
        fresh = textbook_dcgan(NARROW, fresh, batches[start : start + 2])
    name = "generator.main.0.weight"
    assert float((fresh[name] - ours[name]).norm() / ours[name].norm()) > 1e-3
