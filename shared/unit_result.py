"""What a worker sends back for one unit, and the latent noise every unit is built on."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field, fields

import torch
from torch import Tensor


@dataclass(frozen=True)
class UnitMetrics:
    """Per-image mean losses and D accuracies over a unit; None where a phase has none
    (a G phase computes no D loss)."""

    g_loss: float | None = None
    d_loss: float | None = None
    d_real_accuracy: float | None = None
    d_fake_accuracy: float | None = None

    def merged(self, later: UnitMetrics) -> UnitMetrics:
        """These metrics with every value ``later`` has taking precedence."""
        return UnitMetrics(
            *(
                getattr(later, f.name) if getattr(later, f.name) is not None
                else getattr(self, f.name)
                for f in fields(self)
            )
        )  # fmt: skip


@dataclass
class UnitResult:
    """One unit's result. ``tensors`` holds per-image-mean gradients of one network (a
    synchronous phase) or the weight change W_t - W_local (local steps), keyed by flat
    parameter name; ``buffers`` the BatchNorm statistics the unit advanced."""

    kind: str
    iteration: int
    num_samples: int
    tensors: dict[str, Tensor]
    buffers: dict[str, Tensor]
    metrics: UnitMetrics
    extra: dict[str, str] = field(default_factory=dict)


def noise_seed(seed: int, iteration: int, index: int) -> int:
    """A 63-bit seed for one image's latent vector: a hash, so nearby triples are unrelated."""
    digest = hashlib.blake2b(f"{seed}:{iteration}:{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def image_noise(seed: int, iteration: int, indices: Sequence[int], latent_dim: int) -> Tensor:
    """Latent vectors (N, latent_dim, 1, 1) on the CPU, one per image index, same anywhere."""
    z = torch.empty(len(indices), latent_dim)
    rng = torch.Generator()
    for row, index in enumerate(indices):
        rng.manual_seed(noise_seed(seed, iteration, int(index)))
        z[row] = torch.randn(latent_dim, generator=rng)
    return z.view(len(indices), latent_dim, 1, 1)
