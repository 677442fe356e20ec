"""Bounds on what one worker can send, and on what the aggregator may ever publish.

A result is **refused, not clipped**, when it is out of bounds. A clipped result still
pushes in the sender's direction with the most weight the bound allows, and honest
results are nowhere near the bounds (below), so clipping would only ever soften an
attack or a broken GPU. A refused unit loses nothing: its lease runs out and its images
go back to the pool for another worker.

The bounds, checked in this order:

* every value's magnitude is at most ``max_abs`` (default 1e4). The codec already
  refuses NaN and Inf; this stops a *finite* 1e30, whose square overflows Adam's second
  moment to Inf and freezes that weight for good.
* the global L2 norm, and each tensor's, is at most ``norm_ratio`` (default 100) times
  the median of the same norm over the run's last ``HISTORY`` accepted results of the
  same kind (D phase, G phase or local steps), once ``MIN_HISTORY`` of them exist.
  Measured on the class model (64 feature maps, units of 64 images, 40 synchronous
  iterations from W_0): an honest D-phase result reached at most 7.3 times the running
  median globally and 9.6 times for one tensor; G-phase results 1.2 and 1.5 times. So
  100 leaves an honest class a factor of 10 of headroom, and a result scaled by 1,000
  is still 10 times past it.
* BatchNorm buffers are statistics: running variances in (0, ``MAX_RUNNING_VAR``],
  running means within ``MAX_RUNNING_MEAN``. A negative variance makes every later
  sample grid black; these limits are orders of magnitude past any activation of a
  DCGAN whose inputs are in [-1, 1].

``state_problem`` is the aggregator's last guard: a fold that would publish a
non-finite value or an invalid buffer is not committed.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from shared.unit_result import UnitResult

HISTORY = 32  # accepted results whose norms make the running median
MIN_HISTORY = 8  # before this many, only the magnitude bound applies
MAX_RUNNING_MEAN = 1e6
MAX_RUNNING_VAR = 1e8


def result_norms(result: UnitResult) -> list[float]:
    """The global L2 norm, then each tensor's in name order: what is stored per result."""
    tensors = result.tensors
    per_tensor = [float(torch.linalg.vector_norm(tensors[k])) for k in sorted(tensors)]
    return [math.sqrt(sum(n * n for n in per_tensor)), *per_tensor]


def result_problem(
    result: UnitResult,
    norms: Sequence[float],
    recent: Sequence[Sequence[float]],
    *,
    max_abs: float,
    norm_ratio: float,
) -> str | None:
    """Why this result is out of bounds (None if it is not); ``recent`` holds the norms
    of the run's latest accepted results of its kind, newest first."""
    for name in sorted(result.tensors):
        largest = float(result.tensors[name].abs().max())
        if largest > max_abs:
            return f"tensor {name!r} holds a value of magnitude {largest:.3g}; at most {max_abs:g}"
    problem = buffer_problem(result.buffers)
    if problem is not None:
        return problem
    usable = [r for r in recent[:HISTORY] if len(r) == len(norms)]
    if len(usable) < MIN_HISTORY:
        return None
    labels = ["the global norm", *(f"tensor {k!r}'s norm" for k in sorted(result.tensors))]
    for i, label in enumerate(labels):
        median = statistics.median(r[i] for r in usable)
        if median > 0 and norms[i] > norm_ratio * median:
            return (
                f"{label} is {norms[i]:.3g}, {norms[i] / median:.0f} times the median of the "
                f"run's last {len(usable)} accepted results (at most {norm_ratio:g} times)"
            )
    return None


def buffer_problem(buffers: Mapping[str, Tensor]) -> str | None:
    """Why BatchNorm statistics are invalid (None if they are valid)."""
    for name, value in buffers.items():
        if not bool(torch.isfinite(value).all()):
            return f"buffer {name!r} holds NaN or Inf values"
        if name.endswith("running_var"):
            if not bool((value > 0).all()) or float(value.max()) > MAX_RUNNING_VAR:
                return f"buffer {name!r} must be in (0, {MAX_RUNNING_VAR:g}]"
        elif name.endswith("running_mean") and float(value.abs().max()) > MAX_RUNNING_MEAN:
            return f"buffer {name!r} must be within {MAX_RUNNING_MEAN:g} of 0"
    return None


def state_problem(tensors: Mapping[str, Tensor]) -> str | None:
    """Why a state about to be published is unsafe: a non-finite value (weights or
    optimizer state) or an invalid BatchNorm statistic."""
    for name, value in tensors.items():
        # A finite sum has no NaN or Inf among its terms; only a sum that is not (or
        # that overflowed) needs the element-wise test, which took 4x as long.
        if value.is_floating_point() and not bool(torch.isfinite(value.sum())):
            if not bool(torch.isfinite(value).all()):
                return f"{name!r} would hold NaN or Inf values"
    return buffer_problem(
        {k: v for k, v in tensors.items() if k.endswith(("running_mean", "running_var"))}
    )
