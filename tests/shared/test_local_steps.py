"""Local steps: a unit is a pass of textbook DCGAN steps; the outer step is torch's SGD."""

from __future__ import annotations

import torch

from shared.aggregation import OuterConfig, aggregate, apply_deltas, initial_optimizer_state
from shared.models import model_state
from shared.strategies import InnerOptimizer, LocalSteps
from shared.strategies.local_steps import LOCAL_STEPS
from shared.unit_result import UnitMetrics, UnitResult, image_noise
from tests.shared.helpers import assert_same_state, networks_at, textbook_dcgan

SEED, VERSION = 9, 2


def _batches(images, indices, batch):
    noise = image_noise(SEED, VERSION, indices, 100)
    return [(images[i : i + batch], noise[i : i + batch]) for i in range(0, len(indices), batch)]


def test_a_unit_with_plain_outer_sgd_at_lr_1_lands_on_the_textbook_loop(
    config, weights, images
) -> None:
    """Two micro-batches of 8, in the unit's own order: the textbook's two steps."""
    order = torch.randperm(16, generator=torch.Generator().manual_seed(3)).tolist()
    indices = [50 + i for i in order]
    strategy = LocalSteps(SEED, 8, config.latent_dim,
                          outer=OuterConfig(lr=1.0, momentum=0.0, nesterov=False))  # fmt: skip
    result = strategy.compute(*networks_at(config, weights), images[order], indices,
                              version=VERSION)  # fmt: skip
    assert result.kind == LOCAL_STEPS and result.num_samples == 16
    assert result.extra == {"inner_steps": "2", "batch_size": "8"}
    fold = strategy.fold(weights, strategy.initial_optimizer({}), [result], version=VERSION)
    expected = textbook_dcgan(config, weights, _batches(images[order], indices, 8))
    for name in expected:  # the weights go W_t - (W_t - W_local): a rounding of W_local
        torch.testing.assert_close(fold.weights[name], expected[name], rtol=1e-6, atol=1e-7)


def test_a_kept_inner_adam_makes_a_workers_units_one_textbook_loop(
    config, weights, images
) -> None:
    """Three units of 8 images, micro-batches of 4, the networks left at W_local between
    them (an outer SGD step of lr 1 without momentum): with ``keep_inner`` that is the
    textbook loop over all six micro-batches with one Adam; without it, or for a new
    worker (a fresh InnerOptimizer), each unit restarts Adam's moments and differs."""
    units = [list(range(start, start + 8)) for start in (0, 8)] + [list(range(8))]
    keep = LocalSteps(SEED, 4, config.latent_dim, keep_inner=True)
    nets, inner = networks_at(config, weights), InnerOptimizer()
    batches = []
    for version, indices in enumerate(units):
        keep.compute(*nets, images[indices], indices, version=version, inner=inner)
        noise = image_noise(SEED, version, indices, config.latent_dim)
        batches += [(images[indices[i : i + 4]], noise[i : i + 4]) for i in (0, 4)]
    assert inner.state is not None
    assert_same_state(model_state(*nets), textbook_dcgan(config, weights, batches))

    fresh = networks_at(config, weights)
    for version, indices in enumerate(units):  # a new InnerOptimizer for every unit
        keep.compute(*fresh, images[indices], indices, version=version, inner=InnerOptimizer())
    per_unit = networks_at(config, weights)
    for version, indices in enumerate(units):  # the per_unit strategy ignores ``inner``
        LocalSteps(SEED, 4, config.latent_dim).compute(
            *per_unit, images[indices], indices, version=version, inner=InnerOptimizer()
        )
    assert_same_state(model_state(*fresh), model_state(*per_unit))
    name = "generator.main.0.weight"
    assert not torch.equal(model_state(*fresh)[name], model_state(*nets)[name])


def test_a_short_last_unit_trains_each_image_once(config, weights, images) -> None:
    strategy = LocalSteps(SEED, 6, config.latent_dim)
    result = strategy.compute(*networks_at(config, weights), images[:10], list(range(10)),
                              version=0)  # fmt: skip
    assert result.num_samples == 10 and result.extra["inner_steps"] == "2"  # 6 + 4


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
