"""Local-steps runs end to end through the real coordinator (issue 8).

H = 1 with the outer optimizer set to plain SGD at lr 1 is one ordinary DCGAN Adam
step; a bfloat16 result lands within bfloat16 rounding of the float32 one; a result of
the other kind is refused with 422 and changes nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import torch

from coordinator_service.training.planner import units_per_claim
from shared.aggregation import OuterConfig, aggregate, apply_deltas, initial_optimizer_state
from shared.builtin_faces import BuiltinFaces
from shared.codec import decode_snapshot, encode_result
from shared.models import ModelConfig, StateSpec, build_models, model_state
from shared.protocol import LocalStepsInfo, RunConfig
from shared.unit_result import image_noise
from tests.conftest import NARROW_RUN, RunningCoordinator
from tests.coordinator_service.api.test_refusals import assert_refused_unchanged
from tests.coordinator_service.helpers import (
    claim,
    model_config,
    real_result,
    stored_checkpoint,
    upload,
)
from tests.shared.helpers import textbook_dcgan

SEED = 5
PLAIN_SGD = {"outer_lr": 1.0, "outer_momentum": 0.0, "outer_nesterov": False}


@pytest.fixture(autouse=True)
def one_thread() -> Any:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def served_weights(worker: httpx.Client, iteration: int, spec: StateSpec) -> Any:
    deadline = time.monotonic() + 60
    while (response := worker.get(f"/weights/{iteration}")).status_code != 200:
        assert time.monotonic() < deadline, response.text
        time.sleep(0.05)
    return decode_snapshot(response.content, spec)


def test_h1_with_plain_outer_sgd_is_one_local_adam_step(coordinator: RunningCoordinator) -> None:
    config = ModelConfig()  # the real 64-feature DCGAN
    spec = StateSpec.from_config(config)
    coordinator.start_run(
        seed=SEED, units_per_step=1, images_per_unit=16, batch_size=16,
        dataset={"size": 64, "shard_size": 32}, result_kind="local_steps", **PLAIN_SGD,
    )  # fmt: skip
    worker = coordinator.client(coordinator.register())
    unit = claim(worker)
    assert unit is not None and len(unit.image_indices) == 16
    assert unit.run.result_kind == "local_steps"
    assert unit.run.local_steps == LocalStepsInfo(
        inner_steps=1, inner_lr=2e-4, inner_beta1=0.5, inner_beta2=0.999
    )
    weights = worker.get(coordinator.url + unit.weights_url).content
    body = encode_result(real_result(unit, weights))
    assert upload(worker, unit, body).status_code == 200

    w0 = model_state(*build_models(config, seed=SEED))
    assert all(torch.equal(w0[k], v) for k, v in decode_snapshot(weights, spec).weights.items())
    indices = unit.image_indices  # trained in the unit's order, the epoch walk's
    batch = (BuiltinFaces(64, 0).load(indices), image_noise(SEED, 0, indices, 100))
    expected = textbook_dcgan(config, w0, [batch])

    served = served_weights(worker, 1, spec)
    assert served.iteration == 1 and served.weights.keys() == expected.keys()
    for name, tensor in expected.items():
        # Bit for bit for this seed and unit: W_0 - (W_0 - W_local) rounds back to W_local
        # in every element (a step of about lr is small next to the weights it changes).
        # Another seed could differ in the last bit of a weight near zero.
        assert torch.equal(served.weights[name], tensor), name
    status = worker.get("/status").json()
    assert status["result_kind"] == "local_steps" and status["inner_steps"] == 1
    assert status["outer_steps"] == 1 and status["iteration"] == 1
    assert status["result_bytes_per_image"] == pytest.approx(len(body) / 16)


def test_bf16_result_is_accepted_within_bf16_rounding_and_momentum_is_kept(
    coordinator_factory: Callable[..., RunningCoordinator],
) -> None:
    coordinator = coordinator_factory(snapshot_seconds=0)  # every version with its state
    coordinator.start_run(
        **NARROW_RUN, seed=SEED, units_per_step=1, result_kind="local_steps",
        result_dtype="bfloat16", batch_size=8,
    )  # fmt: skip
    worker = coordinator.client(coordinator.register())
    unit = claim(worker)
    assert unit is not None and unit.run.result_dtype == "bfloat16"
    config = model_config(unit)
    spec = StateSpec.from_config(config)
    weights = worker.get(coordinator.url + unit.weights_url).content
    result = real_result(unit, weights)
    # Two steps of 8 over a 16-image unit: each image once.
    assert result.num_samples == 16 and result.extra["inner_steps"] == "2"
    fp32_body = encode_result(result)
    body = encode_result(result, torch.bfloat16)
    assert len(body) < 0.55 * len(fp32_body)
    answer = upload(worker, unit, body)
    assert answer.status_code == 200 and answer.json()["num_samples"] == 16

    w0 = decode_snapshot(weights, spec).weights
    params = {k: w0[k] for k in spec.parameters}
    fp32_w1, _ = apply_deltas(w0, aggregate([result]), initial_optimizer_state(params),
                              OuterConfig())  # fmt: skip
    served = served_weights(worker, 1, spec)
    # Per element: bf16 keeps 8 significant bits, so each delta (scaled by the first
    # Nesterov step's lr * (1 + momentum)) and each buffer is off by at most 2^-8 of itself.
    scale = 0.7 * 1.9
    for name, expected in fp32_w1.items():
        source = result.tensors[name] * scale if name in result.tensors else result.buffers[name]
        bound = source.abs() * 2**-8 + 1e-6
        assert bool(((served.weights[name] - expected).abs() <= bound).all()), name
    changed = sum(
        not torch.equal(served.weights[k], fp32_w1[k]) for k in result.tensors
    )  # bf16 really was on the wire: the step is not bit-identical to the fp32 path
    assert changed > 0

    # The outer momentum lives in the checkpoint, like Adam's moments in a gradients run.
    checkpoint = decode_snapshot(stored_checkpoint(coordinator.database_url, 1, 1), spec)
    assert checkpoint.optimizer is not None and checkpoint.optimizer.step == 1
    momentum = checkpoint.optimizer.momentum
    assert momentum is not None and momentum.keys() == set(spec.parameters)
    # ... and nothing else: no Adam moments the coordinator would never use.
    assert checkpoint.optimizer.exp_avg == {} == checkpoint.optimizer.exp_avg_sq
    status = worker.get("/status").json()
    assert status["result_dtype"] == "bfloat16" and status["outer_steps"] == 1
    assert status["result_bytes_per_image"] == pytest.approx(len(body) / 16)


def test_a_result_of_the_wrong_kind_or_count_is_refused_and_changes_nothing(
    coordinator: RunningCoordinator,
) -> None:
    """A result's weight in the fold is its unit's image count: whatever a worker declares
    otherwise (images, inner steps, micro-batch) gets the result refused, not reweighted."""
    coordinator.start_run(**NARROW_RUN, units_per_step=10, result_kind="local_steps",
                          batch_size=8)  # fmt: skip
    worker = coordinator.client(coordinator.register())
    unit = claim(worker)
    assert unit is not None
    weights = worker.get(coordinator.url + unit.weights_url).content
    good = real_result(unit, weights)
    wrong_kind = real_result(unit, weights)
    wrong_kind.kind = "d_phase"
    wrong_h = real_result(unit, weights)
    wrong_h.extra["inner_steps"] = "3"
    inflated = real_result(unit, weights)
    inflated.num_samples *= 32
    huge_batch = real_result(unit, weights)
    huge_batch.extra["batch_size"] = str(10**12)
    for bad in (wrong_kind, wrong_h, inflated, huge_batch):
        body = encode_result(bad)
        assert_refused_unchanged(coordinator, lambda b=body: upload(worker, unit, b), 422,
                                 "invalid_result")  # fmt: skip
    answer = upload(worker, unit, encode_result(good))
    assert answer.status_code == 200 and answer.json()["num_samples"] == 16


def test_local_steps_options_need_a_local_steps_run(coordinator: RunningCoordinator) -> None:
    admin = coordinator.admin()
    for options in ({"inner_steps": 4}, {"outer_lr": 1.0}, {"inner_lr": 1e-3}):
        response = admin.post("/admin/runs", json={"config": {**NARROW_RUN, **options}})
        assert response.status_code == 422, response.text
        assert "local_steps" in response.json()["detail"]
    started = coordinator.start_run(**NARROW_RUN, result_kind="local_steps")
    config = started["config"]  # the defaults are filled in and stored with the run
    assert config["inner_steps"] == 1  # one pass over a 16-image unit at 64 per batch
    assert (config["inner_lr"], config["inner_beta1"], config["inner_beta2"]) == (
        2e-4, 0.5, 0.999
    )
    assert (config["outer_lr"], config["outer_momentum"], config["outer_nesterov"]) == (
        0.7, 0.9, True
    )


def test_inner_steps_that_would_train_images_twice_or_never_are_refused() -> None:
    with pytest.raises(ValueError, match="images_per_unit to inner_steps x batch_size"):
        RunConfig(result_kind="local_steps", images_per_unit=608, inner_steps=32)


def test_presets_from_the_class_simulator_unless_told_otherwise() -> None:
    from coordinator_service.training.presets import resolve

    small = resolve("small", {})
    assert (small.result_kind, small.units_per_step) == ("local_steps", 3)
    for preset, k in (("medium", 2), ("large", 8)):  # the class simulator's choices
        config = resolve(preset, {})
        assert (config.result_kind, config.units_per_step, config.max_staleness) == (
            "async_local_steps", k, 64
        )
    for preset in ("small", "medium", "large"):
        config = resolve(preset, {})  # docs/local-steps.md: H = 32, 2,048-image units, bf16
        assert (config.inner_steps, config.images_per_unit, config.result_dtype) == (
            32, 2048, "bfloat16"
        )
        assert config.unit_seconds is None  # dynamic units: worse in the simulator so far
        dynamic = resolve(preset, {"unit_seconds": 30.0, "images_per_unit": 512})
        assert units_per_claim(dynamic, 80.0) == 4 and units_per_claim(dynamic, 1200.0) == 16
        assert (config.outer_lr, config.outer_momentum, config.outer_nesterov) == (0.7, 0.9, True)
        smaller = resolve(preset, {"images_per_unit": 640})  # H follows: one pass of 64s
        assert (smaller.images_per_unit, smaller.inner_steps) == (640, 10)
        assert resolve(preset, {"batch_size": 32}).inner_steps == 64
        sync = resolve(preset, {"result_kind": "synchronous"})  # the preset's H is dropped
        assert (sync.inner_steps, sync.images_per_unit, sync.result_dtype) == (
            None, 64, "float32"
        )
        assert (sync.unit_seconds, sync.max_staleness) == (None, None)
        barrier = resolve(preset, {"result_kind": "local_steps"})  # no staleness to bound
        assert barrier.max_staleness is None and barrier.units_per_step == config.units_per_step
