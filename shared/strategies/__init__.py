"""The ways to train, one module each, behind ``shared.strategies.base.Strategy``.

``strategy_for`` is the only place that maps a run's ``result_kind`` to a module.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from shared.aggregation import AdamConfig, OuterConfig
from shared.protocol import RunConfig, RunInfo
from shared.strategies.asynchronous import AsyncLocalSteps
from shared.strategies.base import Fold, InnerOptimizer, Strategy
from shared.strategies.local_steps import LocalSteps
from shared.strategies.synchronous import Synchronous

__all__ = [
    "AsyncLocalSteps", "Fold", "InnerOptimizer", "LocalSteps", "Strategy", "Synchronous",
    "strategy_for",
]  # fmt: skip


def strategy_for(run: RunConfig | RunInfo) -> Strategy:
    """The strategy of a run, from its stored config (coordinator) or the claim's
    ``RunInfo`` (worker: it needs only what a unit computes)."""
    config = run if isinstance(run, RunConfig) else None
    latent_dim = config.latent_dim if config else run.model.latent_dim  # type: ignore[union-attr]
    # How results fold matters to the coordinator only; a worker's strategy keeps the mean.
    robust: dict[str, Any] = (
        {"aggregation": config.aggregation, "trim": config.aggregation_trim} if config else {}
    )
    if run.result_kind == "synchronous":
        adam = AdamConfig(config.lr, config.beta1, config.beta2) if config else AdamConfig()
        return Synchronous(run.seed, run.batch_size, latent_dim, adam=adam, **robust)
    info = config.local_steps_info() if config else run.local_steps  # type: ignore[union-attr]
    inner = AdamConfig(info.inner_lr, info.inner_beta1, info.inner_beta2) if info else AdamConfig()
    outer = OuterConfig()
    if config is not None:  # a local-steps config has every outer option filled in
        assert config.outer_lr is not None and config.outer_momentum is not None
        outer = OuterConfig(config.outer_lr, config.outer_momentum, bool(config.outer_nesterov))
    keep_inner = info is not None and info.inner_optimizer == "per_worker"
    local = LocalSteps(
        run.seed, run.batch_size, latent_dim, inner=inner, outer=outer, keep_inner=keep_inner,
        **robust,
    )  # fmt: skip
    if run.result_kind != "async_local_steps":
        return local
    if config is None:  # a worker computes a unit as in local steps; folding is not its job
        return AsyncLocalSteps(**vars(local))
    assert config.max_staleness is not None and config.staleness_exponent is not None
    delayed = replace(outer, delay=config.outer_momentum_delay or 1)
    return AsyncLocalSteps(
        **{**vars(local), "outer": delayed}, max_staleness=config.max_staleness,
        staleness_exponent=config.staleness_exponent,
    )  # fmt: skip
