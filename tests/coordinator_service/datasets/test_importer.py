"""Importing each layout into shards: pixels, ids, splits, corrupt files, resuming, errors."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from coordinator_service.datasets.catalog import list_datasets, partial_imports
from coordinator_service.datasets.importer import ImportInterrupted, import_dataset, shuffled
from coordinator_service.datasets.sources import NoImagesError, SourceNotFoundError
from shared.builtin_faces import BuiltinFaces
from shared.dataset_shards import ShardedDataset, ShardEntry, read_manifest, read_shard
from tests.coordinator_service.datasets.conftest import CORRUPT, COUNT
from tests.coordinator_service.datasets.fixtures import (
    expected_pixels,
    picture,
    write_partition,
    zip_folder,
)


def _in_import_order(members: list[Path]) -> list[Path]:
    """The members as the importer stores them: shuffled, the corrupt one left out."""
    return [p for p in shuffled(members) if p.name != f"{CORRUPT:06d}.jpg"]


def _good(folder: Path) -> list[Path]:
    return _in_import_order(sorted(folder.iterdir()))


def _all_pixels(path: Path) -> np.ndarray:
    manifest = read_manifest(path)
    return np.concatenate([read_shard(path / s.filename, s) for s in manifest.shards])


def test_folder_import_matches_preprocess_image_by_image(celeba_folder: Path, data_root: Path):
    result = import_dataset(celeba_folder, data_root, shard_size=5, workers=1, progress=False)
    manifest = result.manifest
    assert manifest.image_count == COUNT - 1
    assert [s.count for s in manifest.shards] == [5, 5, 1]
    assert manifest.skipped == 1 and manifest.skipped_examples == [f"{CORRUPT:06d}.jpg"]
    assert np.array_equal(_all_pixels(result.path), expected_pixels(_good(celeba_folder)))
    # Shard files are exactly what the manifest says, and the image source reads them.
    dataset = ShardedDataset(result.path)
    assert len(dataset) == COUNT - 1
    loaded = dataset.load([10, 0, 6]).numpy()
    assert np.array_equal(loaded, _all_pixels(result.path)[[10, 0, 6]])
    assert sorted(p.name for p in result.path.iterdir()) == [
        "manifest.json",
        "shard-00000.safetensors",
        "shard-00001.safetensors",
        "shard-00002.safetensors",
    ]


def test_same_source_gives_same_id_and_reimport_is_instant(
    celeba_folder: Path, data_root: Path, tmp_path: Path
):
    first = import_dataset(celeba_folder, data_root, shard_size=5, workers=1, progress=False)
    again = import_dataset(celeba_folder, data_root, shard_size=5, workers=1, progress=False)
    assert again.already_imported and again.manifest == first.manifest
    fresh = import_dataset(
        celeba_folder, tmp_path / "other", shard_size=5, workers=1, progress=False
    )
    assert not fresh.already_imported
    assert fresh.manifest.dataset_id == first.manifest.dataset_id


def test_process_pool_gives_the_same_bytes(celeba_folder: Path, data_root: Path, tmp_path: Path):
    serial = import_dataset(celeba_folder, data_root, shard_size=5, workers=1, progress=False)
    pooled = import_dataset(
        celeba_folder, tmp_path / "pooled", shard_size=5, workers=2, progress=False
    )
    assert pooled.manifest.shards == serial.manifest.shards


def test_zip_is_read_in_place_and_equals_the_folder(
    celeba_folder: Path, data_root: Path, tmp_path: Path
):
    archive = zip_folder(celeba_folder, tmp_path / "img_align_celeba.zip")
    from_zip = import_dataset(archive, data_root, shard_size=5, workers=1, progress=False)
    from_folder = import_dataset(
        celeba_folder, tmp_path / "f", shard_size=5, workers=1, progress=False
    )
    assert from_zip.manifest.dataset_id == from_folder.manifest.dataset_id
    assert from_zip.manifest.skipped == 1
    assert from_zip.manifest.name == "img_align_celeba"
    assert not any(p.suffix == ".jpg" for p in tmp_path.rglob("*") if "img_align" not in str(p))


@pytest.mark.parametrize("split", ["all", "train", "valid", "test"])
def test_torchvision_root_and_split(celeba_folder: Path, tmp_path: Path, split: str):
    root = tmp_path / "torchvision"
    shutil.copytree(celeba_folder, root / "celeba" / "img_align_celeba")
    names = sorted(p.name for p in celeba_folder.iterdir())
    splits = write_partition(root / "celeba" / "list_eval_partition.txt", names)
    wanted = names if split == "all" else splits[split]
    paths = _in_import_order([celeba_folder / n for n in wanted])

    # torchvision's root (the parent of celeba/) is accepted as well as celeba/ itself.
    result = import_dataset(
        root, tmp_path / "data", split=split, shard_size=4, workers=1, progress=False
    )
    assert result.manifest.image_count == len(paths)
    assert result.manifest.name == ("celeba" if split == "all" else f"celeba-{split}")
    assert np.array_equal(_all_pixels(result.path), expected_pixels(paths))


def test_torchvision_root_with_only_the_zip(celeba_folder: Path, tmp_path: Path):
    celeba = tmp_path / "celeba"
    celeba.mkdir()
    zip_folder(celeba_folder, celeba / "img_align_celeba.zip")
    splits = write_partition(
        celeba / "list_eval_partition.txt", sorted(p.name for p in celeba_folder.iterdir())
    )
    result = import_dataset(
        celeba, tmp_path / "data", split="test", shard_size=4, workers=1, progress=False
    )
    paths = _in_import_order([celeba_folder / n for n in splits["test"]])
    assert np.array_equal(_all_pixels(result.path), expected_pixels(paths))


def test_image_folder_tree_with_mixed_formats(tmp_path: Path, data_root: Path):
    tree = tmp_path / "pets"
    for klass in ("cat", "dog"):
        (tree / klass).mkdir(parents=True)
    picture(1).save(tree / "cat" / "a.jpg")
    picture(2, (80, 100)).convert("RGBA").save(tree / "cat" / "b.png")  # alpha dropped
    picture(3, (300, 120)).convert("L").save(tree / "dog" / "c.jpeg")  # grey -> RGB
    picture(4).save(tree / "dog" / "d.webp")
    (tree / "dog" / "notes.txt").write_text("not an image, not a member")
    (tree / "dog" / "._d.webp").write_bytes(b"macOS resource fork")
    result = import_dataset(tree, data_root, shard_size=3, workers=1, progress=False)
    members = [tree / "cat/a.jpg", tree / "cat/b.png", tree / "dog/c.jpeg", tree / "dog/d.webp"]
    assert result.manifest.skipped == 0
    assert np.array_equal(_all_pixels(result.path), expected_pixels(_in_import_order(members)))


def test_builtin_faces_render_into_shards(data_root: Path):
    result = import_dataset(
        "builtin", data_root, builtin_size=7, builtin_seed=3, shard_size=3, progress=False
    )
    assert result.manifest.name == "builtin-faces-7-seed3"
    faces = BuiltinFaces(7, seed=3).load(shuffled(list(range(7)))).numpy()
    assert np.array_equal(_all_pixels(result.path), faces)


def test_interrupted_import_continues_and_gives_the_same_id(
    celeba_folder: Path, data_root: Path, tmp_path: Path
):
    written: list[ShardEntry] = []
    with pytest.raises(ImportInterrupted):
        import_dataset(
            celeba_folder,
            data_root,
            shard_size=4,
            workers=1,
            progress=False,
            stop_after_shards=1,
            on_shard=written.append,
        )
    assert len(written) == 1
    assert list_datasets(data_root) == []  # nothing visible as a dataset
    [partial] = partial_imports(data_root)
    assert (partial / "shard-00000.safetensors").is_file()
    assert not (partial / "manifest.json").exists()

    resumed = import_dataset(celeba_folder, data_root, shard_size=4, workers=1, progress=False)
    assert resumed.resumed_shards == 1 and resumed.new_shards == 2
    assert resumed.decoded == COUNT - 4  # the first shard's four members are not decoded again
    assert partial_imports(data_root) == []
    assert [e.manifest.dataset_id for e in list_datasets(data_root)] == [
        resumed.manifest.dataset_id
    ]
    clean = import_dataset(
        celeba_folder, tmp_path / "clean", shard_size=4, workers=1, progress=False
    )
    assert resumed.manifest.dataset_id == clean.manifest.dataset_id
    assert resumed.manifest.skipped == clean.manifest.skipped == 1


def test_a_damaged_partial_shard_is_redone(celeba_folder: Path, data_root: Path, tmp_path: Path):
    with pytest.raises(ImportInterrupted):
        import_dataset(
            celeba_folder, data_root, shard_size=4, workers=1, progress=False, stop_after_shards=2
        )
    [partial] = partial_imports(data_root)
    shard = partial / "shard-00001.safetensors"
    shard.write_bytes(shard.read_bytes()[:-10])  # cut short by a crash or a full disk
    (partial / ".shard-00002.safetensors.123.tmp").write_bytes(b"half a shard")
    resumed = import_dataset(celeba_folder, data_root, shard_size=4, workers=1, progress=False)
    assert resumed.resumed_shards == 1
    assert not list(resumed.path.glob("*.tmp"))
    clean = import_dataset(
        celeba_folder, tmp_path / "clean", shard_size=4, workers=1, progress=False
    )
    assert resumed.manifest.dataset_id == clean.manifest.dataset_id


def test_missing_path_is_a_clear_error_and_leaves_nothing(tmp_path: Path, data_root: Path):
    with pytest.raises(SourceNotFoundError, match="does not exist.*img_align_celeba"):
        import_dataset(tmp_path / "nowhere", data_root, progress=False)
    assert not data_root.exists()


def test_empty_folder_is_a_clear_error_and_leaves_nothing(tmp_path: Path, data_root: Path):
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    (empty / "readme.txt").write_text("no pictures here")
    with pytest.raises(NoImagesError, match="no images"):
        import_dataset(empty, data_root, progress=False)
    assert not data_root.exists()


def test_only_corrupt_files_is_an_error_and_leaves_nothing(tmp_path: Path, data_root: Path):
    folder = tmp_path / "bad"
    folder.mkdir()
    for name in ("a.jpg", "b.png"):
        (folder / name).write_bytes(b"\xff\xd8\xff garbage")
    Image.new("RGB", (4, 4)).save(folder / "c.jpg")
    (folder / "c.jpg").write_bytes((folder / "c.jpg").read_bytes()[:20])
    with pytest.raises(NoImagesError, match="none of the 3 files"):
        import_dataset(folder, data_root, workers=1, progress=False)
    assert list_datasets(data_root) == [] and partial_imports(data_root) == []


def test_small_imports_decode_in_process():
    from coordinator_service.datasets.importer import PER_PROCESS, auto_workers, default_workers

    assert auto_workers(0) == auto_workers(PER_PROCESS - 1) == 1
    assert auto_workers(10**9) == default_workers()
