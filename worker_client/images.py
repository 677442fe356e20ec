"""Where a unit's images come from, behind one small interface.

``open_image_source`` maps the run's ``DatasetInfo`` to an ``ImageSource``. The built-in
faces are drawn locally (every image is a pure function of seed and index, so nothing
is downloaded); a sharded dataset served by the coordinator plugs in here as another
``ImageSource`` that downloads and caches shards.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

import torch

from shared.builtin_faces import BuiltinFaces
from shared.protocol import DatasetInfo
from worker_client.errors import ConfigError

if TYPE_CHECKING:
    from worker_client.api_client import CoordinatorClient
    from worker_client.settings import WorkerSettings


class ImageSource(Protocol):
    """Images of one dataset by index, as uint8 (N, 3, 64, 64)."""

    def __len__(self) -> int: ...

    def load(self, indices: Sequence[int]) -> torch.Tensor:
        """The images at ``indices``, in that order."""
        ...

    def cached_shards(self) -> list[int]:
        """Shards already on this machine (the coordinator prefers units in them)."""
        ...


class BuiltinSource:
    """The built-in cartoon faces, rendered on this machine."""

    def __init__(self, num_images: int, seed: int) -> None:
        self._faces = BuiltinFaces(num_images, seed)

    def __len__(self) -> int:
        return len(self._faces)

    def load(self, indices: Sequence[int]) -> torch.Tensor:
        """Render the faces at ``indices``, in that order."""
        return self._faces.load(indices)

    def cached_shards(self) -> list[int]:
        """Nothing is downloaded, so no shard is ever cached."""
        return []


def open_image_source(
    dataset: DatasetInfo,
    client: CoordinatorClient | None = None,
    settings: WorkerSettings | None = None,
) -> ImageSource:
    """The image source for a run's dataset (an imported one needs the client and settings)."""
    if dataset.kind == "builtin":
        return BuiltinSource(dataset.num_images, dataset.builtin_seed)
    if dataset.kind == "sharded" and client is not None and settings is not None:
        from worker_client.shards import open_sharded

        return open_sharded(dataset, client, settings)
    raise ConfigError(
        f"this coordinator serves a {dataset.kind!r} dataset ({dataset.dataset_id}), which this "
        "version of gan-worker cannot load yet; update it (pip install -U ganns-with-friends)"
    )
