"""The worker's shard cache: download on first use, verify, re-download, LRU eviction."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest

from shared.dataset_shards import (
    DatasetManifest,
    ShardEntry,
    dataset_id_for,
    encode_shard,
    write_atomic,
    write_manifest,
)
from worker_client.errors import WorkerError
from worker_client.settings import WorkerSettings
from worker_client.shards import ShardCache, ShardIntegrityError, cached_source, local_source


def _dataset(n: int = 10, shard_size: int = 4, seed: int = 0):
    images = np.random.default_rng(seed).integers(0, 256, (n, 3, 64, 64), dtype=np.uint8)
    blobs = [encode_shard(images[i : i + shard_size]) for i in range(0, n, shard_size)]
    shards = [
        ShardEntry(index=k, count=min(shard_size, n - k * shard_size),
                   sha256=hashlib.sha256(b).hexdigest(), bytes=len(b))
        for k, b in enumerate(blobs)
    ]  # fmt: skip
    manifest = DatasetManifest(
        name="t", dataset_id=dataset_id_for(shards), image_count=n, shard_size=shard_size,
        shards=shards,
    )  # fmt: skip
    return images, blobs, manifest


class Server:
    """Stands in for GET /dataset/shards/{k}: counts requests, can send bad bytes."""

    def __init__(self, blobs: list[bytes]) -> None:
        self.blobs = blobs
        self.requests: list[int] = []
        self.damage_next = 0

    def fetch(self, k: int) -> bytes:
        self.requests.append(k)
        if self.damage_next:
            self.damage_next -= 1
            return self.blobs[k][:-1] + b"\x00"
        return self.blobs[k]


def test_only_the_shards_of_the_asked_images_are_downloaded_once(tmp_path: Path):
    images, blobs, manifest = _dataset()
    server = Server(blobs)
    cache = ShardCache(tmp_path, manifest, server.fetch, max_bytes=10**9)
    source = cached_source(cache)
    assert source.cached_shards() == []
    assert np.array_equal(source.load([5, 4, 6]).numpy(), images[[5, 4, 6]])
    assert server.requests == [1] and source.cached_shards() == [1]
    # A new process (fresh source, same folder): served from disk, nothing downloaded.
    again = cached_source(ShardCache(tmp_path, manifest, server.fetch, max_bytes=10**9))
    assert np.array_equal(again.load([7]).numpy(), images[[7]])
    assert server.requests == [1]
    assert (tmp_path / manifest.dataset_id / "manifest.json").is_file()


def test_a_damaged_cached_shard_is_detected_and_downloaded_again(tmp_path: Path):
    images, blobs, manifest = _dataset()
    server = Server(blobs)
    cache = ShardCache(tmp_path, manifest, server.fetch, max_bytes=10**9)
    path = cache.path(manifest.shards[0])
    data = bytearray(path.read_bytes())
    data[-100] ^= 0xFF  # one flipped pixel: same size, wrong sha256
    path.write_bytes(bytes(data))
    fresh = ShardCache(tmp_path, manifest, server.fetch, max_bytes=10**9)
    assert fresh.cached() == [0]  # present by size; its contents are checked on use
    assert np.array_equal(cached_source(fresh).load([1]).numpy(), images[[1]])
    assert fresh.damaged == [0] and fresh.downloaded == [0] and server.requests == [0, 0]


def test_a_damaged_download_is_retried_once_then_refused(tmp_path: Path):
    _, blobs, manifest = _dataset()
    server = Server(blobs)
    cache = ShardCache(tmp_path, manifest, server.fetch, max_bytes=10**9)
    server.damage_next = 1
    cache.path(manifest.shards[2])
    assert server.requests == [2, 2] and cache.downloaded == [2]
    server.damage_next = 2
    with pytest.raises(ShardIntegrityError, match="sha256"):
        cache.path(manifest.shards[1])
    assert not (cache.dir / manifest.shards[1].filename).exists()


def test_least_recently_used_shards_are_evicted_to_fit(tmp_path: Path):
    _, blobs, manifest = _dataset(n=16, shard_size=4)
    server = Server(blobs)
    size = manifest.shards[0].bytes
    cache = ShardCache(tmp_path, manifest, server.fetch, max_bytes=2 * size + 10)
    for k in (0, 1):
        cache.path(manifest.shards[k])
    old = cache.dir / manifest.shards[0].filename
    os.utime(old, (1, 1))
    cache.path(manifest.shards[1])  # used again: most recent
    cache.path(manifest.shards[2])  # needs room: shard 0 is the least recently used
    assert cache.cached() == [1, 2]
    # Another dataset in the same cache counts against the same limit.
    _, other_blobs, other = _dataset(n=4, shard_size=4, seed=1)
    ShardCache(tmp_path, other, Server(other_blobs).fetch, max_bytes=2 * size + 10).path(
        other.shards[0]
    )
    assert len(list(tmp_path.glob("*/shard-*.safetensors"))) == 2


def test_local_dataset_dir_needs_the_same_dataset(tmp_path: Path):
    images, blobs, manifest = _dataset()
    for entry, blob in zip(manifest.shards, blobs, strict=True):
        write_atomic(tmp_path / entry.filename, blob)
    write_manifest(tmp_path, manifest)
    source = local_source(tmp_path, manifest.dataset_id)
    assert source.cached_shards() == [0, 1, 2]
    assert np.array_equal(source.load([9, 0]).numpy(), images[[9, 0]])
    with pytest.raises(WorkerError, match="but this run trains on"):
        local_source(tmp_path, "0" * 16)
    with pytest.raises(WorkerError, match="no valid manifest.json"):
        local_source(tmp_path / "missing", manifest.dataset_id)


def test_cache_size_accepts_units():
    settings = WorkerSettings.model_validate({"cache_size": "500MB", "dataset_dir": "/data/c"})
    assert int(settings.cache_size) == 500_000_000 and settings.dataset_dir == Path("/data/c")
    assert int(WorkerSettings.model_validate({"cache_size": "2GiB"}).cache_size) == 2 * 1024**3
    assert int(WorkerSettings().cache_size) == 3_000_000_000
