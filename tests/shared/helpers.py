"""Small builders shared by the training-core tests."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch.nn import functional as F

from shared.aggregation import AdamConfig
from shared.models import (
    Discriminator,
    Generator,
    ModelConfig,
    build_models,
    load_model_state,
    model_state,
)
from shared.training_step import image_noise, to_model_input


def networks_at(
    config: ModelConfig, weights: Mapping[str, torch.Tensor]
) -> tuple[Generator, Discriminator]:
    """Fresh networks holding exactly ``weights`` (W_t)."""
    generator, discriminator = build_models(config)
    load_model_state(generator, discriminator, dict(weights))
    return generator, discriminator


def reference_dcgan_steps(
    config: ModelConfig,
    weights: Mapping[str, torch.Tensor],
    images: torch.Tensor,
    indices: list[int],
    *,
    batch_size: int,
    steps: int,
    adam: AdamConfig,
    seed: int,
    iteration: int,
) -> dict[str, torch.Tensor]:
    """pytorch/examples' dcgan loop on images already in index order: D on real and
    detached fake, step; then G against the updated D, step. What local steps must equal."""
    generator, discriminator = networks_at(config, weights)
    betas = (adam.beta1, adam.beta2)
    opt_d = torch.optim.Adam(discriminator.parameters(), lr=adam.lr, betas=betas)
    opt_g = torch.optim.Adam(generator.parameters(), lr=adam.lr, betas=betas)
    for step in range(steps):
        sl = slice(step * batch_size, (step + 1) * batch_size)
        real = to_model_input(images[sl])
        noise = image_noise(seed, iteration, indices[sl], config.latent_dim)
        discriminator.zero_grad()
        out = discriminator(real)
        F.binary_cross_entropy(out, torch.ones_like(out)).backward()
        fake = generator(noise)
        out = discriminator(fake.detach())
        F.binary_cross_entropy(out, torch.zeros_like(out)).backward()
        opt_d.step()
        generator.zero_grad()
        out = discriminator(fake)
        F.binary_cross_entropy(out, torch.ones_like(out)).backward()
        opt_g.step()
    return model_state(generator, discriminator)
