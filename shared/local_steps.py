"""The second result kind: H local Adam steps from W_t, returned as a weight change. Pure.

Why: a synchronous step per 960 images learns almost nothing in an epoch (DESIGN.md,
"Keep the result format open"). Letting each worker take H ordinary DCGAN steps on its
unit and averaging the weight changes (DiLoCo-style local SGD) gives the class many more
optimizer steps per image, and a result is sent once per H micro-batches.

The inner loop is the reference DCGAN step: D is updated on real and detached fake
images first, then G against the updated D. Inner Adam starts from zero at every unit,
so its first steps are bias-corrected but uninformed (measured in docs/local-steps.md).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from shared.aggregation import AdamConfig
from shared.models import buffer_state, named_parameters
from shared.training_step import (
    LOCAL_STEPS,
    UnitMetrics,
    UnitResult,
    image_noise,
    sort_by_index,
    to_model_input,
)


def local_steps_samples(num_images: int, batch_size: int, inner_steps: int) -> int:
    """Images ``compute_local_steps`` trains on (its ``num_samples``) for a unit this long."""
    if num_images < 1 or batch_size < 1 or inner_steps < 1:
        raise ValueError("num_images, batch_size and inner_steps must be positive")
    sizes = [min(batch_size, num_images - start) for start in range(0, num_images, batch_size)]
    full, rest = divmod(inner_steps, len(sizes))
    return full * num_images + sum(sizes[:rest])


def compute_local_steps(
    generator: nn.Module,
    discriminator: nn.Module,
    images: Tensor,
    indices: Sequence[int],
    *,
    batch_size: int,
    inner_steps: int,
    adam: AdamConfig,
    seed: int,
    iteration: int,
    on_micro_batch: Callable[[int], None] | None = None,
) -> UnitResult:
    """Train ``inner_steps`` micro-batches (cycling over the unit) and return W_t - W_local.

    The networks are left at W_local; reload W_t before computing another unit.
    """
    if len(indices) != images.shape[0] or len(indices) == 0:
        raise ValueError("need one index per image and at least one image")
    if batch_size < 1 or inner_steps < 1:
        raise ValueError("batch_size and inner_steps must be positive")
    device = next(generator.parameters()).device
    latent_dim = int(generator.latent_dim)  # type: ignore[arg-type]
    images, order = sort_by_index(images, indices)
    start_weights = {
        k: p.detach().clone() for k, p in named_parameters(generator, discriminator).items()
    }
    betas = (adam.beta1, adam.beta2)
    opt_d = torch.optim.Adam(discriminator.parameters(), lr=adam.lr, betas=betas, eps=adam.eps)
    opt_g = torch.optim.Adam(generator.parameters(), lr=adam.lr, betas=betas, eps=adam.eps)
    generator.train()
    discriminator.train()
    starts = list(range(0, len(order), batch_size))
    totals = torch.zeros(4, dtype=torch.float64)
    seen = 0
    for step in range(inner_steps):
        start = starts[step % len(starts)]
        batch_indices = order[start : start + batch_size]
        real = to_model_input(images[start : start + batch_size]).to(device)
        z = image_noise(seed, iteration, batch_indices, latent_dim).to(device)
        # D step: real images towards 1, detached fakes towards 0.
        opt_d.zero_grad(set_to_none=True)
        d_real = discriminator(real)
        fake = generator(z)
        d_fake = discriminator(fake.detach())
        d_loss = F.binary_cross_entropy(d_real, torch.ones_like(d_real)) + F.binary_cross_entropy(
            d_fake, torch.zeros_like(d_fake)
        )
        d_loss.backward()
        opt_d.step()
        # G step against the updated D; `inputs=` spares computing D's unused gradients.
        opt_g.zero_grad(set_to_none=True)
        d_out = discriminator(fake)
        g_loss = F.binary_cross_entropy(d_out, torch.ones_like(d_out))
        g_loss.backward(inputs=list(generator.parameters()))
        opt_g.step()
        n = len(batch_indices)
        seen += n
        totals += torch.tensor(
            [
                g_loss.item() * n,
                d_loss.item() * n,
                (d_real > 0.5).sum().item(),
                (d_fake < 0.5).sum().item(),
            ],
            dtype=torch.float64,
        )
        if on_micro_batch is not None:
            on_micro_batch(n)
    end_weights = named_parameters(generator, discriminator)
    delta = {k: (start_weights[k] - end_weights[k].detach()).cpu() for k in start_weights}
    g_mean, d_mean, real_acc, fake_acc = (totals / seen).tolist()
    return UnitResult(
        kind=LOCAL_STEPS,
        iteration=iteration,
        num_samples=seen,
        tensors=delta,
        buffers=buffer_state(generator, discriminator),
        metrics=UnitMetrics(g_mean, d_mean, real_acc, fake_acc),
        extra={"inner_steps": str(inner_steps), "batch_size": str(batch_size)},
    )
