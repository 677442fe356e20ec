"""How much arithmetic one image of a unit costs: the dashboard's GFLOP/s estimate.

Counted analytically from the DCGAN layer shapes (``shared.models``), convolutions only
(BatchNorm and activations are a rounding error next to them), one multiply-add = 2
FLOPs. One image of a synchronous iteration costs (see ``shared.gan_step``): in the D
phase a G forward and D forwards on the real and the fake image, D's weight gradients
through both D passes (input gradients everywhere but D's first layer); in the G phase
G and D forwards again, then G's gradients through D's pass (input gradients only) and
all of G (weight gradients, input gradients everywhere but G's first layer). A test
checks the count against torch's own FlopCounterMode on the real phases.
"""

from __future__ import annotations

from dataclasses import dataclass

KERNEL = 4 * 4  # every DCGAN convolution is 4x4


@dataclass(frozen=True)
class LayerMacs:
    """Multiply-adds of one forward pass, summed, and those of the first layer alone."""

    total: int
    first: int


def generator_macs(latent_dim: int, features: int, channels: int = 3) -> LayerMacs:
    """Transposed convolutions: in x out x k x k per input pixel."""
    f = features
    layers = [  # (in, out, input side)
        (latent_dim, f * 8, 1),
        (f * 8, f * 4, 4),
        (f * 4, f * 2, 8),
        (f * 2, f, 16),
        (f, channels, 32),
    ]
    macs = [i * o * KERNEL * side * side for i, o, side in layers]
    return LayerMacs(sum(macs), macs[0])


def discriminator_macs(features: int, channels: int = 3) -> LayerMacs:
    """Convolutions: in x out x k x k per output pixel."""
    f = features
    layers = [  # (in, out, output side)
        (channels, f, 32),
        (f, f * 2, 16),
        (f * 2, f * 4, 8),
        (f * 4, f * 8, 4),
        (f * 8, 1, 1),
    ]
    macs = [i * o * KERNEL * side * side for i, o, side in layers]
    return LayerMacs(sum(macs), macs[0])


def flops_per_image(
    latent_dim: int, generator_features: int, discriminator_features: int, channels: int = 3
) -> int:
    """Convolution FLOPs of one image's textbook iteration (both synchronous phases)."""
    g = generator_macs(latent_dim, generator_features, channels)
    d = discriminator_macs(discriminator_features, channels)
    forward = 2 * g.total + 3 * d.total  # D phase: G, D(real), D(fake); G phase: G, D
    d_backward = 2 * (d.total + (d.total - d.first))  # weight + input grads, real and fake
    g_backward = d.total + g.total + (g.total - g.first)  # through D's fake pass, then G
    return 2 * (forward + d_backward + g_backward)
