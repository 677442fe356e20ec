"""Small builders shared by the training-core tests."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from shared.models import Discriminator, Generator, ModelConfig, build_models, load_model_state


def networks_at(
    config: ModelConfig, weights: Mapping[str, torch.Tensor]
) -> tuple[Generator, Discriminator]:
    """Fresh networks holding exactly ``weights`` (W_t)."""
    generator, discriminator = build_models(config)
    load_model_state(generator, discriminator, dict(weights))
    return generator, discriminator
