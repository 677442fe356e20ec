"""From accepted results to W_t+1: sample-weighted averaging and the optimizer step. Pure.

The strategies in ``shared.strategies`` fold results with these functions, for the
coordinator and ``gan-train-local`` alike.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import get_args

import torch
from torch import Tensor

from shared.codec import OptimizerState
from shared.protocol import Aggregation
from shared.unit_result import UnitMetrics, UnitResult


@dataclass(frozen=True)
class AdamConfig:
    """Adam hyper-parameters; the defaults are DCGAN's (Radford et al. 2015)."""

    lr: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    eps: float = 1e-8


@dataclass
class Aggregate:
    """The sample-weighted mean of several unit results of one kind."""

    kind: str
    num_samples: int
    tensors: dict[str, Tensor]
    buffers: dict[str, Tensor]
    metrics: UnitMetrics
    num_results: int


METHODS: tuple[Aggregation, ...] = get_args(Aggregation)


def trimmed_count(num_results: int, trim: float) -> int:
    """How many values a trimmed mean drops at each end of every coordinate."""
    return min(int(trim * num_results), (num_results - 1) // 2)


def aggregate(
    results: Sequence[UnitResult], method: Aggregation = "mean", trim: float = 0.2
) -> Aggregate:
    """Tensors and buffers of results of one kind combined by ``method``; metrics are
    always the sample-weighted mean (they only describe the fold).

    ``mean`` weighs each result by its images: DDP's all-reduce. The robust methods work
    coordinate by coordinate and count each result once (a unit's images are fixed by
    the run, so only the epoch's last unit can be smaller): ``trimmed_mean`` drops the
    ``trim`` fraction of largest and of smallest values (at least one result survives;
    with fewer than 1/trim results nothing is dropped and it is the mean), ``median``
    keeps the middle (the mean of the two middle values for an even count). One
    poisoned result of five can move no coordinate past the honest range; but a
    sign-flipped result is inside that range, coordinate by coordinate, wherever honest
    results disagree. ``multi_krum`` judges whole results instead (Blanchard et al.,
    NeurIPS 2017): it drops the ``trim`` fraction that lie farthest from their
    neighbours (:func:`krum_selection`) and takes the image-weighted mean of the rest.
    """
    if not results:
        raise ValueError("cannot aggregate zero results")
    kinds = {r.kind for r in results}
    if len(kinds) != 1:
        raise ValueError(f"cannot mix result kinds {sorted(kinds)}")
    if method not in METHODS:
        raise ValueError(f"unknown aggregation {method!r}; one of {', '.join(METHODS)}")
    if method == "multi_krum":
        return aggregate(krum_selection(results, trimmed_count(len(results), trim)))
    total = sum(r.num_samples for r in results)
    weights = [r.num_samples / total for r in results]
    cut = trimmed_count(len(results), trim) if method == "trimmed_mean" else 0

    def robust(values: Tensor) -> Tensor:  # (results, ...) -> (...)
        if method == "median" and len(results) % 2 == 0:
            ordered = values.sort(dim=0).values
            middle = len(results) // 2
            return (ordered[middle - 1] + ordered[middle]) / 2
        if method == "median":
            return values.median(dim=0).values
        return values.sort(dim=0).values[cut : len(results) - cut].mean(dim=0)

    def mean(dicts: Sequence[Mapping[str, Tensor]]) -> dict[str, Tensor]:
        if method == "median" or cut > 0:
            return {key: robust(torch.stack([d[key].float() for d in dicts])) for key in dicts[0]}
        if len(dicts) == 1:
            return {k: v.float().clone() for k, v in dicts[0].items()}
        return {
            key: sum(
                (w * d[key].float() for w, d in zip(weights, dicts, strict=True)),
                torch.zeros_like(dicts[0][key], dtype=torch.float32),
            )
            for key in dicts[0]
        }

    def mean_metric(name: str) -> float | None:
        values = [getattr(r.metrics, name) for r in results]
        if any(v is None for v in values):
            return None
        return sum(w * v for w, v in zip(weights, values, strict=True))

    return Aggregate(
        kind=results[0].kind,
        num_samples=total,
        tensors=mean([r.tensors for r in results]),
        buffers=mean([r.buffers for r in results]),
        metrics=UnitMetrics(*(mean_metric(f) for f in UnitMetrics.__dataclass_fields__)),
        num_results=len(results),
    )


def krum_selection(results: Sequence[UnitResult], faulty: int) -> list[UnitResult]:
    """Multi-Krum: the ``n - faulty`` results whose summed squared distances to their
    ``n - faulty - 2`` nearest others are smallest, in their given order.

    An honest result sits among other honest ones; a scaled or sign-flipped one is far
    from all of them, so its score is the largest and it is the one left out.
    """
    n = len(results)
    if faulty <= 0 or n < 3:
        return list(results)
    names = sorted(results[0].tensors)
    flat = torch.stack(
        [torch.cat([r.tensors[k].float().flatten() for k in names]) for r in results]
    ).double()
    distances = torch.cdist(flat, flat).square()
    neighbours = max(1, n - faulty - 2)
    # Row i's smallest entries after its own zero: its nearest neighbours.
    scores = distances.sort(dim=1).values[:, 1 : 1 + neighbours].sum(dim=1)
    keep = sorted(scores.argsort()[: n - faulty].tolist())
    return [results[i] for i in keep]


def initial_optimizer_state(
    parameters: Mapping[str, Tensor], *, adam: bool = True
) -> OptimizerState:
    """No step taken yet: zero Adam moments, or (``adam=False``, for local-steps runs,
    whose only coordinator-side state is the outer momentum) none at all, which keeps
    their checkpoints at two copies of the model instead of four."""
    if not adam:
        return OptimizerState(step=0, exp_avg={}, exp_avg_sq={})
    return OptimizerState(
        step=0,
        exp_avg={k: torch.zeros_like(v, dtype=torch.float32) for k, v in parameters.items()},
        exp_avg_sq={k: torch.zeros_like(v, dtype=torch.float32) for k, v in parameters.items()},
    )


def adam_step(
    weights: Mapping[str, Tensor],
    gradients: Mapping[str, Tensor],
    state: OptimizerState,
    config: AdamConfig,
    *,
    step: int | None = None,
) -> tuple[dict[str, Tensor], OptimizerState]:
    """One Adam update of the parameters named in ``gradients``; inputs are not modified.

    ``step`` is the 1-based count of this update for bias correction (default: the
    state's count plus one); moments of parameters not in ``gradients`` are kept. The
    arithmetic follows torch.optim.Adam's single-tensor path operation by operation, so
    torch's optimizer and ours agree to the last bit on the CPU.
    """
    step = state.step + 1 if step is None else step
    bias1 = 1 - config.beta1**step
    bias2_sqrt = (1 - config.beta2**step) ** 0.5
    new_weights = dict(weights)
    exp_avg = dict(state.exp_avg)
    exp_avg_sq = dict(state.exp_avg_sq)
    for name, grad in gradients.items():
        m = state.exp_avg[name].lerp(grad, 1 - config.beta1)
        v = state.exp_avg_sq[name].mul(config.beta2).addcmul_(grad, grad, value=1 - config.beta2)
        denom = (v.sqrt() / bias2_sqrt).add_(config.eps)
        new_weights[name] = weights[name].addcdiv(m, denom, value=-config.lr / bias1)
        exp_avg[name], exp_avg_sq[name] = m, v
    return new_weights, OptimizerState(step, exp_avg, exp_avg_sq, state.momentum)


@dataclass(frozen=True)
class OuterConfig:
    """The coordinator's optimizer over averaged weight changes (DiLoCo: Nesterov SGD)."""

    lr: float = 0.7
    momentum: float = 0.9
    nesterov: bool = True
    delay: int = 1  # Delayed Nesterov's N: folds per momentum update (1: every fold)


def apply_deltas(
    weights: Mapping[str, Tensor],
    combined: Aggregate,
    state: OptimizerState,
    config: OuterConfig,
) -> tuple[dict[str, Tensor], OptimizerState]:
    """W_t+1 from averaged W_t - W_local changes, used as an outer gradient.

    Follows torch.optim.SGD (dampening 0): with momentum 0 and lr 1 it lands exactly on
    the workers' mean local weights. With ``config.delay`` above 1, Delayed Nesterov.
    """
    if config.delay > 1:
        return _delayed_nesterov(weights, combined, state, config)
    momentum = dict(state.momentum or {})
    new_weights = dict(weights)
    for name, delta in combined.tensors.items():
        update = delta
        if config.momentum:
            buf = momentum.get(name)
            buf = delta.clone() if buf is None else buf.mul(config.momentum).add_(delta)
            momentum[name] = buf
            update = delta.add(buf, alpha=config.momentum) if config.nesterov else buf
        new_weights[name] = weights[name].sub(update, alpha=config.lr)
    new_weights.update(combined.buffers)
    new_state = OptimizerState(
        state.step + 1, state.exp_avg, state.exp_avg_sq, momentum if config.momentum else None
    )
    return new_weights, new_state


def _delayed_nesterov(
    weights: Mapping[str, Tensor],
    combined: Aggregate,
    state: OptimizerState,
    config: OuterConfig,
) -> tuple[dict[str, Tensor], OptimizerState]:
    """Delayed Nesterov (Liu et al. 2024, arXiv 2401.09135; utnslab/halos with c = 0).

    Every fold applies its own change at once, at lr / N; every N-th fold the momentum
    takes in the mean of the last N changes and is applied too. Over N folds the weights
    move as one Nesterov step on the mean of N changes moves them, yet each change lands
    as it arrives, so the next claims train from it. Nesterov at every fold would instead
    carry each asynchronous change, computed from weights several folds old, into the
    next ~1 / (1 - momentum) folds at full size. ``state.step`` counts the folds and
    ``state.pending`` sums the changes since the last momentum update.
    """
    n = config.delay
    updating = (state.step + 1) % n == 0
    momentum = dict(state.momentum or {})
    pending = dict(state.pending or {})
    new_weights = dict(weights)
    for name, delta in combined.tensors.items():
        total = pending[name].add(delta) if name in pending else delta.clone()
        moved = weights[name].sub(delta, alpha=config.lr / n)
        if updating:
            mean = total.div_(n)
            buf = momentum[name].mul(config.momentum).add_(mean) if name in momentum else mean
            momentum[name] = buf
            moved.sub_(buf, alpha=config.lr * config.momentum)
        else:
            pending[name] = total
        new_weights[name] = moved
    new_weights.update(combined.buffers)
    new_state = OptimizerState(
        state.step + 1, state.exp_avg, state.exp_avg_sq, momentum or None,
        None if updating else pending,
    )  # fmt: skip
    return new_weights, new_state
