"""The on-disk format of an imported dataset, read by the coordinator and every worker.

A dataset is a folder holding ``manifest.json`` and shards ``shard-00000.safetensors``,
``shard-00001.safetensors``, ... Each shard is a safetensors file with one uint8 tensor
``images`` of shape (n, 3, 64, 64). Every shard holds exactly ``shard_size`` images except
the last, so image ``i`` is image ``i % shard_size`` of shard ``i // shard_size``: a worker
knows which shard a unit needs from its indices alone.

``dataset_id`` is a content hash: the sha256 over the ordered list of (count, shard
sha256), cut to 16 hex digits (see :func:`dataset_id_for`). The shard files are
deterministic bytes of the pixels (safetensors writes no timestamp), so two imports of
the same images give the same id, whatever the name or the import date.

Why safetensors and not ``torch.save``: a shard crosses the network to students'
machines, and loading pickle from the network runs code. safetensors is plain bytes
plus a JSON header. Reading and writing go through numpy here so that this module,
like the manifest model, works without torch; only :meth:`ShardedDataset.load`
returns a torch tensor.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import OrderedDict
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator
from safetensors.numpy import load as st_load
from safetensors.numpy import save as st_save

from shared.protocol import DatasetInfo

if TYPE_CHECKING:
    import torch

FORMAT = "gan-shards/1"
MANIFEST_NAME = "manifest.json"
TENSOR_KEY = "images"
DEFAULT_SHARD_SIZE = 1000
IMAGE_SIZE = 64
CHANNELS = 3


class ShardError(Exception):
    """A shard file is missing, truncated, not the expected bytes, or not a shard."""


class ShardEntry(BaseModel):
    """One shard as listed in the manifest."""

    model_config = ConfigDict(extra="forbid")

    index: int = Field(ge=0)
    count: int = Field(ge=1)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    bytes: int = Field(ge=1)

    @property
    def filename(self) -> str:
        """File name of this shard inside the dataset folder."""
        return shard_filename(self.index)


class DatasetManifest(BaseModel):
    """``manifest.json``: what a dataset holds; written last, so its presence means complete."""

    model_config = ConfigDict(extra="forbid")

    format: str = FORMAT
    name: str
    dataset_id: str = Field(pattern=r"^[0-9a-f]{16}$")
    image_count: int = Field(ge=1)
    image_size: int = IMAGE_SIZE
    channels: int = CHANNELS
    shard_size: int = Field(ge=1)
    shards: list[ShardEntry]
    source: str = Field(default="", description="where the images came from, for people")
    source_fingerprint: str = Field(default="", description="lets a re-import return at once")
    skipped: int = Field(default=0, ge=0, description="corrupt or unreadable images left out")
    skipped_examples: list[str] = Field(default_factory=list, max_length=100)
    created_at: datetime = Field(default_factory=lambda: datetime.now(timezone.utc))

    @model_validator(mode="after")
    def _consistent(self) -> DatasetManifest:
        if self.format != FORMAT:
            raise ValueError(f"unsupported dataset format {self.format!r} (expected {FORMAT})")
        if [s.index for s in self.shards] != list(range(len(self.shards))):
            raise ValueError("shards must be listed in order 0, 1, 2, ...")
        if any(s.count != self.shard_size for s in self.shards[:-1]):
            raise ValueError("every shard but the last must hold exactly shard_size images")
        if not self.shards or self.shards[-1].count > self.shard_size:
            raise ValueError("the last shard must hold 1..shard_size images")
        if sum(s.count for s in self.shards) != self.image_count:
            raise ValueError("image_count does not match the shard counts")
        if self.dataset_id != dataset_id_for(self.shards):
            raise ValueError("dataset_id is not the hash of the shard list")
        return self

    @property
    def total_bytes(self) -> int:
        """Bytes of all shards together."""
        return sum(s.bytes for s in self.shards)

    def shard_of(self, index: int) -> tuple[int, int]:
        """Global image index -> (shard index, offset inside the shard)."""
        if not 0 <= index < self.image_count:
            raise IndexError(f"image index {index} out of range 0..{self.image_count - 1}")
        return divmod(index, self.shard_size)

    def shards_for(self, indices: Sequence[int]) -> list[int]:
        """The sorted distinct shards that ``indices`` touch."""
        return sorted({self.shard_of(int(i))[0] for i in indices})


def shard_filename(index: int) -> str:
    """``shard-00042.safetensors`` for shard 42."""
    return f"shard-{index:05d}.safetensors"


def dataset_id_for(shards: Sequence[ShardEntry]) -> str:
    """Content hash of a dataset: sha256 over each shard's count and sha256, in order."""
    digest = hashlib.sha256(FORMAT.encode())
    for shard in shards:
        digest.update(f"\n{shard.count} {shard.sha256}".encode())
    return digest.hexdigest()[:16]


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in 1 MiB pieces."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def encode_shard(images: np.ndarray) -> bytes:
    """uint8 (n, 3, H, W) -> safetensors bytes; the same pixels always give the same bytes."""
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1] != CHANNELS:
        raise ValueError(f"a shard is uint8 (n, 3, H, W), got {images.dtype} {images.shape}")
    if images.shape[0] == 0:
        raise ValueError("a shard holds at least one image")
    return st_save({TENSOR_KEY: np.ascontiguousarray(images)})


