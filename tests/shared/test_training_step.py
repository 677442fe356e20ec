"""The gradient contract of DESIGN.md, checked with real torch at the real model size."""

from __future__ import annotations

import torch
from torch.nn import functional as F

from shared.aggregation import aggregate
from shared.models import DISCRIMINATOR, GENERATOR, ModelConfig
from shared.training_step import compute_gradients, image_noise, to_model_input
from tests.shared.helpers import networks_at

SEED, ITERATION = 11, 4


def _unit(config, weights, images, indices, batch_size):
    generator, discriminator = networks_at(config, weights)
    return compute_gradients(
        generator,
        discriminator,
        images,
        indices,
        batch_size=batch_size,
        seed=SEED,
        iteration=ITERATION,
    )


def test_d_gradient_is_the_d_loss_alone_and_g_gradient_the_g_loss_alone(
    config: ModelConfig, weights, images
) -> None:
    indices = list(range(100, 116))
    result = _unit(config, weights, images, indices, batch_size=16)

    # Reference: the textbook formulation with an explicit detach, one batch, mean losses.
    generator, discriminator = networks_at(config, weights)
    real = to_model_input(images)
    fake = generator(image_noise(SEED, ITERATION, indices, config.latent_dim))
    d_real, d_fake = discriminator(real), discriminator(fake.detach())
    d_loss = F.binary_cross_entropy(d_real, torch.ones_like(d_real)) + F.binary_cross_entropy(
        d_fake, torch.zeros_like(d_fake)
    )
    d_grads = torch.autograd.grad(d_loss, list(discriminator.parameters()), retain_graph=True)
    out = discriminator(fake)
    g_loss = F.binary_cross_entropy(out, torch.ones_like(out))
    g_grads = torch.autograd.grad(g_loss, list(generator.parameters()), retain_graph=True)

    for (name, _), expected in zip(discriminator.named_parameters(), d_grads, strict=True):
        torch.testing.assert_close(result.tensors[f"{DISCRIMINATOR}.{name}"], expected)
    for (name, _), expected in zip(generator.named_parameters(), g_grads, strict=True):
        torch.testing.assert_close(result.tensors[f"{GENERATOR}.{name}"], expected)
    assert abs(result.metrics.d_loss - d_loss.item()) < 1e-5
    assert abs(result.metrics.g_loss - g_loss.item()) < 1e-5

    # And the G loss really would have leaked: D's gradient of (D loss + G loss) differs.
    d_loss_on_fake = F.binary_cross_entropy(out, torch.zeros_like(out))
    d_loss_real = F.binary_cross_entropy(d_real, torch.ones_like(d_real))
    leaked = torch.autograd.grad(
        d_loss_real + d_loss_on_fake + g_loss, list(discriminator.parameters())
    )
    assert not torch.allclose(leaked[-1], d_grads[-1])


def test_two_halves_combined_equal_the_whole_unit(config, weights, images) -> None:
    indices = list(range(16))
    whole = _unit(config, weights, images, indices, batch_size=4)
    first = _unit(config, weights, images[:8], indices[:8], batch_size=4)
    second = _unit(config, weights, images[8:], indices[8:], batch_size=4)
    combined = aggregate([first, second])
    assert combined.num_samples == whole.num_samples == 16
    for name, tensor in whole.tensors.items():
        torch.testing.assert_close(combined.tensors[name], tensor, rtol=1e-4, atol=1e-7)
    assert abs(combined.metrics.g_loss - whole.metrics.g_loss) < 1e-5


def test_result_does_not_depend_on_arrival_order(config, weights, images) -> None:
    indices = [40 + 3 * i for i in range(16)]
    forward = _unit(config, weights, images, indices, batch_size=8)
    perm = torch.randperm(16, generator=torch.Generator().manual_seed(1)).tolist()
    shuffled = _unit(config, weights, images[perm], [indices[i] for i in perm], batch_size=8)
    for name in forward.tensors:
        assert torch.equal(forward.tensors[name], shuffled.tensors[name]), name
    for name in forward.buffers:
        assert torch.equal(forward.buffers[name], shuffled.buffers[name]), name
    assert forward.metrics == shuffled.metrics


def test_batch_size_does_not_change_the_scale(config, weights, images) -> None:
    # BatchNorm makes micro-batch statistics matter, but the per-image mean keeps the
    # gradient on one scale: a 4-image and a 16-image split stay within a factor of two.
    indices = list(range(16))
    small = _unit(config, weights, images, indices, batch_size=4)
    large = _unit(config, weights, images, indices, batch_size=16)
    norm_small = torch.cat([t.flatten() for t in small.tensors.values()]).norm()
    norm_large = torch.cat([t.flatten() for t in large.tensors.values()]).norm()
    assert 0.5 < float(norm_small / norm_large) < 2.0


def test_noise_is_a_function_of_seed_iteration_and_index() -> None:
    a = image_noise(1, 2, [5, 6, 7], 100)
    assert torch.equal(a[1], image_noise(1, 2, [6], 100)[0])
    assert not torch.equal(a[0], image_noise(1, 3, [5], 100)[0])
    assert not torch.equal(a[0], image_noise(2, 2, [5], 100)[0])
    assert not torch.equal(a[0], a[1])


def test_parameters_are_untouched_and_buffers_advance(config, weights, images) -> None:
    generator, discriminator = networks_at(config, weights)
    result = compute_gradients(
        generator, discriminator, images, list(range(16)), batch_size=8, seed=0, iteration=0
    )
    for name, param in generator.named_parameters():
        assert torch.equal(param.detach(), weights[f"{GENERATOR}.{name}"])
    moved = [k for k, v in result.buffers.items() if not torch.equal(v, weights[k])]
    assert moved, "BatchNorm running statistics should advance over a unit"
    assert result.num_samples == 16
    assert 0.0 <= result.metrics.d_real_accuracy <= 1.0
