"""A seeded initialisation is the same whatever other threads draw meanwhile."""

from __future__ import annotations

import threading

import torch

from shared.models import ModelConfig, build_models, model_state


def test_seeded_init_ignores_the_process_wide_rng() -> None:
    config = ModelConfig(latent_dim=16, generator_features=8, discriminator_features=8)
    quiet = model_state(*build_models(config, seed=4))
    stop = threading.Event()

    def draw() -> None:  # what an in-process server's unseeded work would do
        while not stop.is_set():
            torch.randn(64)

    noisy = threading.Thread(target=draw)
    noisy.start()
    try:
        torch.manual_seed(123)
        busy = [model_state(*build_models(config, seed=4)) for _ in range(5)]
    finally:
        stop.set()
        noisy.join()
    for state in busy:
        assert all(torch.equal(state[k], quiet[k]) for k in quiet)
    other = model_state(*build_models(config, seed=5))
    assert not torch.equal(other["generator.main.0.weight"], quiet["generator.main.0.weight"])
