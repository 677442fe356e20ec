"""The contract at the real model size: a one-worker synchronous run, one unit of B images
per phase, takes pytorch/examples' dcgan steps at batch B (written out independently in
``tests.shared.helpers.textbook_dcgan``), parameters and buffers equal to the last bit."""

from __future__ import annotations

import torch

from shared.builtin_faces import BuiltinFaces
from shared.codec import decode_snapshot, encode_result
from shared.models import ModelConfig, StateSpec, build_models, model_state
from shared.protocol import WorkUnit
from shared.unit_result import image_noise
from tests.conftest import RunningCoordinator
from tests.coordinator_service.helpers import (
    claim_when_ready,
    real_result,
    upload,
    wait_for_version,
)
from tests.shared.helpers import assert_same_state, textbook_dcgan

SEED, B, ITERATIONS = 11, 16, 3




def test_one_worker_synchronous_run_takes_the_textbook_steps(
    coordinator: RunningCoordinator,
) -> None:
    torch.set_num_threads(1)
    config = ModelConfig()  # the real 64-feature DCGAN
    spec = StateSpec.from_config(config)
    coordinator.start_run(
        seed=SEED, units_per_step=1, images_per_unit=B, batch_size=B,
        max_iterations=ITERATIONS, dataset={"size": 64, "shard_size": 32},
    )  # fmt: skip
    worker = coordinator.client(coordinator.register())
    units: list[WorkUnit] = []
    for version in range(2 * ITERATIONS):
        unit = claim_when_ready(worker)
        assert unit.iteration == version, unit
        weights = wait_for_version(worker, version)
        assert upload(worker, unit, encode_result(real_result(unit, weights))).status_code == 200
        units.append(unit)
    served = decode_snapshot(wait_for_version(worker, 2 * ITERATIONS), spec)

    # Each G phase repeats its D phase's images; D phases walk the epoch's units.
    d_units, g_units = units[0::2], units[1::2]
    assert [u.image_indices for u in d_units] == [u.image_indices for u in g_units]
    assert len({i for u in d_units for i in u.image_indices}) == ITERATIONS * B
    images = BuiltinFaces(64, 0)
    batches = [(images.load(u.image_indices), image_noise(SEED, t, u.image_indices, 100))
               for t, u in enumerate(d_units)]  # fmt: skip
    w0 = model_state(*build_models(config, seed=SEED))
    assert_same_state(served.weights, textbook_dcgan(config, w0, batches))
    assert worker.get("/status").json()["run"]["status"] == "finished"
