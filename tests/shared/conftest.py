"""Real-size DCGAN fixtures: the contract tests keep the model the class trains."""

from __future__ import annotations

import pytest
import torch

from shared.models import ModelConfig, build_models, model_state


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread() -> None:
    # Two cores are shared with the database and other test processes.
    torch.set_num_threads(1)


@pytest.fixture
def config() -> ModelConfig:
    return ModelConfig()


@pytest.fixture
def weights(config: ModelConfig) -> dict[str, torch.Tensor]:
    """W_0 after a few training-mode forwards, so BatchNorm buffers are not trivial."""
    generator, discriminator = build_models(config, seed=3)
    with torch.no_grad():
        discriminator(generator(torch.randn(8, config.latent_dim, 1, 1)))
    return model_state(generator, discriminator)


@pytest.fixture
def images() -> torch.Tensor:
    return torch.randint(
        0, 256, (16, 3, 64, 64), dtype=torch.uint8, generator=torch.Generator().manual_seed(7)
    )
