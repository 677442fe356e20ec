"""The synchronous phases at the real model size: what each computes and how it splits."""

from __future__ import annotations

import torch
from torch import nn

from shared.aggregation import aggregate
from shared.models import DISCRIMINATOR, GENERATOR, ModelConfig, StateSpec
from shared.strategies import Synchronous
from shared.unit_result import image_noise
from tests.shared.helpers import networks_at

SEED, ITERATION = 11, 4
D_PHASE, G_PHASE = 2 * ITERATION, 2 * ITERATION + 1


def _unit(config, weights, images, indices, *, batch_size, version=D_PHASE):
    strategy = Synchronous(SEED, batch_size, config.latent_dim)
    nets = networks_at(config, weights)
    return strategy.compute(*nets, images, indices, version=version), nets


def test_d_phase_is_the_textbook_d_gradient_and_touches_nothing_of_g(
    config: ModelConfig, weights, images
) -> None:
    indices = list(range(100, 116))
    result, (generator, discriminator) = _unit(config, weights, images, indices, batch_size=16)
    assert result.kind == "d_phase" and result.num_samples == 16
    spec = StateSpec.from_config(config)
    assert result.tensors.keys() == {k for k in spec.parameters if k.startswith(DISCRIMINATOR)}
    assert all(k.startswith(DISCRIMINATOR) for k in result.buffers)

    # The textbook's D update, written out: D(x) and D(G(z).detach()), two backwards.
    criterion = nn.BCELoss()
    real = images.float() / 127.5 - 1.0
    net_g, net_d = networks_at(config, weights)
    criterion(net_d(real), torch.ones(16)).backward()
    fake = net_g(image_noise(SEED, ITERATION, indices, config.latent_dim))
    criterion(net_d(fake.detach()), torch.zeros(16)).backward()
    for name, p in net_d.named_parameters():
        assert torch.equal(result.tensors[f"{DISCRIMINATOR}.{name}"], p.grad), name
    for name, buf in net_d.named_buffers():
        if not name.endswith("num_batches_tracked"):
            assert torch.equal(result.buffers[f"{DISCRIMINATOR}.{name}"], buf), name
    # G's parameters and running statistics are as they were.
    for name, tensor in generator.state_dict().items():
        if not name.endswith("num_batches_tracked"):
            assert torch.equal(tensor, weights[f"{GENERATOR}.{name}"]), name


def test_g_phase_holds_g_gradients_and_every_buffer(config, weights, images) -> None:
    result, _ = _unit(config, weights, None, list(range(16)), batch_size=16, version=G_PHASE)
    spec = StateSpec.from_config(config)
    assert result.kind == "g_phase"
    assert result.tensors.keys() == {k for k in spec.parameters if k.startswith(GENERATOR)}
    assert result.buffers.keys() == spec.buffers.keys()
    assert result.metrics.d_loss is None and result.metrics.g_loss is not None


def test_micro_batches_of_a_unit_equal_units_of_a_micro_batch(config, weights, images) -> None:
    """One unit of 2 x 8 is two ranks of 8: gradients and buffers average the same."""
    indices = list(range(16))
    for version in (D_PHASE, G_PHASE):
        whole, _ = _unit(config, weights, images, indices, batch_size=8, version=version)
        halves = [
            _unit(config, weights, images[s], indices[s], batch_size=8, version=version)[0]
            for s in (slice(0, 8), slice(8, 16))
        ]
        combined = aggregate(halves)
        for name, tensor in whole.tensors.items():
            # The same sums in another order: float rounding, bounded per tensor (one
            # element in 3,072 can still differ by 3e-5 relative on some CPUs).
            error = float((combined.tensors[name] - tensor).norm() / tensor.norm())
            assert error <= 1e-6, f"{name}: relative difference {error:.2e}"
        for name, tensor in whole.buffers.items():
            torch.testing.assert_close(combined.buffers[name], tensor, rtol=1e-6, atol=1e-7)


def test_the_micro_batch_changes_the_gradient_so_the_run_fixes_it(config, weights, images):
    indices = list(range(16))
    small, _ = _unit(config, weights, images, indices, batch_size=4)
    large, _ = _unit(config, weights, images, indices, batch_size=16)
    a = torch.cat([t.flatten() for t in small.tensors.values()])
    b = torch.cat([t.flatten() for t in large.tensors.values()])
    assert float((a - b).norm() / b.norm()) > 0.05  # BatchNorm's batch statistics


def test_noise_is_a_function_of_seed_iteration_and_index() -> None:
    a = image_noise(1, 2, [5, 6, 7], 100)
    assert torch.equal(a[1], image_noise(1, 2, [6], 100)[0])
    assert not torch.equal(a[0], image_noise(1, 3, [5], 100)[0])
    assert not torch.equal(a[0], image_noise(2, 2, [5], 100)[0])
    assert not torch.equal(a[0], a[1])
