"""Aggregation is image-weighted; our Adam is torch.optim.Adam to the last bit."""

from __future__ import annotations

import torch

from shared.aggregation import AdamConfig, adam_step, aggregate, initial_optimizer_state
from shared.unit_result import UnitMetrics, UnitResult


def test_adam_step_equals_torch_adam_over_several_steps() -> None:
    rng = torch.Generator().manual_seed(0)
    weights = {"a": torch.randn(5, 3, generator=rng), "b": torch.randn(7, generator=rng)}
    grads = [{k: torch.randn(v.shape, generator=rng) for k, v in weights.items()}
             for _ in range(4)]  # fmt: skip
    params = {k: torch.nn.Parameter(v.clone()) for k, v in weights.items()}
    torch_adam = torch.optim.Adam(params.values(), lr=2e-4, betas=(0.5, 0.999))
    state = initial_optimizer_state(weights)
    for g in grads:
        for k, p in params.items():
            p.grad = g[k].clone()
        torch_adam.step()
        weights, state = adam_step(weights, g, state, AdamConfig())
    for k, p in params.items():
        assert torch.equal(weights[k], p.detach()), k
    assert state.step == 4


def test_an_explicit_step_count_keeps_the_other_networks_moments() -> None:
    weights = {"g": torch.ones(2), "d": torch.ones(2)}
    state = initial_optimizer_state(weights)
    new, after = adam_step(weights, {"d": torch.ones(2)}, state, AdamConfig(), step=1)
    assert torch.equal(new["g"], weights["g"]) and torch.equal(after.exp_avg["g"], torch.zeros(2))
    assert not torch.equal(new["d"], weights["d"]) and after.step == 1


def _result(num_samples: int, value: float, g_loss: float) -> UnitResult:
    return UnitResult(
        kind="d_phase",
        iteration=0,
        num_samples=num_samples,
        tensors={"w": torch.full((2,), value)},
        buffers={"b": torch.full((1,), value * 10)},
        metrics=UnitMetrics(g_loss, 1.0, 0.5, 0.5),
    )


def test_aggregation_is_sample_weighted() -> None:
    combined = aggregate([_result(100, 1.0, 2.0), _result(300, 3.0, 4.0)])
    assert combined.num_samples == 400 and combined.num_results == 2
    torch.testing.assert_close(combined.tensors["w"], torch.full((2,), 2.5))
    torch.testing.assert_close(combined.buffers["b"], torch.full((1,), 25.0))
    assert abs(combined.metrics.g_loss - 3.5) < 1e-12


def test_aggregation_refuses_mixed_kinds_and_empty_input() -> None:
    other = _result(1, 1.0, 1.0)
    other.kind = "local_steps"
    for bad in ([], [_result(1, 1.0, 1.0), other]):
        try:
            aggregate(bad)
        except ValueError:
            continue
        raise AssertionError(f"aggregate({bad!r}) should have raised")
