"""How far apart two computations of one unit are: the spot check's verdict.

A run fixes everything a unit's result depends on (weights of its version, images,
noise from the seed, micro-batch), so two honest workers differ only by floating-point
order: about 1e-6 relative for a synchronous gradient between CPU thread counts. A
result that was scaled, sign-flipped, zeroed or made up is at distance 1 or more.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from shared.unit_result import UnitResult


def _relative(a: dict[str, Tensor], b: dict[str, Tensor]) -> float:
    """||a - b|| / max(||a||, ||b||) over all tensors together, in float64."""
    if a.keys() != b.keys():
        return math.inf
    diff = sum(float((a[k].double() - b[k].double()).pow(2).sum()) for k in a)
    size = max(sum(float(t.double().pow(2).sum()) for t in d.values()) for d in (a, b))
    if size == 0:
        return 0.0 if diff == 0 else math.inf
    return math.sqrt(diff / size)


def result_distance(a: UnitResult, b: UnitResult) -> float:
    """The larger relative distance of the two results' tensors and of their buffers
    (a buffer lie, e.g. a made-up running_var, shows even when the gradient is honest)."""
    with torch.no_grad():
        return max(_relative(a.tensors, b.tensors), _relative(a.buffers, b.buffers))
