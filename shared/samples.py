"""Sample grids: what the generator draws from a fixed set of latent vectors.

The same latent vectors at every iteration make consecutive grids comparable (the
dashboard's replay slider relies on it). The generator runs as pytorch/examples draws
its grids: in training mode, BatchNorm normalising with the 64 samples' own batch
statistics. Early in training the running statistics lag far behind the weights, and
an eval-mode grid then shows grey noise where the textbook shows faces forming. Unlike
the textbook, drawing a grid leaves the running statistics untouched.
"""

from __future__ import annotations

import io

import torch
from torch import nn
from torchvision.utils import make_grid, save_image

from shared.gan_step import frozen_running_stats


def fixed_noise(seed: int, count: int, latent_dim: int) -> torch.Tensor:
    """The latent vectors of every sample grid of a run: (count, latent_dim, 1, 1)."""
    rng = torch.Generator().manual_seed(seed + 0x5A3D1E)
    return torch.randn(count, latent_dim, 1, 1, generator=rng)


@torch.no_grad()
def sample_grid_png(generator: nn.Module, noise: torch.Tensor, nrow: int = 8) -> bytes:
    """A PNG grid of the generator's images for ``noise``; the generator's mode is restored."""
    was_training = generator.training
    generator.train()
    try:
        device = next(generator.parameters()).device
        with frozen_running_stats(generator):
            images = generator(noise.to(device)).cpu()
    finally:
        generator.train(was_training)
    grid = make_grid(images, nrow=nrow, padding=2, normalize=True, value_range=(-1, 1))
    buffer = io.BytesIO()
    save_image(grid, buffer, format="png")
    return buffer.getvalue()
