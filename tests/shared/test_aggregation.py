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


def _random_results(count: int, seed: int = 0) -> list[UnitResult]:
    rng = torch.Generator().manual_seed(seed)
    return [
        UnitResult(
            kind="d_phase", iteration=0, num_samples=64,
            tensors={"w": torch.randn(7, 3, generator=rng), "v": torch.randn(5, generator=rng)},
            buffers={"b": torch.rand(4, generator=rng) + 0.5},
            metrics=UnitMetrics(1.0, 1.0, 0.5, 0.5),
        )  # fmt: skip
        for _ in range(count)
    ]


def test_trimmed_mean_and_median_equal_a_plain_reference() -> None:
    """Coordinate by coordinate: sort the five values, drop one at each end, average."""
    results = _random_results(5)
    for key in ("w", "v"):
        stacked = torch.stack([r.tensors[key] for r in results])
        trimmed = stacked.sort(dim=0).values[1:4].mean(dim=0)
        torch.testing.assert_close(aggregate(results, "trimmed_mean", 0.2).tensors[key], trimmed)
        median = stacked.sort(dim=0).values[2]
        torch.testing.assert_close(aggregate(results, "median").tensors[key], median)
    four = results[:4]
    ordered = torch.stack([r.tensors["w"] for r in four]).sort(dim=0).values
    middle = (ordered[1] + ordered[2]) / 2
    torch.testing.assert_close(aggregate(four, "median").tensors["w"], middle)
    # Too few results to drop any: the trimmed mean is the mean.
    torch.testing.assert_close(
        aggregate(results[:2], "trimmed_mean").tensors["w"], aggregate(results[:2]).tensors["w"]
    )


def test_multi_krum_leaves_out_the_scaled_and_the_flipped_result() -> None:
    for poison in (1000.0, -1.0):
        results = _random_results(5, seed=1)
        common = torch.randn(7, 3, generator=torch.Generator().manual_seed(9)) * 3
        for r in results:  # honest results share a direction, as gradients of one W_t do
            r.tensors["w"] += common
        results[2].tensors = {k: v * poison for k, v in results[2].tensors.items()}
        honest = [r for i, r in enumerate(results) if i != 2]
        combined = aggregate(results, "multi_krum", 0.2)
        expected = aggregate(honest)
        assert combined.num_results == 4
        torch.testing.assert_close(combined.tensors["w"], expected.tensors["w"])
        torch.testing.assert_close(combined.buffers["b"], expected.buffers["b"])
