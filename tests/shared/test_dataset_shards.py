"""The shard and manifest format both sides read: bytes, hashes, validation, the image source."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError
from safetensors.numpy import save

from shared.dataset_shards import (
    DatasetManifest,
    ShardedDataset,
    ShardEntry,
    ShardError,
    dataset_id_for,
    decode_shard,
    encode_shard,
    read_manifest,
    read_shard,
    shard_filename,
    verify_shard,
    write_atomic,
    write_manifest,
)


def _images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 3, 64, 64), dtype=np.uint8)


def _write_dataset(folder: Path, images: np.ndarray, shard_size: int) -> DatasetManifest:
    folder.mkdir(parents=True, exist_ok=True)
    shards = []
    for k, start in enumerate(range(0, len(images), shard_size)):
        data = encode_shard(images[start : start + shard_size])
        write_atomic(folder / shard_filename(k), data)
        digest = hashlib.sha256(data).hexdigest()
        shards.append(
            ShardEntry(
                index=k, count=min(shard_size, len(images) - start), sha256=digest, bytes=len(data)
            )
        )
    manifest = DatasetManifest(
        name="test",
        dataset_id=dataset_id_for(shards),
        image_count=len(images),
        shard_size=shard_size,
        shards=shards,
    )
    write_manifest(folder, manifest)
    return manifest


def test_encode_is_deterministic_and_round_trips():
    images = _images(3)
    assert encode_shard(images) == encode_shard(images.copy())
    assert np.array_equal(decode_shard(encode_shard(images)), images)


def test_decode_refuses_wrong_hash_and_non_shards():
    data = encode_shard(_images(2))
    with pytest.raises(ShardError, match="sha256"):
        decode_shard(data, "0" * 64)
    with pytest.raises(ShardError, match="not a safetensors"):
        decode_shard(b"\x08\x00\x00\x00\x00\x00\x00\x00{bad json")
    with pytest.raises(ShardError, match="uint8"):
        decode_shard(save({"images": np.zeros((1, 3, 64, 64), dtype=np.float32)}))
    with pytest.raises(ShardError, match="exactly one tensor"):
        decode_shard(save({"pixels": _images(1)}))


def test_encode_refuses_wrong_layout():
    with pytest.raises(ValueError):
        encode_shard(np.zeros((2, 64, 64, 3), dtype=np.uint8))
    with pytest.raises(ValueError):
        encode_shard(np.zeros((0, 3, 64, 64), dtype=np.uint8))


def test_manifest_round_trip_and_index_mapping(tmp_path: Path):
    manifest = _write_dataset(tmp_path, _images(7), shard_size=3)
    assert read_manifest(tmp_path) == manifest
    assert [s.count for s in manifest.shards] == [3, 3, 1]
    assert manifest.shard_of(0) == (0, 0) and manifest.shard_of(6) == (2, 0)
    assert manifest.shards_for([5, 1, 4]) == [0, 1]
    with pytest.raises(IndexError):
        manifest.shard_of(7)


def test_manifest_validation_rejects_inconsistent_lists(tmp_path: Path):
    manifest = _write_dataset(tmp_path, _images(7), shard_size=3)
    fields = manifest.model_dump()
    with pytest.raises(ValidationError, match="dataset_id"):
        DatasetManifest.model_validate({**fields, "dataset_id": "0" * 16})
    with pytest.raises(ValidationError, match="image_count"):
        DatasetManifest.model_validate({**fields, "image_count": 8})
    with pytest.raises(ValidationError, match="shard_size"):
        DatasetManifest.model_validate({**fields, "shard_size": 4})
    with pytest.raises(ValidationError, match="format"):
        DatasetManifest.model_validate({**fields, "format": "gan-shards/99"})


def test_dataset_id_depends_on_content_only(tmp_path: Path):
    a = _write_dataset(tmp_path / "a", _images(5), shard_size=2)
    b = _write_dataset(tmp_path / "b", _images(5), shard_size=2)
    c = _write_dataset(tmp_path / "c", _images(5, seed=1), shard_size=2)
    assert a.dataset_id == b.dataset_id != c.dataset_id


def test_sharded_dataset_loads_in_the_order_asked(tmp_path: Path):
    images = _images(10)
    _write_dataset(tmp_path, images, shard_size=4)
    dataset = ShardedDataset(tmp_path, max_cached_shards=2)
    order = [9, 0, 5, 4, 3, 8]
    loaded = dataset.load(order)
    assert loaded.dtype.is_floating_point is False and tuple(loaded.shape) == (6, 3, 64, 64)
    assert np.array_equal(loaded.numpy(), images[order])
    assert len(dataset) == 10 and dataset.name.startswith("test-")
    assert len(dataset._cache) <= 2  # the LRU stays bounded
    with pytest.raises(IndexError):
        dataset.load([10])


def test_sharded_dataset_reads_shards_lazily_and_verifies(tmp_path: Path):
    _write_dataset(tmp_path, _images(6), shard_size=3)
    asked: list[int] = []
    manifest = read_manifest(tmp_path)

    def locate(entry: ShardEntry) -> Path:
        asked.append(entry.index)
        return tmp_path / entry.filename

    dataset = ShardedDataset(manifest=manifest, locate=locate)
    dataset.load([4, 5, 3])
    dataset.load([5])
    assert asked == [1]
    shard = tmp_path / shard_filename(0)
    shard.write_bytes(shard.read_bytes()[:-1] + b"\x00")
    assert not verify_shard(shard, manifest.shards[0])
    with pytest.raises(ShardError, match="sha256"):
        dataset.load([0])
    with pytest.raises(ShardError, match="cannot read"):
        read_shard(tmp_path / "missing.safetensors")


def test_format_module_does_not_need_torch():
    code = "import sys, shared.dataset_shards; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
