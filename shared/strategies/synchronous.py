"""Synchronous mode: DDP's semantics, one textbook DCGAN iteration in two versions.

Version 2t is the D phase at (G_t, D_t): units of new images report D's per-image-mean
gradient; the fold averages them and Adam-steps D alone, publishing (G_t, D_t+1).
Version 2t+1 is the G phase on the same units (same images' noise, no real images):
G's gradient against D_t+1; the fold Adam-steps G, publishing (G_t+1, D_t+1). One
worker with one unit of B images per phase takes exactly pytorch/examples' steps at
batch B; N units of B/N take the steps of torchrun DDP with N ranks.

Adam keeps one set of moments per parameter and counts steps per network: both nets
take their (t+1)-th step in iteration t, so ``OptimizerState.step`` counts finished
iterations and advances in the G fold.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from torch import Tensor, nn

from shared.aggregation import (
    AdamConfig,
    adam_step,
    aggregate,
    initial_optimizer_state,
)
from shared.codec import OptimizerState, ResultLayout
from shared.gan_step import PhaseOutput, discriminator_phase, generator_phase, to_model_input
from shared.models import DISCRIMINATOR, GENERATOR, StateSpec
from shared.protocol import Aggregation
from shared.strategies.base import Fold, InnerOptimizer, ProgressCallback, check_unit
from shared.unit_result import UnitMetrics, UnitResult, image_noise

D_PHASE = "d_phase"
G_PHASE = "g_phase"


def _network(names: dict[str, tuple[int, ...]], prefix: str) -> dict[str, tuple[int, ...]]:
    return {k: v for k, v in names.items() if k.startswith(prefix + ".")}


@dataclass(frozen=True)
class Synchronous:
    """The D phase, then the G phase against the new D; averaged like DDP's all-reduce."""

    seed: int
    batch_size: int
    latent_dim: int
    adam: AdamConfig = AdamConfig()
    aggregation: Aggregation = "mean"  # "mean" is DDP's all-reduce; the others resist outliers
    trim: float = 0.2
    kind: str = "synchronous"
    versions_per_iteration: int = 2

    def training_iteration(self, version: int) -> int:
        """Both phases of iteration t share its noise."""
        return version // 2

    def is_d_phase(self, version: int) -> bool:
        """Even versions step D, odd ones G."""
        return version % 2 == 0

    def repeats_units(self, version: int) -> bool:
        """The G phase reuses the D phase's units: the same images' noise."""
        return not self.is_d_phase(version)

    def needs_images(self, version: int) -> bool:
        """Only the D phase looks at real images."""
        return self.is_d_phase(version)

    def changed_networks(self, version: int) -> tuple[str, ...]:
        """Into a D phase the G fold changed G; into a G phase the D fold changed D."""
        return (GENERATOR,) if self.is_d_phase(version) else (DISCRIMINATOR,)

    def layout(self, version: int, spec: StateSpec) -> ResultLayout:
        """D phase: D's gradients and buffers; G phase: G's gradients, every buffer."""
        if self.is_d_phase(version):
            return ResultLayout(
                D_PHASE, _network(spec.parameters, DISCRIMINATOR),
                _network(spec.buffers, DISCRIMINATOR),
            )  # fmt: skip
        return ResultLayout(G_PHASE, _network(spec.parameters, GENERATOR), dict(spec.buffers))

    def expected_samples(self, num_images: int) -> int:
        """Every image of the unit once."""
        return num_images

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
        """The phase's gradient over the unit, micro-batches of the run's size, in order
        (no optimizer on the worker: ``inner`` is not used)."""
        d_phase = self.is_d_phase(version)
        check_unit(images, indices, needs_images=d_phase)
        device = next(generator.parameters()).device
        iteration = self.training_iteration(version)
        noise = image_noise(self.seed, iteration, indices, self.latent_dim).to(device)
        out: PhaseOutput
        if d_phase:
            assert images is not None
            real = to_model_input(images).to(device)
            out = discriminator_phase(
                generator, discriminator, real, noise,
                batch_size=self.batch_size, on_micro_batch=on_micro_batch,
            )  # fmt: skip
        else:
            out = generator_phase(
                generator, discriminator, noise,
                batch_size=self.batch_size, on_micro_batch=on_micro_batch,
            )  # fmt: skip
        m = out.metrics
        return UnitResult(
            kind=D_PHASE if d_phase else G_PHASE,
            iteration=version,
            num_samples=out.num_images,
            tensors=out.gradients,
            buffers=out.buffers,
            metrics=UnitMetrics(m.g_loss, m.d_loss, m.d_real_accuracy, m.d_fake_accuracy),
            extra={"batch_size": str(self.batch_size)},
        )

    def initial_optimizer(self, parameters: dict[str, Tensor]) -> OptimizerState:
        """Zero Adam moments for both networks."""
        return initial_optimizer_state(parameters)

    def fold(
        self,
        weights: dict[str, Tensor],
        optimizer: OptimizerState,
        results: Sequence[UnitResult],
        *,
        version: int,
    ) -> Fold:
        """Average the phase's gradients (image-weighted, or robustly: ``aggregation``)
        and Adam-step that network."""
        combined = aggregate(results, self.aggregation, self.trim)
        step = self.training_iteration(version) + 1
        new_weights, moments = adam_step(weights, combined.tensors, optimizer, self.adam, step=step)
        new_weights.update(combined.buffers)
        done = step if not self.is_d_phase(version) else optimizer.step
        state = OptimizerState(done, moments.exp_avg, moments.exp_avg_sq, optimizer.momentum)
        return Fold(new_weights, state, combined.metrics, combined.num_samples)
