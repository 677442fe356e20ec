"""The lines a student reads: what the worker is, what it is doing, how it went."""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass

from shared.protocol import HardwareInfo
from shared.unit_result import UnitMetrics

log = logging.getLogger("worker_client")


def setup_logging(verbose: bool) -> None:
    """Timestamped one-line messages on stdout; --verbose adds debug and HTTP lines."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(asctime)s  %(message)s", datefmt="%H:%M:%S"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    log.setLevel(logging.DEBUG if verbose else logging.INFO)
    logging.getLogger("httpx").setLevel(logging.INFO if verbose else logging.WARNING)


def megabytes(num_bytes: int) -> str:
    """``25.4 MB``."""
    return f"{num_bytes / 1e6:.1f} MB"


def hardware_lines(hw: HardwareInfo) -> list[str]:
    """Device, cores, RAM and VRAM, as the student should see them."""
    kind = "GPU" if hw.device.startswith(("cuda", "mps")) else "CPU"
    lines = [f"Device: {hw.device} ({kind}: {hw.device_name})"]
    lines.append(f"CPU cores: {hw.cpu_cores} | RAM: {hw.ram_gb:.1f} GB")
    if hw.gpu_vram_gb:
        lines.append(f"GPU VRAM: {hw.gpu_vram_gb:.1f} GB")
    lines.append(f"Host: {hw.hostname} | torch {hw.torch_version}")
    return lines


def metrics_line(m: UnitMetrics) -> str:
    """``G_loss 2.31 | D_loss 0.87 | D_real 81.2% | D_fake 90.0%``, what the phase has."""
    parts = []
    if m.g_loss is not None:
        parts.append(f"G_loss {m.g_loss:.4f}")
    if m.d_loss is not None:
        parts.append(f"D_loss {m.d_loss:.4f}")
    if m.d_real_accuracy is not None:
        parts.append(f"D_real {m.d_real_accuracy:.1%}")
    if m.d_fake_accuracy is not None:
        parts.append(f"D_fake {m.d_fake_accuracy:.1%}")
    return " | ".join(parts)


def duration(seconds: float) -> str:
    """``42s`` or ``3m05s``."""
    seconds = int(round(seconds))
    return f"{seconds}s" if seconds < 60 else f"{seconds // 60}m{seconds % 60:02d}s"


@dataclass
class Totals:
    """What this worker has done since it started."""

    units: int = 0
    images: int = 0
    seconds: float = 0.0
    dropped: int = 0  # units whose result the coordinator no longer needed (409)

    def add(self, images: int, seconds: float) -> None:
        """Count one accepted unit."""
        self.units += 1
        self.images += images
        self.seconds += seconds

    def line(self) -> str:
        """``Totals: 3 units, 960 images, 4.2 s per unit``."""
        per_unit = self.seconds / self.units if self.units else 0.0
        text = f"Totals: {self.units} units, {self.images} images, {per_unit:.1f} s per unit"
        if self.units and self.seconds:
            text += f", {self.images / self.seconds:.1f} images/s"
        if self.dropped:
            text += f" ({self.dropped} not needed any more)"
        return text
