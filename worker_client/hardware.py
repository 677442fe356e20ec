"""What this machine is: the torch device to use and the hardware sent at registration."""

from __future__ import annotations

import os
import platform
import socket

import psutil
import torch

from shared import devices as shared_devices
from shared.protocol import HardwareInfo
from worker_client.errors import ConfigError

_GB = 1024**3


def resolve_device(choice: str) -> torch.device:
    """``auto`` picks CUDA, then Apple's MPS, then the CPU; an explicit choice is checked."""
    try:
        return shared_devices.resolve_device(choice)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def device_name(device: torch.device) -> str:
    """A human name for the device: the GPU model, or the CPU's."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "mps":
        return "Apple GPU (MPS)"
    return _cpu_model() or platform.processor() or platform.machine() or "CPU"


def _cpu_model() -> str:
    # Linux's platform.processor() is empty; /proc/cpuinfo names the chip.
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def describe(device: torch.device) -> HardwareInfo:
    """The hardware report sent at registration and shown on the leaderboard."""
    gpu_count = torch.cuda.device_count() if device.type == "cuda" else 0
    vram = 0.0
    if device.type == "cuda":
        vram = torch.cuda.get_device_properties(device).total_memory / _GB
    return HardwareInfo(
        hostname=socket.gethostname()[:255],
        platform=platform.platform()[:255],
        python_version=platform.python_version(),
        torch_version=torch.__version__[:64],
        device=str(device),
        device_name=device_name(device)[:255],
        cpu_cores=os.cpu_count() or 1,
        ram_gb=round(psutil.virtual_memory().total / _GB, 2),
        gpu_count=gpu_count,
        gpu_vram_gb=round(vram, 2),
    )
