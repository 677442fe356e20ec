"""Asynchronous local steps: no barrier, results fold in as they arrive.

A unit is computed exactly as in local-steps mode (H textbook steps from the weights of
the version it was leased at; the result is W_v - W_local). The coordinator does not
wait for a step's worth of units: every ``units_per_step`` accepted results (a buffer of
K, FedBuff's) fold into the newest state at once and publish the next version, and a
claim always hands out a unit against the newest weights. A result computed at version
v and folded into version t is ``s = t - v`` versions stale; its change counts
``(s + 1) ** -a`` of a fresh one (FedAsync's polynomial weight, a =
``staleness_exponent``): it was taken from weights the class has since moved away from.
The weighted changes are then averaged by images and applied with the outer Nesterov
SGD of local steps, so with one worker and K = 1 (every result fresh, weight 1.0 exactly)
this mode takes exactly local-steps mode's steps. A result more than ``max_staleness``
versions old is refused by the coordinator before it gets here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from torch import Tensor

from shared.codec import OptimizerState
from shared.strategies.base import Fold
from shared.strategies.local_steps import LocalSteps
from shared.unit_result import UnitResult


def staleness_weight(staleness: int, exponent: float) -> float:
    """What a result ``staleness`` versions old counts in its fold: 1 when fresh."""
    if staleness < 0:
        raise ValueError(f"a result cannot come from a later version ({staleness})")
    return float((staleness + 1) ** -exponent)


@dataclass(frozen=True)
class AsyncLocalSteps(LocalSteps):
    """Local steps without a barrier; stale results weighted down."""

    staleness_exponent: float = 0.5
    max_staleness: int = 64

    def fold(
        self,
        weights: dict[str, Tensor],
        optimizer: OptimizerState,
        results: Sequence[UnitResult],
        *,
        version: int,
    ) -> Fold:
        """Each result's change times its staleness weight, then local steps' fold."""
        weighted = []
        for result in results:
            factor = staleness_weight(version - result.iteration, self.staleness_exponent)
            if factor != 1.0:
                tensors = {k: v * factor for k, v in result.tensors.items()}
                result = replace(result, tensors=tensors)
            weighted.append(result)
        return super().fold(weights, optimizer, weighted, version=version)
