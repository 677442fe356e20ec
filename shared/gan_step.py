"""The textbook DCGAN step, split into its two phases. Pure compute, no I/O.

pytorch/examples' dcgan takes, per batch: D(real) and D(G(z).detach()) and an Adam step
on D; then D'(G(z)) and an Adam step on G, against the *updated* D. Both phases here
keep that order, so the synchronous mode, ``gan-train-local`` and its torchrun ranks all
take that step; only who averages the gradients differs.

* **D phase** at (G_t, D_t): per-image-mean gradient of
  BCE(D(x), 1) + BCE(D(G(z)), 0); D's BatchNorm statistics advance on the real then the
  fake batch. G runs in training mode (batch statistics) but its running statistics are
  frozen: the textbook's one G forward per batch is counted in the G phase.
* **G phase** at (G_t, D_t+1): per-image-mean gradient of BCE(D(G(z)), 1) for G on the
  same z; G's statistics advance once and D's a third time, as in the textbook.

A unit may hold several micro-batches: each is one "rank". Gradients are the
image-weighted mean over micro-batches (what DDP's all-reduce gives), and so are the
BatchNorm statistics, each micro-batch advancing them from the same starting point
(what a torchrun rank does before its buffers are averaged). With one micro-batch per
unit this is exactly the textbook's arithmetic: the loss is the batch mean, the two D
losses are backpropagated one after the other.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from shared.models import batch_norms, buffer_state, unwrap


@dataclass(frozen=True)
class PhaseMetrics:
    """Per-image mean losses and D accuracies of one phase (None where it has none)."""

    g_loss: float | None = None
    d_loss: float | None = None
    d_real_accuracy: float | None = None
    d_fake_accuracy: float | None = None


@dataclass
class PhaseOutput:
    """A phase's gradients (by parameter name, of one network) and BatchNorm buffers."""

    gradients: dict[str, Tensor]
    buffers: dict[str, Tensor]
    metrics: PhaseMetrics
    num_images: int


def to_model_input(images: Tensor) -> Tensor:
    """uint8 images in [0, 255] to float in [-1, 1], the range of the generator's tanh."""
    return images.float().div_(127.5).sub_(1.0)


@contextlib.contextmanager
def frozen_running_stats(net: nn.Module) -> Iterator[None]:
    """Training-mode BatchNorm (batch statistics) that leaves the running statistics as
    they are: momentum 0 makes the update ``(1 - 0) * running + 0 * batch``, exactly."""
    norms = batch_norms(net)
    saved = [bn.momentum for bn in norms]
    for bn in norms:
        bn.momentum = 0.0
    try:
        yield
    finally:
        for bn, momentum in zip(norms, saved, strict=True):
            bn.momentum = momentum


def _stats(bn: nn.BatchNorm2d) -> tuple[Tensor, Tensor]:
    assert bn.running_mean is not None and bn.running_var is not None  # tracked: DCGAN's
    return bn.running_mean, bn.running_var


class _BufferMean:
    """Each micro-batch advances the BatchNorm statistics from the same start; the
    phase ends with their image-weighted mean (a rank each, then averaged)."""

    def __init__(self, nets: Sequence[nn.Module]) -> None:
        self.stats = [_stats(bn) for net in nets for bn in batch_norms(net)]
        self.start = [(mean.clone(), var.clone()) for mean, var in self.stats]
        self.sums = [(torch.zeros_like(m), torch.zeros_like(v)) for m, v in self.start]

    def reset(self) -> None:
        for (mean, var), (mean0, var0) in zip(self.stats, self.start, strict=True):
            mean.copy_(mean0)
            var.copy_(var0)

    def add(self, weight: float) -> None:
        for (mean, var), (mean_sum, var_sum) in zip(self.stats, self.sums, strict=True):
            mean_sum.add_(mean, alpha=weight)
            var_sum.add_(var, alpha=weight)

    def finish(self, single: bool) -> None:
        if single:  # one micro-batch: its statistics as they are, bit for bit
            return
        for (mean, var), (mean_sum, var_sum) in zip(self.stats, self.sums, strict=True):
            mean.copy_(mean_sum)
            var.copy_(var_sum)


def _local_gradients(net: nn.Module) -> contextlib.AbstractContextManager:
    """Under DDP, keep this forward-backward's gradients local (``no_sync``, which DDP
    reads at forward time) so that the next backward all-reduces their sum once: the
    same rounding as one worker's unit."""
    no_sync = getattr(net, "no_sync", None)
    return no_sync() if callable(no_sync) else contextlib.nullcontext()


