"""Asynchronous local steps: results weighted by staleness, then local steps' outer step."""

from __future__ import annotations

import pytest
import torch

from shared.aggregation import OuterConfig
from shared.codec import decode_snapshot, encode_snapshot
from shared.models import StateSpec
from shared.protocol import RunConfig
from shared.strategies import AsyncLocalSteps, LocalSteps, strategy_for
from shared.strategies.asynchronous import staleness_weight
from shared.unit_result import UnitMetrics, UnitResult

NAMES = {"generator.w": (3, 4), "discriminator.w": (5,)}


def _result(version: int, images: int, seed: int) -> UnitResult:
    rng = torch.Generator().manual_seed(seed)
    return UnitResult(
        kind="local_steps", iteration=version, num_samples=images,
        tensors={k: torch.randn(s, generator=rng) for k, s in NAMES.items()},
        buffers={"generator.bn.running_var": torch.rand(4, generator=rng) + 0.5},
        metrics=UnitMetrics(1.0, 1.0, 0.5, 0.5),
    )  # fmt: skip


def _weights() -> dict[str, torch.Tensor]:
    rng = torch.Generator().manual_seed(99)
    return {k: torch.randn(s, generator=rng) for k, s in NAMES.items()}


def test_fresh_results_fold_exactly_as_local_steps() -> None:
    """Every result of the version folded into: weight 1.0, local steps' fold bit for bit
    (one worker with K = 1 takes local-steps mode's steps)."""
    weights, results = _weights(), [_result(4, 64, 1), _result(4, 32, 2)]
    local = LocalSteps(0, 64, 100)
    asynchronous = AsyncLocalSteps(0, 64, 100)
    state = local.initial_optimizer({})
    expected = local.fold(weights, state, results, version=4)
    got = asynchronous.fold(weights, state, results, version=4)
    for name in expected.weights:
        assert torch.equal(got.weights[name], expected.weights[name]), name
    for name in expected.optimizer.momentum or {}:
        assert got.optimizer.momentum is not None
        assert torch.equal(got.optimizer.momentum[name], expected.optimizer.momentum[name])


def test_stale_results_count_less_as_torch_sgd_takes_them() -> None:
    """Two folds with torch.optim.SGD (Nesterov) written out: the outer gradient is the
    image-weighted mean of each change times (staleness + 1) ** -0.5."""
    weights = _weights()
    outer = OuterConfig(lr=0.7, momentum=0.9, nesterov=True)
    strategy = AsyncLocalSteps(0, 64, 100, outer=outer, staleness_exponent=0.5)
    folds = [(5, [_result(5, 64, 1), _result(3, 64, 2)]), (6, [_result(2, 32, 3)])]

    params = {k: v.clone().requires_grad_(False) for k, v in weights.items()}
    sgd = torch.optim.SGD(list(params.values()), lr=0.7, momentum=0.9, nesterov=True)
    state = strategy.initial_optimizer({})
    for version, results in folds:
        total = sum(r.num_samples for r in results)
        for name, param in params.items():
            param.grad = sum(
                (r.num_samples / total) * ((version - r.iteration + 1) ** -0.5) * r.tensors[name]
                for r in results
            )
        sgd.step()
        fold = strategy.fold(weights, state, results, version=version)
        weights, state = fold.weights, fold.optimizer
    for name, param in params.items():
        torch.testing.assert_close(weights[name], param, rtol=1e-6, atol=1e-7)
    assert torch.equal(weights["generator.bn.running_var"], folds[-1][1][0].buffers[
        "generator.bn.running_var"])  # fmt: skip


def test_delayed_nesterov_equals_the_reference_written_out() -> None:
    """Delayed Nesterov (Liu et al. 2024) as utnslab/halos writes it, c = 0, over seven
    folds with N = 3, stale results among them, and the state taken through a checkpoint
    between folds (the pending sum is part of it)."""
    lr, beta, n = 0.7, 0.9, 3
    strategy = AsyncLocalSteps(
        0, 64, 100, outer=OuterConfig(lr, beta, True, delay=n), staleness_exponent=0.5
    )
    folds = [(v, [_result(v - (v % 3), 64, v), _result(v, 32, 50 + v)]) for v in range(7)]
    weights = _weights()

    params = {k: v.clone() for k, v in weights.items()}
    m = {k: torch.zeros_like(v) for k, v in params.items()}
    delta = {k: torch.zeros_like(v) for k, v in params.items()}
    for t, (version, results) in enumerate(folds):
        total = sum(r.num_samples for r in results)
        for name, p in params.items():
            g = sum(
                (r.num_samples / total) * ((version - r.iteration + 1) ** -0.5) * r.tensors[name]
                for r in results
            )
            delta[name] += g
            if (t + 1) % n == 0:
                m[name] = beta * m[name] + delta[name] / n
                p -= lr * beta * m[name]
                delta[name].zero_()
            p -= lr / n * g

    spec = StateSpec(parameters={k: tuple(v.shape) for k, v in weights.items()}, buffers={
        "generator.bn.running_var": (4,)})  # fmt: skip
    state = strategy.initial_optimizer({})
    for version, results in folds:
        fold = strategy.fold(weights, state, results, version=version)
        weights, state = fold.weights, fold.optimizer
        assert (state.pending is None) == (version % n == n - 1)
        restored = decode_snapshot(encode_snapshot(version + 1, weights, state), spec)
        assert restored.optimizer is not None
        weights, state = restored.weights, restored.optimizer
    for name, p in params.items():
        torch.testing.assert_close(weights[name], p, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="needs outer_nesterov"):
        RunConfig(result_kind="async_local_steps", outer_momentum_delay=4, outer_nesterov=False)
    delayed = strategy_for(RunConfig(result_kind="async_local_steps", outer_momentum_delay=4))
    assert isinstance(delayed, AsyncLocalSteps) and delayed.outer.delay == 4


def test_staleness_weight() -> None:
    assert staleness_weight(0, 0.5) == 1.0
    assert staleness_weight(3, 0.5) == 0.5
    assert staleness_weight(3, 0.0) == 1.0
    with pytest.raises(ValueError, match="later version"):
        staleness_weight(-1, 0.5)


def test_a_run_config_picks_the_asynchronous_strategy_with_its_bound() -> None:
    config = RunConfig(result_kind="async_local_steps", max_staleness=5, staleness_exponent=1.0)
    strategy = strategy_for(config)
    assert isinstance(strategy, AsyncLocalSteps)
    assert (strategy.max_staleness, strategy.staleness_exponent) == (5, 1.0)
    assert config.staleness_bound() == 5 and RunConfig().staleness_bound() == 0
    assert RunConfig(result_kind="async_local_steps").max_staleness == 64
    with pytest.raises(ValueError, match="only apply to runs with result_kind 'async_local"):
        RunConfig(result_kind="local_steps", max_staleness=3)
