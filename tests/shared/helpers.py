"""The independent reference every equivalence test compares with: pytorch/examples'
dcgan loop, written out on its own (torch.optim.Adam, nn.BCELoss, D on real then on
detached fakes, step, then G against the updated D). Only its inputs (W_0, images,
latent vectors) come from the product."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from shared.aggregation import AdamConfig
from shared.models import (
    Discriminator,
    Generator,
    ModelConfig,
    build_models,
    load_model_state,
    model_state,
)


def networks_at(
    config: ModelConfig, weights: Mapping[str, torch.Tensor]
) -> tuple[Generator, Discriminator]:
    """Fresh networks holding exactly ``weights`` (W_t)."""
    generator, discriminator = build_models(config)
    load_model_state(generator, discriminator, dict(weights))
    return generator, discriminator


def textbook_dcgan(
    config: ModelConfig,
    weights: Mapping[str, torch.Tensor],
    batches: Sequence[tuple[torch.Tensor, torch.Tensor]],
    adam: AdamConfig | None = None,
) -> dict[str, torch.Tensor]:
    """W after pytorch/examples/dcgan/main.py's loop over ``batches`` of (uint8 images,
    latent vectors), from ``weights``, with one Adam per network for the whole loop."""
    adam = adam or AdamConfig()
    net_g, net_d = networks_at(config, weights)
    criterion = nn.BCELoss()
    betas = (adam.beta1, adam.beta2)
    opt_d = torch.optim.Adam(net_d.parameters(), lr=adam.lr, betas=betas, eps=adam.eps)
    opt_g = torch.optim.Adam(net_g.parameters(), lr=adam.lr, betas=betas, eps=adam.eps)
    for images, noise in batches:
        real = images.float() / 127.5 - 1.0
        real_label = torch.full((len(images),), 1.0)
        fake_label = torch.full((len(images),), 0.0)
        # (1) Update D network: maximize log(D(x)) + log(1 - D(G(z)))
        net_d.zero_grad()
        output = net_d(real)
        criterion(output, real_label).backward()
        fake = net_g(noise)
        output = net_d(fake.detach())
        criterion(output, fake_label).backward()
        opt_d.step()
        # (2) Update G network: maximize log(D(G(z)))
        net_g.zero_grad()
        output = net_d(fake)
        criterion(output, real_label).backward()
        opt_g.step()
    return model_state(net_g, net_d)


def assert_same_state(ours: Mapping[str, torch.Tensor], reference: Mapping[str, torch.Tensor]):
    """Every parameter and buffer equal to the last bit."""
    assert ours.keys() == reference.keys()
    for name, expected in reference.items():
        difference = float((ours[name] - expected).abs().max())
        assert torch.equal(ours[name], expected), (name, difference)
