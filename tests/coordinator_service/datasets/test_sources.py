"""Recognising a source before anything is written: layouts, splits and clear refusals."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import pytest

from coordinator_service.datasets.sources import (
    NoImagesError,
    SourceNotFoundError,
    UnsupportedSourceError,
    decode_member,
    resolve_source,
)
from tests.coordinator_service.datasets.fixtures import write_partition, zip_folder


def test_folder_members_are_sorted_relative_paths(celeba_folder: Path):
    plan = resolve_source(celeba_folder)
    assert plan.spec.kind == "folder"
    assert plan.members == sorted(plan.members) and plan.members[0] == "000001.jpg"
    assert plan.default_name == "img_align_celeba"


def test_zip_members_skip_directories_and_macos_forks(celeba_folder: Path, tmp_path: Path):
    archive = zip_folder(celeba_folder, tmp_path / "faces.zip")
    with zipfile.ZipFile(archive, "a") as out:
        out.writestr("__MACOSX/img_align_celeba/._000001.jpg", b"fork")
    plan = resolve_source(archive)
    assert plan.spec.kind == "zip"
    assert plan.members[0] == "img_align_celeba/000001.jpg"
    assert len(plan.members) == len(list(celeba_folder.iterdir()))


def test_fingerprint_follows_content_listing(celeba_folder: Path, tmp_path: Path):
    assert resolve_source(celeba_folder).fingerprint == resolve_source(celeba_folder).fingerprint
    assert resolve_source("builtin", builtin_size=5).fingerprint != (
        resolve_source("builtin", builtin_size=6).fingerprint
    )


def test_corrupt_member_decodes_to_none(celeba_folder: Path):
    plan = resolve_source(celeba_folder)
    assert decode_member(plan.spec, "000005.jpg") is None
    image = decode_member(plan.spec, "000001.jpg")
    assert image is not None and image.shape == (3, 64, 64)


def test_missing_path(tmp_path: Path):
    with pytest.raises(SourceNotFoundError) as info:
        resolve_source(tmp_path / "img_align_celeba")
    assert "does not exist" in str(info.value) and "'builtin'" in str(info.value)


def test_plain_file_is_not_a_source(tmp_path: Path):
    path = tmp_path / "faces.tar"
    path.write_bytes(b"not a zip")
    with pytest.raises(UnsupportedSourceError, match="not a zip"):
        resolve_source(path)


def test_split_needs_a_partition_file(celeba_folder: Path):
    with pytest.raises(UnsupportedSourceError, match="list_eval_partition.txt"):
        resolve_source(celeba_folder, split="train")


def test_partition_file_one_folder_up_is_found(celeba_folder: Path, tmp_path: Path):
    parent = tmp_path / "copy"
    folder = parent / "img_align_celeba"
    folder.mkdir(parents=True)
    for path in sorted(celeba_folder.iterdir())[:4]:
        (folder / path.name).write_bytes(path.read_bytes())
    splits = write_partition(parent / "list_eval_partition.txt", sorted(os.listdir(folder)))
    assert resolve_source(folder, split="valid").members == splits["valid"]


def test_empty_split_and_unknown_split(celeba_folder: Path, tmp_path: Path):
    folder = tmp_path / "one"
    folder.mkdir()
    (folder / "000001.jpg").write_bytes((celeba_folder / "000001.jpg").read_bytes())
    write_partition(folder / "list_eval_partition.txt", ["000001.jpg"])  # train only
    with pytest.raises(NoImagesError, match="split test"):
        resolve_source(folder, split="test")
    with pytest.raises(UnsupportedSourceError, match="unknown split"):
        resolve_source(folder, split="validation")


def test_builtin_has_no_split():
    with pytest.raises(UnsupportedSourceError):
        resolve_source("builtin", split="train")
