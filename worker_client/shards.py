"""An imported dataset on a student's machine: shards downloaded on first use, verified, cached.

The coordinator serves ``GET /dataset`` (the manifest: every shard's sha256) and
``GET /dataset/shards/{k}``. A worker downloads a shard only when a unit needs one of
its images, checks the bytes against the manifest, and keeps it under
``<cache dir>/<dataset_id>/``, so a later unit in the same shard costs nothing. The
claim tells the coordinator which shards are here, and it prefers units in them.

The cache is bounded by ``--cache-size`` over all datasets in it: when a new shard would
exceed it, the least recently used shards go (a shard's mtime is touched on every
use). A cached shard is hashed again before use; one that does not match (a bad disk,
an editor, a half-copied folder) is deleted and downloaded again. With
``--dataset-dir`` the worker reads a local copy instead and downloads nothing.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import platformdirs
import torch

from shared.dataset_shards import (
    MANIFEST_NAME,
    DatasetManifest,
    ShardedDataset,
    ShardEntry,
    read_manifest,
    verify_shard,
    write_atomic,
    write_manifest,
)
from shared.protocol import DatasetInfo
from worker_client.api_client import CoordinatorClient
from worker_client.errors import WorkerError
from worker_client.settings import WorkerSettings

log = logging.getLogger("worker_client")

FetchShard = Callable[[int], bytes]


class ShardIntegrityError(WorkerError):
    """The coordinator sent a shard whose bytes do not match its manifest, twice."""


def default_cache_dir() -> Path:
    """``<user cache dir>/gan-worker/shards`` (e.g. ~/.cache/gan-worker/shards on Linux)."""
    return Path(platformdirs.user_cache_dir("gan-worker", appauthor=False)) / "shards"


class ShardCache:
    """Shards of one dataset in a size-bounded, least-recently-used cache folder."""

    def __init__(
        self, root: Path, manifest: DatasetManifest, fetch: FetchShard, max_bytes: int
    ) -> None:
        self.root = Path(root)
        self.manifest = manifest
        self.dir = self.root / manifest.dataset_id
        self.max_bytes = max_bytes
        self._fetch = fetch
        self.downloaded: list[int] = []  # shards this process downloaded, in order
        self.damaged: list[int] = []  # cached shards that failed their sha256 check
        self.dir.mkdir(parents=True, exist_ok=True)
        if not (self.dir / MANIFEST_NAME).is_file():
            # With its manifest the folder is a complete --dataset-dir once every shard is in.
            write_manifest(self.dir, manifest)

    def cached(self) -> list[int]:
        """Indices of the shards present (by name and size; contents are checked on use)."""
        present = []
        for entry in self.manifest.shards:
            path = self.dir / entry.filename
            if path.is_file() and path.stat().st_size == entry.bytes:
                present.append(entry.index)
        return present

    def path(self, entry: ShardEntry) -> Path:
        """A verified local file for ``entry``: from the cache, else downloaded now."""
        path = self.dir / entry.filename
        if path.is_file():
            if verify_shard(path, entry):
                os.utime(path)  # most recently used
                return path
            log.warning(
                "  Shard %d in the cache is damaged (sha256 mismatch); downloading it again",
                entry.index,
            )
            self.damaged.append(entry.index)
            path.unlink(missing_ok=True)
        self._download(entry, path)
        self._evict(keep=path)
        return path

    def _download(self, entry: ShardEntry, path: Path) -> None:
        for attempt in (1, 2):
            started = time.perf_counter()
            data = self._fetch(entry.index)
            if len(data) == entry.bytes and hashlib.sha256(data).hexdigest() == entry.sha256:
                write_atomic(path, data)
                self.downloaded.append(entry.index)
                log.info(
                    "  Downloaded shard %d: %.1f MB in %.2f s",
                    entry.index,
                    len(data) / 1e6,
                    time.perf_counter() - started,
                )
                return
            log.warning("  Shard %d arrived damaged (attempt %d of 2)", entry.index, attempt)
        raise ShardIntegrityError(
            f"shard {entry.index} of dataset {self.manifest.dataset_id} does not match its "
            "sha256 after two downloads; tell your instructor (the coordinator's copy may be "
            "damaged: `gan-coordinator dataset import` it again)"
        )

    def _evict(self, keep: Path) -> None:
        """Remove least recently used shards (of any dataset) until the cache fits."""
        files = sorted(
            (p for p in self.root.glob("*/shard-*.safetensors") if p != keep),
            key=lambda p: p.stat().st_mtime,
        )
        total = keep.stat().st_size + sum(p.stat().st_size for p in files)
        for oldest in files:
            if total <= self.max_bytes:
                break
            total -= oldest.stat().st_size
            oldest.unlink(missing_ok=True)
            log.info("  Cache full (--cache-size): removed %s", oldest.relative_to(self.root))


class ShardSource:
    """An imported dataset as the worker's image source (``len``, ``load``, ``cached_shards``)."""

    def __init__(
        self,
        dataset: ShardedDataset,
        cached: Callable[[], list[int]],
        cache: ShardCache | None = None,
    ) -> None:
        self.dataset = dataset
        self.cache = cache  # None for --dataset-dir
        self._cached = cached

    def __len__(self) -> int:
        return len(self.dataset)

    def load(self, indices: Sequence[int]) -> torch.Tensor:
        """The images at ``indices`` in that order, fetching the shards they live in."""
        return self.dataset.load(indices)

    def cached_shards(self) -> list[int]:
        """Shards available here, sent with every claim."""
        return self._cached()