def micro_batches(count: int, batch_size: int) -> list[slice]:
    """The unit's positions cut into micro-batches in order (the last may be short)."""
    if count < 1 or batch_size < 1:
        raise ValueError("need at least one image and a positive batch size")
    return [slice(start, min(start + batch_size, count)) for start in range(0, count, batch_size)]


def _named_grads(net: nn.Module, prefix: str) -> dict[str, Tensor]:
    out = {}
    for name, p in unwrap(net).named_parameters():
        grad = p.grad if p.grad is not None else torch.zeros_like(p)
        out[f"{prefix}.{name}"] = grad.detach().clone().cpu()
    return out


def _bce(output: Tensor, target: float) -> Tensor:
    return F.binary_cross_entropy(output, torch.full_like(output, target))


def discriminator_phase(
    generator: nn.Module,
    discriminator: nn.Module,
    real: Tensor,
    noise: Tensor,
    *,
    batch_size: int,
    on_micro_batch: Callable[[int], None] | None = None,
) -> PhaseOutput:
    """D's per-image-mean gradient at (G, D) and D's advanced statistics; G unchanged.

    ``real`` is float in [-1, 1] on the networks' device, ``noise`` the matching latent
    vectors. Gradients are left in ``discriminator``'s ``.grad`` too (for DDP and Adam).
    """
    generator.train()
    discriminator.train()
    discriminator.zero_grad(set_to_none=True)
    n = real.shape[0]
    slices = micro_batches(n, batch_size)
    buffers = _BufferMean([discriminator])
    totals = torch.zeros(4, dtype=torch.float64)
    for part in slices:
        m = part.stop - part.start
        scale = m / n  # per-image mean over the unit; exactly 1.0 for one micro-batch
        buffers.reset()
        with _local_gradients(discriminator):  # one all-reduce of real + fake, not two
            d_real = discriminator(real[part])
            loss_real = _bce(d_real, 1.0)
            (loss_real * scale if scale != 1.0 else loss_real).backward()
        with torch.no_grad(), frozen_running_stats(generator):
            fake = generator(noise[part])
        d_fake = discriminator(fake)
        loss_fake = _bce(d_fake, 0.0)
        (loss_fake * scale if scale != 1.0 else loss_fake).backward()
        buffers.add(scale)
        totals += torch.tensor(
            [(loss_real + loss_fake).item() * m, 0.0, (d_real > 0.5).sum().item(),
             (d_fake < 0.5).sum().item()],
            dtype=torch.float64,
        )  # fmt: skip
        if on_micro_batch is not None:
            on_micro_batch(m)
    buffers.finish(single=len(slices) == 1)
    d_loss, _, real_acc, fake_acc = (totals / n).tolist()
    return PhaseOutput(
        gradients=_named_grads(discriminator, "discriminator"),
        buffers=_prefixed(buffer_state(generator, discriminator), "discriminator."),
        metrics=PhaseMetrics(d_loss=d_loss, d_real_accuracy=real_acc, d_fake_accuracy=fake_acc),
        num_images=n,
    )


def generator_phase(
    generator: nn.Module,
    discriminator: nn.Module,
    noise: Tensor,
    *,
    batch_size: int,
    on_micro_batch: Callable[[int], None] | None = None,
) -> PhaseOutput:
    """G's per-image-mean gradient against D (already stepped) and both nets' statistics.

    Gradients are left in ``generator``'s ``.grad`` too; D's ``.grad`` is not touched.
    """
    generator.train()
    discriminator.train()
    generator.zero_grad(set_to_none=True)
    n = noise.shape[0]
    slices = micro_batches(n, batch_size)
    buffers = _BufferMean([generator, discriminator])
    total = 0.0
    g_params = list(generator.parameters())
    for part in slices:
        m = part.stop - part.start
        scale = m / n
        buffers.reset()
        output = discriminator(generator(noise[part]))
        loss = _bce(output, 1.0)
        (loss * scale if scale != 1.0 else loss).backward(inputs=g_params)
        buffers.add(scale)
        total += loss.item() * m
        if on_micro_batch is not None:
            on_micro_batch(m)
    buffers.finish(single=len(slices) == 1)
    return PhaseOutput(
        gradients=_named_grads(generator, "generator"),
        buffers=buffer_state(generator, discriminator),
        metrics=PhaseMetrics(g_loss=total / n),
        num_images=n,
    )


def _prefixed(state: dict[str, Tensor], prefix: str) -> dict[str, Tensor]:
    return {k: v for k, v in state.items() if k.startswith(prefix)}
