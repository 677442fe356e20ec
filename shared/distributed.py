"""``gan-train-local`` under torchrun: one process per GPU (or CPU core), DDP semantics.

torchrun sets ``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK``; each rank trains its slice of
the global batch. G and D are wrapped in DistributedDataParallel separately, because
each phase steps one of them: DDP all-reduces the gradient of the network being
stepped (the other runs unwrapped in that phase). Buffers are not broadcast from rank 0
(``broadcast_buffers=False``); instead each rank's BatchNorm statistics are averaged
after every phase, which is what the coordinator's fold does with units' buffers.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel


@dataclass(frozen=True)
class World:
    """This process's place among the torchrun ranks (one rank when run directly)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0 writes samples, checkpoints and the progress bar."""
        return self.rank == 0

    def slice(self, indices: Sequence[int]) -> list[int]:
        """This rank's share of a global batch (whose length is a multiple of ``size``)."""
        share = len(indices) // self.size
        return list(indices[self.rank * share : (self.rank + 1) * share])


def world_from_env() -> World:
    """The torchrun world, or a single rank when WORLD_SIZE is unset."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World()
    return World(int(os.environ["RANK"]), size, int(os.environ.get("LOCAL_RANK", "0")))


def start(world: World, device: torch.device) -> None:
    """Join the process group: nccl between CUDA devices, gloo on the CPU."""
    if world.size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")


def stop(world: World) -> None:
    """Leave the process group."""
    if world.size > 1 and dist.is_initialized():
        dist.destroy_process_group()


def wrap(net: nn.Module, world: World, device: torch.device) -> nn.Module:
    """DDP around a network (itself when there is one rank)."""
    if world.size == 1:
        return net
    ids = [device.index if device.index is not None else 0] if device.type == "cuda" else None
    return DistributedDataParallel(net, device_ids=ids, broadcast_buffers=False)


def mean_across_ranks(tensors: Mapping[str, Tensor], world: World) -> dict[str, Tensor]:
    """The ranks' average of each tensor (the tensors themselves with one rank)."""
    if world.size == 1:
        return dict(tensors)
    on_gpu = dist.get_backend() == "nccl"  # nccl reduces CUDA tensors only
    out = {}
    for name, tensor in tensors.items():
        total = tensor.to("cuda", copy=True) if on_gpu else tensor.clone()
        dist.all_reduce(total)
        out[name] = (total / world.size).to(tensor.device)
    return out
