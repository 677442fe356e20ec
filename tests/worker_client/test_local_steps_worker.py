"""A real gan-worker computes a local-steps unit for a real coordinator (issue 8)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.models import ModelConfig, StateSpec
from tests.conftest import NARROW_RUN, RunningCoordinator

from .processes import WorkerLauncher


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
    assert "16 images in micro-batches of 5 (local steps run)" in out
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
