"""Local-steps mode (DiLoCo): each unit is a pass of textbook DCGAN steps from W_t.

A unit of n images is cut into micro-batches of the run's size and each is trained
once, D then G against the updated D (``shared.gan_step``, the same functions as the
synchronous phases) with an inner Adam; the result is W_t - W_local plus the BatchNorm
statistics. The fold averages the changes (weighted by the unit's image count, which
the coordinator knows, never by what a worker declares) and applies an outer Nesterov
SGD step. A short last unit of an epoch takes fewer inner steps instead of training
its images twice. The inner Adam starts fresh at every unit (measured in
docs/local-steps.md).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from shared.aggregation import AdamConfig, OuterConfig, aggregate, apply_deltas
from shared.codec import OptimizerState, ResultLayout
from shared.gan_step import discriminator_phase, generator_phase, micro_batches, to_model_input
from shared.models import StateSpec, buffer_state, named_parameters
from shared.protocol import Aggregation
from shared.strategies.base import Fold, InnerOptimizer, ProgressCallback, check_unit
from shared.unit_result import UnitMetrics, UnitResult, image_noise

LOCAL_STEPS = "local_steps"


@dataclass(frozen=True)
class LocalSteps:
    """H textbook steps per unit on the worker; an outer optimizer on the coordinator."""

    seed: int
    batch_size: int
    latent_dim: int
    inner: AdamConfig = AdamConfig()
    outer: OuterConfig = OuterConfig()
    aggregation: Aggregation = "mean"  # of the weight changes; the others resist outliers
    trim: float = 0.2
    keep_inner: bool = False  # inner Adam per worker (True) or fresh for every unit
    kind: str = LOCAL_STEPS
    versions_per_iteration: int = 1

    def training_iteration(self, version: int) -> int:
        """Every version is one outer step."""
        return version

    def repeats_units(self, version: int) -> bool:
        """Every unit brings new images."""
        return False

    def needs_images(self, version: int) -> bool:
        """Always: every inner step is a whole textbook step."""
        return True

    def changed_networks(self, version: int) -> tuple[str, ...]:
        """The outer step moves both networks."""
        return ("generator", "discriminator")

    def layout(self, version: int, spec: StateSpec) -> ResultLayout:
        """Every parameter's change and every buffer."""
        return ResultLayout(LOCAL_STEPS, dict(spec.parameters), dict(spec.buffers))

    def inner_steps(self, num_images: int) -> int:
        """H for a unit: one step per micro-batch, each image once."""
        return math.ceil(num_images / self.batch_size)

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
        """Train the unit's micro-batches once each and return W_t - W_local.

        The networks are left at W_local; reload W_t before computing another unit.
        With ``keep_inner`` the inner Adam starts from ``inner.state`` (fresh when None)
        and leaves its state there for the worker's next unit.
        """
        check_unit(images, indices, needs_images=True)
        assert images is not None
        device = next(generator.parameters()).device
        start = {
            k: p.detach().clone() for k, p in named_parameters(generator, discriminator).items()
        }
        betas = (self.inner.beta1, self.inner.beta2)
        opt_d = torch.optim.Adam(
            discriminator.parameters(), lr=self.inner.lr, betas=betas, eps=self.inner.eps
        )
        opt_g = torch.optim.Adam(
            generator.parameters(), lr=self.inner.lr, betas=betas, eps=self.inner.eps
        )
        kept = inner if self.keep_inner else None
        if kept is not None and kept.state is not None:
            opt_d.load_state_dict(kept.state["discriminator"])
            opt_g.load_state_dict(kept.state["generator"])
        noise = image_noise(self.seed, version, indices, self.latent_dim)
        totals = torch.zeros(4, dtype=torch.float64)
        slices = micro_batches(len(indices), self.batch_size)
        for part in slices:
            real = to_model_input(images[part]).to(device)
            z = noise[part].to(device)
            d_out = discriminator_phase(generator, discriminator, real, z, batch_size=len(z))
            opt_d.step()
            g_out = generator_phase(generator, discriminator, z, batch_size=len(z))
            opt_g.step()
            d, g = d_out.metrics, g_out.metrics
            n = len(z)
            totals += torch.tensor(
                [g.g_loss or 0.0, d.d_loss or 0.0, d.d_real_accuracy or 0.0,
                 d.d_fake_accuracy or 0.0], dtype=torch.float64,
            ) * n  # fmt: skip
            if on_micro_batch is not None:
                on_micro_batch(n)
        if kept is not None:
            kept.state = {"discriminator": opt_d.state_dict(), "generator": opt_g.state_dict()}
        end = named_parameters(generator, discriminator)
        delta = {k: (start[k] - end[k].detach()).cpu() for k in start}
        g_mean, d_mean, real_acc, fake_acc = (totals / len(indices)).tolist()
        return UnitResult(
            kind=LOCAL_STEPS,
            iteration=version,
            num_samples=len(indices),
            tensors=delta,
            buffers=buffer_state(generator, discriminator),
            metrics=UnitMetrics(g_mean, d_mean, real_acc, fake_acc),
            extra={"inner_steps": str(len(slices)), "batch_size": str(self.batch_size)},
        )

    def initial_optimizer(self, parameters: dict[str, Tensor]) -> OptimizerState:
        """No Adam moments on the coordinator: its only state is the outer momentum."""
        return OptimizerState(step=0, exp_avg={}, exp_avg_sq={})

    def fold(
        self,
        weights: dict[str, Tensor],
        optimizer: OptimizerState,
        results: Sequence[UnitResult],
        *,
        version: int,
    ) -> Fold:
        """Average the changes (image-weighted) and take the outer SGD step."""
        combined = aggregate(results, self.aggregation, self.trim)
        new_weights, state = apply_deltas(weights, combined, optimizer, self.outer)
        return Fold(new_weights, state, combined.metrics, combined.num_samples)
