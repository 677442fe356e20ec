"""The work a unit asks for: DCGAN gradients at W_t over a list of images. Pure, no I/O.

The contract (DESIGN.md, "Training semantics"):

* images are processed in index order, split into micro-batches of ``batch_size``;
* D's gradient comes from the D loss alone, G's from the G loss alone (the G loss is
  backpropagated through D, but D's parameters never receive it);
* losses are summed per image and divided by the unit's image count, so the result is a
  per-image mean whatever the micro-batch size and a sample-weighted mean of several
  results equals the result of their union;
* the latent vector of each image is a function of (run seed, iteration, image index):
  any worker can recompute any unit and get the same numbers.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from shared.models import DISCRIMINATOR, GENERATOR, buffer_state

GRADIENTS = "gradients"
LOCAL_STEPS = "local_steps"
RESULT_KINDS = (GRADIENTS, LOCAL_STEPS)


@dataclass(frozen=True)
class UnitMetrics:
    """Per-image mean losses and discriminator accuracies over a unit."""

    g_loss: float
    d_loss: float
    d_real_accuracy: float
    d_fake_accuracy: float


@dataclass
class UnitResult:
    """What a worker sends back for one unit.

    ``tensors`` holds per-image-mean gradients (kind ``gradients``) or the weight change
    W_t - W_local (kind ``local_steps``), keyed by flat parameter name.
    """

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


def to_model_input(images: Tensor) -> Tensor:
    """uint8 images in [0, 255] to float in [-1, 1], the range of the generator's tanh."""
    return images.float().div_(127.5).sub_(1.0)


def sort_by_index(images: Tensor, indices: Sequence[int]) -> tuple[Tensor, list[int]]:
    """Images and indices in ascending index order, so arrival order never matters."""
    order = sorted(range(len(indices)), key=lambda i: int(indices[i]))
    return images[order], [int(indices[i]) for i in order]


def compute_gradients(
    generator: nn.Module,
    discriminator: nn.Module,
    images: Tensor,
    indices: Sequence[int],
    *,
    batch_size: int,
    seed: int,
    iteration: int,
    on_micro_batch: Callable[[int], None] | None = None,
) -> UnitResult:
    """Per-image-mean G and D gradients at the networks' current weights over one unit.

    The networks' BatchNorm running statistics advance as in training (that is what the
    unit reports back as buffers); their parameters are never changed.
    """
    if len(indices) != images.shape[0] or len(indices) == 0:
        raise ValueError("need one index per image and at least one image")
    if batch_size < 1:
        raise ValueError("batch_size must be positive")
    device = next(generator.parameters()).device
    latent_dim = int(generator.latent_dim)  # type: ignore[arg-type]
    images, order = sort_by_index(images, indices)
    g_params = list(generator.parameters())
    d_params = list(discriminator.parameters())
    g_sum = [torch.zeros_like(p) for p in g_params]
    d_sum = [torch.zeros_like(p) for p in d_params]
    totals = torch.zeros(4, dtype=torch.float64)  # g_loss, d_loss, real correct, fake correct
    generator.train()
    discriminator.train()
    n = len(order)
    for start in range(0, n, batch_size):
        batch_indices = order[start : start + batch_size]
        real = to_model_input(images[start : start + batch_size]).to(device)
        z = image_noise(seed, iteration, batch_indices, latent_dim).to(device)
        fake = generator(z)
        d_real = discriminator(real)
        d_fake = discriminator(fake)
        # reduction="sum": dividing by the unit's size once at the end makes the result
        # a per-image mean that does not depend on how the unit was split.
        d_loss = F.binary_cross_entropy(d_real, torch.ones_like(d_real), reduction="sum")
        d_loss = d_loss + F.binary_cross_entropy(d_fake, torch.zeros_like(d_fake), reduction="sum")
        g_loss = F.binary_cross_entropy(d_fake, torch.ones_like(d_fake), reduction="sum")
        # Asking autograd for D's parameters only from d_loss, and G's only from g_loss,
        # is what keeps the G loss out of D's gradient (no .detach() bookkeeping needed).
        d_grads = torch.autograd.grad(d_loss, d_params, retain_graph=True)
        g_grads = torch.autograd.grad(g_loss, g_params)
        torch._foreach_add_(d_sum, d_grads)
        torch._foreach_add_(g_sum, g_grads)
        totals += torch.tensor(
            [
                g_loss.item(),
                d_loss.item(),
                (d_real > 0.5).sum().item(),
                (d_fake < 0.5).sum().item(),
            ],
            dtype=torch.float64,
        )
        if on_micro_batch is not None:
            on_micro_batch(len(batch_indices))
    tensors: dict[str, Tensor] = {}
    for prefix, net, sums in ((GENERATOR, generator, g_sum), (DISCRIMINATOR, discriminator, d_sum)):
        for (name, _), total in zip(net.named_parameters(), sums, strict=True):
            tensors[f"{prefix}.{name}"] = (total / n).cpu()
    g_mean, d_mean, real_acc, fake_acc = (totals / n).tolist()
    return UnitResult(
        kind=GRADIENTS,
        iteration=iteration,
        num_samples=n,
        tensors=tensors,
        buffers=buffer_state(generator, discriminator),
        metrics=UnitMetrics(g_mean, d_mean, real_acc, fake_acc),
    )
