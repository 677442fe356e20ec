"""The dashboard's GFLOP/s estimate counts what torch itself counts for a unit's step."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from coordinator_service.flops import flops_per_image
from shared.models import ModelConfig, build_models
from shared.strategies import Synchronous


@pytest.mark.parametrize(("latent", "g_features", "d_features"), [(32, 8, 8), (16, 8, 4)])
def test_flops_per_image_matches_torch_flop_counter(
    latent: int, g_features: int, d_features: int
) -> None:
    torch.set_num_threads(1)
    config = ModelConfig(latent, g_features, d_features)
    generator, discriminator = build_models(config, seed=0)
    images = torch.randint(0, 256, (3, 3, 64, 64), dtype=torch.uint8)
    strategy = Synchronous(seed=0, batch_size=2, latent_dim=latent)
    with FlopCounterMode(display=False) as counter:
        for version in (0, 1):  # the D phase, then the G phase
            strategy.compute(generator, discriminator, images, [0, 1, 2], version=version)
    assert counter.get_total_flops() == 3 * flops_per_image(latent, g_features, d_features)


def test_full_size_model_is_about_two_and_a_half_gflop_per_image() -> None:
    assert 2.4e9 < flops_per_image(100, 64, 64) < 2.6e9
