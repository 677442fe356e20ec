"""W_t for the unit at hand: downloaded once per version, loaded into the networks.

A synchronous phase changes one network's parameters (and BatchNorm buffers), so a
worker that holds the previous version downloads only that part
(``?networks=...``) and keeps the rest. The networks are rebuilt only when the run or
its model sizes change. The decoded snapshot is kept because computing a unit advances
the BatchNorm statistics (local steps move the weights too): every unit starts again
from the exact W_t.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from shared.codec import decode_partial_snapshot, decode_snapshot
from shared.models import ModelConfig, StateSpec, build_models, load_model_state
from shared.protocol import WorkUnit
from shared.strategies import strategy_for


@dataclass
class Download:
    """How the last weights download went (for the student's output)."""

    iteration: int
    num_bytes: int
    seconds: float
    networks: tuple[str, ...] | None = None  # None: the whole state
    ahead: bool = False  # fetched while the previous unit computed


class WeightsCache:
    """The networks of the current run, and the snapshot of the latest version seen."""

    def __init__(self, fetch: Callable[[str], bytes], device: torch.device) -> None:
        self._fetch = fetch
        self._device = device
        self._key: tuple[int, int] | None = None  # (run id, version)
        self._state: dict[str, Tensor] = {}
        self._config: ModelConfig | None = None
        self._spec: StateSpec | None = None
        self._nets: tuple[nn.Module, nn.Module] | None = None
        self.last_download: Download | None = None
        self.downloads = 0
        # A whole snapshot fetched ahead, from another thread, while a unit computed.
        self._ahead: tuple[tuple[int, int], bytes, float] | None = None

    def networks_for(self, unit: WorkUnit) -> tuple[nn.Module, nn.Module]:
        """Generator and discriminator holding the unit's W_t (downloading what is new)."""
        config = ModelConfig(**unit.run.model.model_dump())
        if config != self._config or self._nets is None:
            generator, discriminator = build_models(config)
            self._nets = (generator.to(self._device), discriminator.to(self._device))
            self._config, self._spec = config, StateSpec.from_config(config)
            self._key = None
        key = (unit.run.run_id, unit.iteration)
        self.last_download = None
        if key != self._key:
            self._download(unit)
            self._key = key
        load_model_state(*self._nets, self._state)
        return self._nets

    def fetch_ahead(self, unit: WorkUnit) -> None:
        """Download the unit's whole snapshot now, to be used when it is computed (safe
        from another thread while the networks train: it touches nothing they use)."""
        started = time.perf_counter()
        data = self._fetch(unit.weights_url)
        self._ahead = ((unit.run.run_id, unit.iteration), data, time.perf_counter() - started)

    def _download(self, unit: WorkUnit) -> None:
        assert self._spec is not None
        started = time.perf_counter()
        ahead = self._ahead
        if ahead is not None and ahead[0] == (unit.run.run_id, unit.iteration):
            self._ahead = None
            _, data, seconds = ahead
            self._state = decode_snapshot(data, self._spec).weights
            self.downloads += 1
            self.last_download = Download(unit.iteration, len(data), seconds, ahead=True)
            return
        networks: tuple[str, ...] | None = None
        if self._key == (unit.run.run_id, unit.iteration - 1):
            changed = strategy_for(unit.run).changed_networks(unit.iteration)
            networks = changed if len(changed) < 2 else None
        if networks is None:
            data = self._fetch(unit.weights_url)
            self._state = decode_snapshot(data, self._spec).weights
        else:
            query = "&".join(f"networks={n}" for n in networks)
            separator = "&" if "?" in unit.weights_url else "?"
            data = self._fetch(unit.weights_url + separator + query)
            part = decode_partial_snapshot(data, self._spec, networks)
            self._state = {**self._state, **part.weights}
        self.downloads += 1
        self.last_download = Download(
            unit.iteration, len(data), time.perf_counter() - started, networks
        )
