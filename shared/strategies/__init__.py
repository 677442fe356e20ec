"""The ways to train, one module each, behind ``shared.strategies.base.Strategy``.

``strategy_for`` is the only place that maps a run's ``result_kind`` to a module.
"""

from __future__ import annotations

from shared.aggregation import AdamConfig, OuterConfig
from shared.protocol import RunConfig, RunInfo
from shared.strategies.base import Fold, Strategy
from shared.strategies.local_steps import LocalSteps
from shared.strategies.synchronous import Synchronous

__all__ = ["Fold", "LocalSteps", "Strategy", "Synchronous", "strategy_for"]


def strategy_for(run: RunConfig | RunInfo) -> Strategy:
    """The strategy of a run, from its stored config (coordinator) or the claim's
    ``RunInfo`` (worker: it needs only what a unit computes)."""
    latent_dim = run.latent_dim if isinstance(run, RunConfig) else run.model.latent_dim
    if run.result_kind == "synchronous":
        adam = AdamConfig(run.lr, run.beta1, run.beta2) if isinstance(run, RunConfig) else AdamConfig()
        return Synchronous(seed=run.seed, batch_size=run.batch_size, latent_dim=latent_dim, adam=adam)
    if isinstance(run, RunConfig):
        inner = AdamConfig(run.inner_lr or 2e-4, run.inner_beta1 or 0.0, run.inner_beta2 or 0.0)
        outer = OuterConfig(
            lr=run.outer_lr or OuterConfig.lr,
            momentum=run.outer_momentum if run.outer_momentum is not None else OuterConfig.momentum,
            nesterov=run.outer_nesterov if run.outer_nesterov is not None else OuterConfig.nesterov,
        )
        return LocalSteps(run.seed, run.batch_size, latent_dim, inner=inner, outer=outer)
    info = run.local_steps
    inner = AdamConfig(info.inner_lr, info.inner_beta1, info.inner_beta2) if info else AdamConfig()
    return LocalSteps(run.seed, run.batch_size, latent_dim, inner=inner)
