"""The one interface every way of training implements (Flower's ``Strategy``, for GANs).

The coordinator, the worker and ``gan-train-local`` hold a :class:`Strategy` and never
ask which mode it is. A run's state advances in *versions*: every fold publishes one.
A mode says, per version, what a unit computes (:meth:`Strategy.compute`), what a valid
result holds (:meth:`Strategy.layout`), where the version's units come from (the
epoch's pool of images, or the previous version's units again) and how results fold
into the state (:meth:`Strategy.fold`). Everything here is pure compute.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from torch import Tensor, nn

from shared.codec import OptimizerState, ResultLayout
from shared.models import StateSpec
from shared.unit_result import UnitMetrics, UnitResult

ProgressCallback = Callable[[int], None]


@dataclass
class Fold:
    """What folding a version's results produced: the next state and its metrics."""

    weights: dict[str, Tensor]
    optimizer: OptimizerState
    metrics: UnitMetrics
    num_samples: int


@dataclass
class InnerOptimizer:
    """A worker's inner Adam state between its units (local steps), kept in memory by
    the worker for as long as it lives: DiLoCo keeps each worker's inner optimizer
    across rounds instead of restarting its moments at every unit. ``state`` is None
    until the first unit; a new or restarted worker starts from None (fresh moments).
    A unit's result then depends on the worker's earlier units, not only on the unit."""

    state: dict[str, Any] | None = None


class Strategy(Protocol):
    """A way to train: what workers compute for a unit and how results fold in."""

    @property
    def kind(self) -> str:
        """The run's ``result_kind``."""
        ...

    @property
    def versions_per_iteration(self) -> int:
        """Folds per textbook iteration (2 for D then G phases)."""
        ...

    def training_iteration(self, version: int) -> int:
        """The textbook iteration a version belongs to (it keys the latent noise)."""
        ...

    def repeats_units(self, version: int) -> bool:
        """True if this version's units are the previous version's units again (their
        images already counted for the epoch) rather than new images from the pool."""
        ...

    def needs_images(self, version: int) -> bool:
        """Whether a unit of this version reads real images."""
        ...

    def changed_networks(self, version: int) -> tuple[str, ...]:
        """Networks whose parameters the fold into ``version`` changed (BatchNorm
        buffers may change in any fold): a worker holding ``version - 1`` needs only
        these and the buffers."""
        ...

    def layout(self, version: int, spec: StateSpec) -> ResultLayout:
        """Kind, tensor names and shapes of a valid result for a unit of ``version``."""
        ...

    def expected_samples(self, num_images: int) -> int:
        """The result's ``num_samples`` for a unit of this many images (its fold weight)."""
        ...

    def compute(
        self,
        generator: nn.Module,
        discriminator: nn.Module,
        images: Tensor | None,
        indices: Sequence[int],
        *,
        version: int,
        on_micro_batch: ProgressCallback | None = None,
        inner: InnerOptimizer | None = None,
    ) -> UnitResult:
        """A unit's result at the networks' weights (uint8 ``images`` when needed);
        ``inner`` is the worker's optimizer state, used and advanced by the strategies
        that keep one (local steps with ``inner_optimizer: per_worker``)."""
        ...

    def initial_optimizer(self, parameters: dict[str, Tensor]) -> OptimizerState:
        """The coordinator-side optimizer state before the first fold."""
        ...

    def fold(
        self,
        weights: dict[str, Tensor],
        optimizer: OptimizerState,
        results: Sequence[UnitResult],
        *,
        version: int,
    ) -> Fold:
        """The state of ``version + 1`` from ``version``'s results, in the order given."""
        ...


def check_unit(images: Tensor | None, indices: Sequence[int], *, needs_images: bool) -> None:
    """A unit's inputs are consistent (one image per index, at least one)."""
    if len(indices) == 0:
        raise ValueError("a unit needs at least one image index")
    if needs_images and (images is None or images.shape[0] != len(indices)):
        raise ValueError("need one image per index")
