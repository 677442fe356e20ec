"""W_t for the unit at hand: downloaded once per iteration, loaded into the networks.

The networks are rebuilt only when the run or its model sizes change. The decoded
snapshot is kept because ``compute_gradients`` advances the BatchNorm running stats:
every unit must start again from the exact W_t.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from shared.codec import decode_snapshot
from shared.models import ModelConfig, StateSpec, build_models, load_model_state
from shared.protocol import WorkUnit


@dataclass
class Download:
    """How the last weights download went (for the student's output)."""

    iteration: int
    num_bytes: int
    seconds: float


class WeightsCache:
    """The networks of the current run, and the snapshot of the latest iteration seen."""

    def __init__(self, fetch: Callable[[str], bytes], device: torch.device) -> None:
        self._fetch = fetch
        self._device = device
        self._key: tuple[int, int] | None = None  # (run id, iteration)
        self._state: dict[str, Tensor] = {}
        self._config: ModelConfig | None = None
        self._spec: StateSpec | None = None
        self._nets: tuple[nn.Module, nn.Module] | None = None
        self.last_download: Download | None = None
        self.downloads = 0

    def networks_for(self, unit: WorkUnit) -> tuple[nn.Module, nn.Module]:
        """Generator and discriminator holding the unit's W_t (downloading it if new)."""
        config = ModelConfig(**unit.run.model.model_dump())
        if config != self._config or self._nets is None:
            generator, discriminator = build_models(config)
            self._nets = (generator.to(self._device), discriminator.to(self._device))
            self._config, self._spec = config, StateSpec.from_config(config)
            self._key = None
        key = (unit.run.run_id, unit.iteration)
        if key != self._key:
            assert self._spec is not None
            started = time.perf_counter()
            data = self._fetch(unit.weights_url)
            snapshot = decode_snapshot(data, self._spec)
            self._state = snapshot.weights
            self._key = key
            self.downloads += 1
            self.last_download = Download(unit.iteration, len(data), time.perf_counter() - started)
        else:
            self.last_download = None
        load_model_state(*self._nets, self._state)
        return self._nets
