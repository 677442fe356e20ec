"""Local-steps results: H = 1 with plain outer SGD at lr 1 is one reference DCGAN step."""

from __future__ import annotations

import torch

from shared.aggregation import (
    AdamConfig,
    OuterConfig,
    aggregate,
    apply_deltas,
    initial_optimizer_state,
)
from shared.local_steps import compute_local_steps
from shared.models import StateSpec
from shared.training_step import (
    LOCAL_STEPS,
    UnitMetrics,
    UnitResult,
)
from tests.shared.helpers import networks_at, reference_dcgan_steps

SEED, ITERATION = 9, 2


def _reference_dcgan_steps(config, weights, images, indices, batch_size, steps, adam):
    return reference_dcgan_steps(
        config, weights, images, indices,
        batch_size=batch_size, steps=steps, adam=adam, seed=SEED, iteration=ITERATION,
    )  # fmt: skip


def test_one_inner_step_with_plain_outer_sgd_is_one_local_adam_step(config, weights, images):
    adam = AdamConfig()
    indices = list(range(16))
    generator, discriminator = networks_at(config, weights)
    result = compute_local_steps(
        generator,
        discriminator,
        images,
        indices,
        batch_size=16,
        inner_steps=1,
        adam=adam,
        seed=SEED,
        iteration=ITERATION,
    )
    assert result.kind == LOCAL_STEPS and result.num_samples == 16
    spec = StateSpec.from_config(config)
    state = initial_optimizer_state({k: weights[k] for k in spec.parameters})
    plain = OuterConfig(lr=1.0, momentum=0.0, nesterov=False)
    stepped, _ = apply_deltas(weights, aggregate([result]), state, plain)
    expected = _reference_dcgan_steps(config, weights, images, indices, 16, 1, adam)
    for name in expected:
        torch.testing.assert_close(stepped[name], expected[name], rtol=1e-5, atol=1e-6)


def test_several_inner_steps_walk_the_unit_in_index_order(config, weights, images):
    adam = AdamConfig()
    indices = list(range(50, 66))
    generator, discriminator = networks_at(config, weights)
    perm = torch.randperm(16, generator=torch.Generator().manual_seed(3)).tolist()
    result = compute_local_steps(
        generator,
        discriminator,
        images[perm],
        [indices[i] for i in perm],
        batch_size=8,
        inner_steps=2,
        adam=adam,
        seed=SEED,
        iteration=ITERATION,
    )
    expected = _reference_dcgan_steps(config, weights, images, indices, 8, 2, adam)
    for name, delta in result.tensors.items():
        torch.testing.assert_close(weights[name] - delta, expected[name], rtol=1e-5, atol=1e-6)


def test_nesterov_outer_step_follows_torch_sgd() -> None:
    params = {"w": torch.tensor([1.0, -2.0])}
    deltas = [torch.tensor([0.5, 0.25]), torch.tensor([-0.1, 0.3])]
    reference = torch.nn.Parameter(params["w"].clone())
    sgd = torch.optim.SGD([reference], lr=0.7, momentum=0.9, nesterov=True)
    state = initial_optimizer_state(params)
    weights = dict(params)
    for delta in deltas:
        reference.grad = delta.clone()
        sgd.step()
        combined = aggregate([_delta_result(delta)])
        weights, state = apply_deltas(weights, combined, state, OuterConfig())
    torch.testing.assert_close(weights["w"], reference.detach())
    assert state.step == 2 and state.momentum is not None


def _delta_result(delta: torch.Tensor) -> UnitResult:
    return UnitResult(LOCAL_STEPS, 0, 1, {"w": delta}, {}, UnitMetrics(0.0, 0.0, 0.0, 0.0))