def local_source(directory: Path, dataset_id: str) -> ShardSource:
    """``--dataset-dir``: the same shards from a local folder; nothing is downloaded."""
    try:
        manifest = read_manifest(directory)
    except (OSError, ValueError) as exc:
        raise WorkerError(
            f"--dataset-dir {directory} holds no valid {MANIFEST_NAME} ({exc}); give a folder "
            "made by `gan-coordinator dataset import` or `gan-worker prefetch`"
        ) from None
    if manifest.dataset_id != dataset_id:
        raise WorkerError(
            f"--dataset-dir {directory} holds dataset {manifest.dataset_id} ({manifest.name}) "
            f"but this run trains on {dataset_id}; point it at the right copy or leave it out"
        )
    every = list(range(len(manifest.shards)))
    return ShardSource(ShardedDataset(directory, manifest=manifest), lambda: every)


def cached_source(cache: ShardCache) -> ShardSource:
    """Shards downloaded on first use into ``cache`` (already verified there)."""
    dataset = ShardedDataset(manifest=cache.manifest, locate=cache.path, verify=False)
    return ShardSource(dataset, cache.cached, cache)


def open_cache(client: CoordinatorClient, settings: WorkerSettings) -> ShardCache | None:
    """The cache for the current run's dataset, or None when the run needs no shards."""
    description = client.dataset()
    if description.manifest is None:
        return None
    manifest = description.manifest
    return ShardCache(
        settings.cache_dir or default_cache_dir(),
        manifest,
        fetch=lambda k: client.shard(k, manifest.dataset_id),
        max_bytes=int(settings.cache_size),
    )


def open_sharded(
    dataset: DatasetInfo, client: CoordinatorClient, settings: WorkerSettings
) -> ShardSource:
    """The image source for a run's imported dataset: ``--dataset-dir``, else the cache."""
    if settings.dataset_dir is not None:
        return local_source(settings.dataset_dir, dataset.dataset_id)
    cache = open_cache(client, settings)
    if cache is None or cache.manifest.dataset_id != dataset.dataset_id:
        raise WorkerError(
            f"the coordinator's dataset changed while this unit was being set up "
            f"(expected {dataset.dataset_id}); the unit will be retried"
        )
    log.info(
        "Shard cache: %s (%d of %d shards here, limit %.1f GB)",
        cache.dir,
        len(cache.cached()),
        len(cache.manifest.shards),
        settings.cache_size / 1e9,
    )
    return cached_source(cache)
