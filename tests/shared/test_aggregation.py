"""One result through aggregation and Adam equals a plain local optimizer step."""

from __future__ import annotations

import torch
from torch.nn import functional as F

from shared.aggregation import AdamConfig, aggregate, apply_gradients, initial_optimizer_state
from shared.models import ModelConfig, StateSpec, buffer_state, model_state
from shared.training_step import (
    UnitMetrics,
    UnitResult,
    compute_gradients,
    image_noise,
    to_model_input,
)
from tests.shared.helpers import networks_at

SEED = 5


def _local_adam_steps(config, weights, batches, adam: AdamConfig):
    """The textbook DCGAN loop, torch.optim.Adam included, with G and D stepped from the
    same W_t (the distributed contract computes both gradients before either update)."""
    generator, discriminator = networks_at(config, weights)
    betas = (adam.beta1, adam.beta2)
    opt_g = torch.optim.Adam(generator.parameters(), lr=adam.lr, betas=betas, eps=adam.eps)
    opt_d = torch.optim.Adam(discriminator.parameters(), lr=adam.lr, betas=betas, eps=adam.eps)
    for iteration, (images, indices) in enumerate(batches):
        real = to_model_input(images)
        fake = generator(image_noise(SEED, iteration, indices, config.latent_dim))
        # One D forward on the fake batch, as the worker does, so BatchNorm's running
        # statistics advance the same number of times; `inputs=` keeps each loss on its net.
        d_real, d_fake = discriminator(real), discriminator(fake)
        d_loss = F.binary_cross_entropy(d_real, torch.ones_like(d_real)) + (
            F.binary_cross_entropy(d_fake, torch.zeros_like(d_fake))
        )
        g_loss = F.binary_cross_entropy(d_fake, torch.ones_like(d_fake))
        opt_d.zero_grad()
        opt_g.zero_grad()
        d_loss.backward(inputs=list(discriminator.parameters()), retain_graph=True)
        g_loss.backward(inputs=list(generator.parameters()))
        opt_d.step()
        opt_g.step()
    return model_state(generator, discriminator)


def _distributed_steps(config, weights, batches, adam: AdamConfig):
    spec = StateSpec.from_config(config)
    state = initial_optimizer_state({k: weights[k] for k in spec.parameters})
    current = dict(weights)
    for iteration, (images, indices) in enumerate(batches):
        generator, discriminator = networks_at(config, current)
        result = compute_gradients(
            generator,
            discriminator,
            images,
            indices,
            batch_size=len(indices),
            seed=SEED,
            iteration=iteration,
        )
        current, state = apply_gradients(current, aggregate([result]), state, adam)
    return current


def test_one_result_step_equals_a_local_adam_step(config: ModelConfig, weights, images) -> None:
    adam = AdamConfig()
    batches = [(images[:8], list(range(8))), (images[8:], list(range(8, 16)))]
    local = _local_adam_steps(config, weights, batches, adam)
    distributed = _distributed_steps(config, weights, batches, adam)
    assert local.keys() == distributed.keys()
    for name in local:
        torch.testing.assert_close(distributed[name], local[name], rtol=1e-5, atol=1e-6)
    changed = [k for k in local if not torch.equal(local[k], weights[k])]
    assert len(changed) == len(local), "every parameter and buffer should have moved"


def test_local_reference_uses_the_networks_buffers(config, weights) -> None:
    # Guard for the test above: the buffers it compares are the ones BatchNorm updates.
    generator, discriminator = networks_at(config, weights)
    assert (
        buffer_state(generator, discriminator).keys()
        == StateSpec.from_config(config).buffers.keys()
    )


def _result(num_samples: int, value: float, g_loss: float) -> UnitResult:
    return UnitResult(
        kind="gradients",
        iteration=0,
        num_samples=num_samples,
        tensors={"w": torch.full((2,), value)},
        buffers={"b": torch.full((1,), value * 10)},
        metrics=UnitMetrics(g_loss, 1.0, 0.5, 0.5),
    )


def test_aggregation_is_sample_weighted() -> None:
    combined = aggregate([_result(100, 1.0, 2.0), _result(300, 3.0, 4.0)])
    assert combined.num_samples == 400 and combined.num_results == 2
    torch.testing.assert_close(combined.tensors["w"], torch.full((2,), 2.5))
    torch.testing.assert_close(combined.buffers["b"], torch.full((1,), 25.0))
    assert abs(combined.metrics.g_loss - 3.5) < 1e-12


def test_aggregation_refuses_mixed_kinds_and_empty_input() -> None:
    other = _result(1, 1.0, 1.0)
    other.kind = "local_steps"
    for bad in ([], [_result(1, 1.0, 1.0), other]):
        try:
            aggregate(bad)
        except ValueError:
            continue
        raise AssertionError(f"aggregate({bad!r}) should have raised")
