"""DCGAN generator and discriminator for 64x64 RGB images, and the flat weight layout.

The architecture follows pytorch/examples' dcgan. Every other module talks about the
two networks through one flat ``dict[str, Tensor]`` (``generator.<name>`` and
``discriminator.<name>``, parameters and BatchNorm running statistics) so that the
codec, the aggregator and the database never need to know the layer structure.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn

GENERATOR = "generator"
DISCRIMINATOR = "discriminator"


@dataclass(frozen=True)
class ModelConfig:
    """Sizes of both networks; the defaults are the classic DCGAN on CelebA."""

    latent_dim: int = 100
    generator_features: int = 64
    discriminator_features: int = 64
    channels: int = 3
    image_size: int = 64

    def to_dict(self) -> dict[str, int]:
        """Plain dict for JSON (run config, checkpoint metadata)."""
        return asdict(self)


class Generator(nn.Module):
    """Maps a latent vector (N, latent_dim, 1, 1) to an image (N, channels, 64, 64) in [-1, 1]."""

    def __init__(self, latent_dim: int = 100, features: int = 64, channels: int = 3) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        f = features
        self.main = nn.Sequential(
            nn.ConvTranspose2d(latent_dim, f * 8, 4, 1, 0, bias=False),  # (f*8) x 4 x 4
            nn.BatchNorm2d(f * 8),
            nn.ReLU(True),
            nn.ConvTranspose2d(f * 8, f * 4, 4, 2, 1, bias=False),  # (f*4) x 8 x 8
            nn.BatchNorm2d(f * 4),
            nn.ReLU(True),
            nn.ConvTranspose2d(f * 4, f * 2, 4, 2, 1, bias=False),  # (f*2) x 16 x 16
            nn.BatchNorm2d(f * 2),
            nn.ReLU(True),
            nn.ConvTranspose2d(f * 2, f, 4, 2, 1, bias=False),  # f x 32 x 32
            nn.BatchNorm2d(f),
            nn.ReLU(True),
            nn.ConvTranspose2d(f, channels, 4, 2, 1, bias=False),  # channels x 64 x 64
            nn.Tanh(),
        )

    def forward(self, z: Tensor) -> Tensor:
        return self.main(z)


class Discriminator(nn.Module):
    """Maps an image (N, channels, 64, 64) to the probability (N,) that it is real."""

    def __init__(self, features: int = 64, channels: int = 3) -> None:
        super().__init__()
        f = features
        self.main = nn.Sequential(
            nn.Conv2d(channels, f, 4, 2, 1, bias=False),  # f x 32 x 32
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(f, f * 2, 4, 2, 1, bias=False),  # (f*2) x 16 x 16
            nn.BatchNorm2d(f * 2),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(f * 2, f * 4, 4, 2, 1, bias=False),  # (f*4) x 8 x 8
            nn.BatchNorm2d(f * 4),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(f * 4, f * 8, 4, 2, 1, bias=False),  # (f*8) x 4 x 4
            nn.BatchNorm2d(f * 8),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(f * 8, 1, 4, 1, 0, bias=False),  # 1 x 1 x 1
            nn.Sigmoid(),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.main(x).view(-1)


def dcgan_init(module: nn.Module, rng: torch.Generator | None = None) -> None:
    """DCGAN paper init: conv weights N(0, 0.02), BatchNorm scale N(1, 0.02) and shift 0."""
    if isinstance(module, nn.Conv2d | nn.ConvTranspose2d):
        nn.init.normal_(module.weight, 0.0, 0.02, generator=rng)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02, generator=rng)
        nn.init.zeros_(module.bias)
        module.reset_running_stats()


def build_models(config: ModelConfig, seed: int | None = None) -> tuple[Generator, Discriminator]:
    """Both networks with DCGAN init; a seed makes the initial weights reproducible.

    The layers are built on the meta device and every tensor is then set from one
    ``torch.Generator``: the process-wide RNG is never drawn from, so another thread
    drawing from it (a server building sample grids) cannot change a seeded init.
    """
    if config.image_size != 64:
        raise ValueError("only 64x64 images are supported by this DCGAN")
    rng = torch.Generator()
    if seed is None:
        rng.seed()
    else:
        rng.manual_seed(seed)
    with torch.device("meta"):
        generator = Generator(config.latent_dim, config.generator_features, config.channels)
        discriminator = Discriminator(config.discriminator_features, config.channels)
    nets = (generator.to_empty(device="cpu"), discriminator.to_empty(device="cpu"))
    for net in nets:
        for module in net.modules():
            dcgan_init(module, rng)
    return nets


# --- the flat weight layout ------------------------------------------------------------


def unwrap(net: nn.Module) -> nn.Module:
    """The network inside a DistributedDataParallel wrapper (or the network itself)."""
    inner = getattr(net, "module", None)
    return inner if isinstance(inner, nn.Module) else net


def batch_norms(net: nn.Module) -> list[nn.BatchNorm2d]:
    """The network's BatchNorm layers, in order."""
    return [m for m in unwrap(net).modules() if isinstance(m, nn.BatchNorm2d)]


