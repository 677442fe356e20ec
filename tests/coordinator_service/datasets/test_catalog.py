"""Listing and finding imported datasets; unfinished or damaged folders are never listed."""

from __future__ import annotations

from pathlib import Path

import pytest

from coordinator_service.datasets.catalog import (
    DatasetNotFoundError,
    find_dataset,
    list_datasets,
    partial_imports,
)
from coordinator_service.datasets.importer import ImportInterrupted, import_dataset


def test_list_and_find(celeba_folder: Path, data_root: Path):
    faces = import_dataset("builtin", data_root, builtin_size=3, shard_size=2, progress=False)
    photos = import_dataset(
        celeba_folder, data_root, name="photos", shard_size=5, workers=1, progress=False
    )
    ids = [e.manifest.dataset_id for e in list_datasets(data_root)]
    assert ids == [faces.manifest.dataset_id, photos.manifest.dataset_id]
    assert find_dataset(data_root, "photos").path == photos.path
    assert find_dataset(data_root, photos.manifest.dataset_id[:6]).path == photos.path
    assert find_dataset(data_root, faces.manifest.dataset_id).manifest == faces.manifest
    with pytest.raises(DatasetNotFoundError, match="gan-coordinator dataset import"):
        find_dataset(data_root, "celeba")


def test_partial_and_damaged_folders_are_not_datasets(celeba_folder: Path, data_root: Path):
    with pytest.raises(ImportInterrupted):
        import_dataset(
            celeba_folder, data_root, shard_size=4, workers=1, progress=False, stop_after_shards=1
        )
    damaged = data_root / "0123456789abcdef"
    damaged.mkdir()
    (damaged / "manifest.json").write_text("{not json")
    (data_root / "notes").mkdir()
    assert list_datasets(data_root) == []
    assert len(partial_imports(data_root)) == 1
    assert list_datasets(data_root / "missing") == []
