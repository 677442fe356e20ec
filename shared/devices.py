"""Choosing a torch device from a user's word: auto, cpu, cuda, cuda:N or mps."""

from __future__ import annotations

import re

import torch


def resolve_device(name: str = "auto") -> torch.device:
    """The device to train on; ``auto`` prefers CUDA, then Apple's MPS, then the CPU."""
    name = name.strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cpu":
        return torch.device("cpu")
    if re.fullmatch(r"cuda(:\d+)?", name):
        if not torch.cuda.is_available():
            raise ValueError(
                f"--device {name}: no CUDA GPU is visible to PyTorch here; use auto or cpu"
            )
        index = int(name.split(":")[1]) if ":" in name else 0
        if index >= torch.cuda.device_count():
            raise ValueError(
                f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) are visible"
            )
        return torch.device("cuda", index)
    if name == "mps":
        if not torch.backends.mps.is_available():
            raise ValueError(
                "--device mps: Apple's MPS backend is not available here; use auto or cpu"
            )
        return torch.device("mps")
    raise ValueError(f"--device {name!r}: expected auto, cpu, cuda, cuda:N or mps")


def describe_device(device: torch.device) -> str:
    """A human name for the device: the GPU's model, or 'CPU'."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "mps":
        return "Apple GPU (MPS)"
    return "CPU"