def _is_synced_buffer(name: str) -> bool:
    # num_batches_tracked only matters when BatchNorm momentum is None (it is 0.1 here),
    # and an int64 counter would be the one non-float tensor on the wire.
    return not name.endswith("num_batches_tracked")


def parameter_names(generator: nn.Module, discriminator: nn.Module) -> list[str]:
    """Flat names of every trainable parameter, generator first."""
    return [f"{GENERATOR}.{n}" for n, _ in generator.named_parameters()] + [
        f"{DISCRIMINATOR}.{n}" for n, _ in discriminator.named_parameters()
    ]


def named_parameters(generator: nn.Module, discriminator: nn.Module) -> dict[str, nn.Parameter]:
    """Flat name -> live parameter, for optimizers and autograd."""
    params = {f"{GENERATOR}.{n}": p for n, p in generator.named_parameters()}
    params.update({f"{DISCRIMINATOR}.{n}": p for n, p in discriminator.named_parameters()})
    return params


def buffer_state(generator: nn.Module, discriminator: nn.Module) -> dict[str, Tensor]:
    """Flat name -> detached copy of each BatchNorm running statistic."""
    out: dict[str, Tensor] = {}
    for prefix, net in ((GENERATOR, unwrap(generator)), (DISCRIMINATOR, unwrap(discriminator))):
        for name, buf in net.named_buffers():
            if _is_synced_buffer(name):
                out[f"{prefix}.{name}"] = buf.detach().clone().cpu()
    return out


def model_state(generator: nn.Module, discriminator: nn.Module) -> dict[str, Tensor]:
    """W_t as one flat dict: parameters and BatchNorm buffers of both nets (CPU copies)."""
    state = {
        k: p.detach().clone().cpu() for k, p in named_parameters(generator, discriminator).items()
    }
    state.update(buffer_state(generator, discriminator))
    return state


def load_model_state(
    generator: nn.Module, discriminator: nn.Module, state: dict[str, Tensor]
) -> None:
    """Copy a flat W_t into both networks in place (device and dtype of the networks kept)."""
    for prefix, net in ((GENERATOR, generator), (DISCRIMINATOR, discriminator)):
        own = {k[len(prefix) + 1 :]: v for k, v in state.items() if k.startswith(prefix + ".")}
        missing, unexpected = net.load_state_dict(own, strict=False)
        missing = [m for m in missing if _is_synced_buffer(m)]
        if missing or unexpected:
            raise KeyError(f"{prefix} state mismatch: missing={missing} unexpected={unexpected}")


@dataclass(frozen=True)
class StateSpec:
    """Names and shapes of W_t for one ModelConfig: what the codec validates against."""

    parameters: dict[str, tuple[int, ...]]
    buffers: dict[str, tuple[int, ...]]

    @classmethod
    def from_config(cls, config: ModelConfig) -> StateSpec:
        """Shapes read off networks built on the meta device (no memory, no init cost)."""
        with torch.device("meta"):
            generator = Generator(config.latent_dim, config.generator_features, config.channels)
            discriminator = Discriminator(config.discriminator_features, config.channels)
        params = {k: tuple(p.shape) for k, p in named_parameters(generator, discriminator).items()}
        buffers = {
            f"{prefix}.{name}": tuple(buf.shape)
            for prefix, net in ((GENERATOR, generator), (DISCRIMINATOR, discriminator))
            for name, buf in net.named_buffers()
            if _is_synced_buffer(name)
        }
        return cls(params, buffers)

    @property
    def weights(self) -> dict[str, tuple[int, ...]]:
        """Parameters and buffers together: the keys of a W_t snapshot."""
        return {**self.parameters, **self.buffers}

    def numel(self) -> int:
        """Number of scalars in W_t."""
        return sum(math.prod(shape) for shape in self.weights.values())