def decode_shard(data: bytes, expected_sha256: str | None = None) -> np.ndarray:
    """safetensors bytes -> uint8 (n, 3, H, W), checking the sha256 first when given."""
    if expected_sha256 is not None:
        actual = hashlib.sha256(data).hexdigest()
        if actual != expected_sha256:
            raise ShardError(f"shard sha256 is {actual[:12]}…, expected {expected_sha256[:12]}…")
    try:
        tensors = st_load(data)
    except Exception as exc:  # safetensors raises its own error type for bad headers
        raise ShardError(f"not a safetensors shard: {exc}") from exc
    images = tensors.get(TENSOR_KEY)
    if images is None or set(tensors) != {TENSOR_KEY}:
        raise ShardError(f"a shard holds exactly one tensor {TENSOR_KEY!r}, got {sorted(tensors)}")
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1] != CHANNELS:
        raise ShardError(f"shard tensor must be uint8 (n, 3, H, W), got {images.dtype}")
    return images


def read_shard(path: str | Path, entry: ShardEntry | None = None) -> np.ndarray:
    """Read one shard file; with its manifest ``entry``, verify sha256 and image count."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ShardError(f"cannot read shard {path}: {exc}") from exc
    images = decode_shard(data, entry.sha256 if entry else None)
    if entry is not None and images.shape[0] != entry.count:
        raise ShardError(f"shard {path} holds {images.shape[0]} images, expected {entry.count}")
    return images


def verify_shard(path: str | Path, entry: ShardEntry) -> bool:
    """True when the file at ``path`` has exactly the size and sha256 the manifest lists."""
    path = Path(path)
    try:
        return path.stat().st_size == entry.bytes and sha256_file(path) == entry.sha256
    except OSError:
        return False


def write_atomic(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the whole new one."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def read_manifest(directory: str | Path) -> DatasetManifest:
    """Load and validate ``<directory>/manifest.json``."""
    path = Path(directory) / MANIFEST_NAME
    return DatasetManifest.model_validate_json(path.read_bytes())


def write_manifest(directory: str | Path, manifest: DatasetManifest) -> None:
    """Write ``manifest.json`` atomically."""
    text = json.dumps(manifest.model_dump(mode="json"), indent=2) + "\n"
    write_atomic(Path(directory) / MANIFEST_NAME, text.encode())


class ShardedDataset:
    """An imported dataset as an image source (``len``, ``load``, ``name``).

    Shards are read lazily when an index first needs them and kept in a small LRU, so a
    unit (inside one shard, or a few neighbouring ones for big units) reads each once.
    ``locate`` maps a manifest entry to a local file; the worker passes one that downloads
    into its cache.
    """

    def __init__(
        self,
        directory: str | Path | None = None,
        *,
        manifest: DatasetManifest | None = None,
        locate: Callable[[ShardEntry], Path] | None = None,
        max_cached_shards: int = 4,
        verify: bool = True,
    ) -> None:
        if manifest is None:
            if directory is None:
                raise ValueError("give a dataset directory or a manifest")
            manifest = read_manifest(directory)
        if locate is None:
            if directory is None:
                raise ValueError("give a dataset directory or a locate function")
            root = Path(directory)
            locate = lambda entry: root / entry.filename  # noqa: E731
        self.manifest = manifest
        self._locate = locate
        self._verify = verify
        self._max_cached = max(1, max_cached_shards)
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()

    @property
    def name(self) -> str:
        """The dataset's name and id, e.g. ``celeba-train-0123456789abcdef``."""
        return f"{self.manifest.name}-{self.manifest.dataset_id}"

    @property
    def dataset_id(self) -> str:
        """The content hash identifying these images."""
        return self.manifest.dataset_id

    def __len__(self) -> int:
        """Number of images."""
        return self.manifest.image_count

    def shard(self, k: int) -> np.ndarray:
        """All images of shard ``k`` as uint8 (n, 3, 64, 64), via the LRU."""
        cached = self._cache.get(k)
        if cached is not None:
            self._cache.move_to_end(k)
            return cached
        entry = self.manifest.shards[k]
        images = read_shard(self._locate(entry), entry if self._verify else None)
        self._cache[k] = images
        while len(self._cache) > self._max_cached:
            self._cache.popitem(last=False)
        return images

    def load(self, indices: Sequence[int]) -> torch.Tensor:
        """The images at ``indices``, in that order, as uint8 (N, 3, 64, 64)."""
        import torch

        size = self.manifest.image_size
        out = np.empty((len(indices), CHANNELS, size, size), dtype=np.uint8)
        for row, raw in enumerate(indices):
            k, offset = self.manifest.shard_of(int(raw))
            out[row] = self.shard(k)[offset]
        return torch.from_numpy(out)


class DatasetDescription(DatasetInfo):
    """``GET /api/v1/dataset``: the run's dataset, with the manifest when it is sharded."""

    manifest: DatasetManifest | None = None
