"""The contract at the real model size: one worker, one unit per step == the local step."""

from __future__ import annotations

import time

import torch

from shared.aggregation import AdamConfig, aggregate, apply_gradients, initial_optimizer_state
from shared.builtin_faces import BuiltinFaces
from shared.codec import decode_snapshot, encode_result
from shared.models import ModelConfig, StateSpec, build_models, model_state
from shared.training_step import compute_gradients
from tests.conftest import RunningCoordinator
from tests.coordinator_service.helpers import claim, real_result, upload

SEED = 11


def test_one_worker_one_unit_per_step_equals_the_local_step(
    coordinator: RunningCoordinator,
) -> None:
    torch.set_num_threads(1)
    config = ModelConfig()  # the real 64-feature DCGAN
    spec = StateSpec.from_config(config)
    coordinator.start_run(
        seed=SEED, units_per_step=1, images_per_unit=16, dataset={"size": 64, "shard_size": 32}
    )
    worker = coordinator.client(coordinator.register())
    unit = claim(worker)
    assert unit is not None and len(unit.image_indices) == 16
    weights = worker.get(coordinator.url + unit.weights_url).content
    assert upload(worker, unit, encode_result(real_result(unit, weights))).status_code == 200

    # The same step done locally, from scratch, with the shared functions only.
    generator, discriminator = build_models(config, seed=SEED)
    w0 = model_state(generator, discriminator)
    served_w0 = decode_snapshot(weights, spec).weights
    assert all(torch.equal(w0[k], served_w0[k]) for k in w0)
    images = BuiltinFaces(64, 0).load(unit.image_indices)
    local = compute_gradients(generator, discriminator, images, unit.image_indices,
                              batch_size=64, seed=SEED, iteration=0)  # fmt: skip
    params = {k: w0[k] for k in spec.parameters}
    expected, _ = apply_gradients(w0, aggregate([local]), initial_optimizer_state(params),
                                  AdamConfig())  # fmt: skip

    deadline = time.monotonic() + 60
    while (response := worker.get("/weights/1")).status_code != 200:
        assert time.monotonic() < deadline, response.text
        time.sleep(0.05)
    served = decode_snapshot(response.content, spec)
    assert served.iteration == 1
    assert served.weights.keys() == expected.keys()
    for name, tensor in expected.items():
        assert torch.equal(served.weights[name], tensor), name
