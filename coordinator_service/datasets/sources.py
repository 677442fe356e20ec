"""Where an import reads images from: CelebA as people have it, any image tree, or builtin.

Accepted (checked in this order by :func:`resolve_source`):

- ``builtin``: the procedurally drawn faces of ``shared.builtin_faces``;
- a ``.zip`` file (e.g. ``img_align_celeba.zip``), read in place, never unpacked;
- torchvision's CelebA layout: a ``celeba/`` folder (or its parent) holding
  ``list_eval_partition.txt`` and ``img_align_celeba/`` or ``img_align_celeba.zip``;
- any folder: every picture below it, recursively (``img_align_celeba/`` or an
  ImageFolder tree of class subfolders; the classes are ignored, a GAN needs no labels).

Members are sorted by their relative path, so the same pictures always import in the
same order and give the same dataset id (a folder and a zip of it give the same id).
``split`` (train/valid/test) keeps the members that ``list_eval_partition.txt`` assigns
to it; the file is looked for next to the images and one folder up.

Errors::

    DatasetImportError            anything that stops an import; the message says what to do
    ├── SourceNotFoundError       the path does not exist
    ├── NoImagesError             nothing decodable was found there
    └── UnsupportedSourceError    a file that is not a zip, a split without a partition file
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image

from shared.builtin_faces import render_face
from shared.image_sources import IMAGE_SUFFIXES, preprocess

SourceKind = Literal["folder", "zip", "builtin"]
Split = Literal["all", "train", "valid", "test"]
SPLITS: tuple[str, ...] = ("all", "train", "valid", "test")
PARTITION_FILE = "list_eval_partition.txt"
_SPLIT_CODES = {"train": "0", "valid": "1", "test": "2"}
_WHAT_TO_GIVE = (
    "Give the img_align_celeba/ folder, img_align_celeba.zip, torchvision's celeba/ folder "
    "(with list_eval_partition.txt), any folder of images, or 'builtin'."
)


class DatasetImportError(Exception):
    """An import cannot go on; the message tells the instructor what to do instead."""


class SourceNotFoundError(DatasetImportError):
    """The given path does not exist."""


class NoImagesError(DatasetImportError):
    """The source holds no image that could be decoded."""


class UnsupportedSourceError(DatasetImportError):
    """The path exists but is not something an import can read."""


@dataclass(frozen=True)
class SourceSpec:
    """What a decoding process needs to read one member (small and picklable)."""

    kind: SourceKind
    root: str = ""
    builtin_seed: int = 0


@dataclass(frozen=True)
class SourcePlan:
    """A resolved source: how to read it, its members in import order, and labels."""

    spec: SourceSpec
    members: list[str]
    description: str
    default_name: str
    fingerprint: str


def _is_image_name(name: str) -> bool:
    base = name.rsplit("/", 1)[-1]
    # "._x.jpg" are macOS resource forks and "__MACOSX/" their folder in zips: not images.
    return (
        not base.startswith(".")
        and not name.startswith("__MACOSX/")
        and Path(base).suffix.lower() in IMAGE_SUFFIXES
    )


def _fingerprint(spec: SourceSpec, split: str, entries: list[tuple[str, int]]) -> str:
    digest = hashlib.sha256(f"{spec.kind}\n{spec.root}\n{spec.builtin_seed}\n{split}".encode())
    for name, size in entries:
        digest.update(f"\n{name}\t{size}".encode())
    return digest.hexdigest()[:16]


def _read_partition(path: Path, split: str) -> set[str]:
    code = _SPLIT_CODES[split]
    keep = set()
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1] == code:
            keep.add(parts[0])
    return keep


def _find_partition(*folders: Path) -> Path | None:
    for folder in folders:
        if (folder / PARTITION_FILE).is_file():
            return folder / PARTITION_FILE
    return None


def _celeba_root(path: Path) -> Path | None:
    for root in (path, path / "celeba"):
        has_images = (root / "img_align_celeba").is_dir() or (
            root / "img_align_celeba.zip"
        ).is_file()
        if (root / PARTITION_FILE).is_file() and has_images:
            return root
    return None


def _zip_entries(path: Path) -> list[tuple[str, int]]:
    with zipfile.ZipFile(path) as archive:
        return sorted(
            (info.filename, info.file_size)
            for info in archive.infolist()
            if not info.is_dir() and _is_image_name(info.filename)
        )


def _folder_entries(root: Path) -> list[tuple[str, int]]:
    entries = []
    for path in root.rglob("*"):
        relative = path.relative_to(root).as_posix()
        if _is_image_name(relative) and path.is_file():
            entries.append((relative, path.stat().st_size))
    return sorted(entries)


def resolve_source(
    source: str | Path,
    *,
    split: str = "all",
    builtin_size: int = 20_000,
    builtin_seed: int = 0,
) -> SourcePlan:
    """Work out what ``source`` is and list its members; touches nothing on disk."""
    if split not in SPLITS:
        raise UnsupportedSourceError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    if str(source) == "builtin":
        if split != "all":
            raise UnsupportedSourceError("the built-in faces have no splits; leave out --split")
        if builtin_size < 1:
            raise NoImagesError("the built-in dataset needs a size of at least 1")
        spec = SourceSpec("builtin", builtin_seed=builtin_seed)
        entries = [(str(i), 0) for i in range(builtin_size)]
        return SourcePlan(
            spec=spec,
            members=[name for name, _ in entries],  # indices in order, not sorted as text
            description=f"built-in faces, {builtin_size} images, seed {builtin_seed}",
            default_name=f"builtin-faces-{builtin_size}-seed{builtin_seed}",
            fingerprint=_fingerprint(spec, split, [("size", builtin_size)]),
        )

    path = Path(source).expanduser().resolve()
    if not path.exists():
        raise SourceNotFoundError(f"{path} does not exist. {_WHAT_TO_GIVE}")
    partition: Path | None
    if path.is_file():
        if not zipfile.is_zipfile(path):
            raise UnsupportedSourceError(f"{path} is a file but not a zip archive. {_WHAT_TO_GIVE}")
        spec, label = SourceSpec("zip", str(path)), f"zip {path}"
        entries = _zip_entries(path)
        partition = _find_partition(path.parent)
        name = path.stem
    elif (celeba := _celeba_root(path)) is not None:
        partition = celeba / PARTITION_FILE
        folder = celeba / "img_align_celeba"
        if folder.is_dir() and (folder_entries := _folder_entries(folder)):
            spec, label = SourceSpec("folder", str(folder)), f"CelebA {folder}"
            entries = folder_entries
        else:
            archive = celeba / "img_align_celeba.zip"
            spec, label = SourceSpec("zip", str(archive)), f"CelebA {archive}"
            entries = _zip_entries(archive) if archive.is_file() else []
        name = "celeba"
    else:
        spec, label = SourceSpec("folder", str(path)), f"folder {path}"
        entries = _folder_entries(path)
        partition = _find_partition(path, path.parent)
        name = path.name

    if split != "all":
        if partition is None:
            raise UnsupportedSourceError(
                f"--split {split} needs {PARTITION_FILE} next to the images or one folder up "
                f"(CelebA ships it); none was found for {path}. Use --split all or add the file."
            )
        keep = _read_partition(partition, split)
        entries = [(m, size) for m, size in entries if m.rsplit("/", 1)[-1] in keep]
        label += f", split {split} ({PARTITION_FILE})"
        name += f"-{split}"
    if not entries:
        suffixes = ", ".join(sorted(IMAGE_SUFFIXES))
        where = f"split {split} of {path}" if split != "all" else str(path)
        raise NoImagesError(f"no images ({suffixes}) found in {where}. {_WHAT_TO_GIVE}")
    return SourcePlan(
        spec=spec,
        members=[m for m, _ in entries],
        description=label,
        default_name=name,
        fingerprint=_fingerprint(spec, split, entries),
    )


# One open ZipFile per decoding process, so a worker does not re-read the central
# directory (200k entries for CelebA) for every batch. Per process, never shared.
_open_zips: dict[str, zipfile.ZipFile] = {}


def close_archives() -> None:
    """Close the zip files this process opened for decoding."""
    while _open_zips:
        _open_zips.popitem()[1].close()


def _open_member(spec: SourceSpec, member: str) -> Image.Image:
    if spec.kind == "folder":
        return Image.open(Path(spec.root) / member)
    archive = _open_zips.get(spec.root)
    if archive is None:
        archive = _open_zips[spec.root] = zipfile.ZipFile(spec.root)
    with archive.open(member) as handle:
        data = handle.read()  # reading it whole checks the CRC
    return Image.open(io.BytesIO(data))


def decode_member(spec: SourceSpec, member: str) -> np.ndarray | None:
    """One member as uint8 (3, 64, 64), or None when it is corrupt or unreadable."""
    if spec.kind == "builtin":
        return np.ascontiguousarray(render_face(int(member), spec.builtin_seed).transpose(2, 0, 1))
    try:
        with _open_member(spec, member) as image:
            pixels = preprocess(image)
    except (OSError, ValueError, SyntaxError, zipfile.BadZipFile, Image.DecompressionBombError):
        return None
    return np.ascontiguousarray(pixels.transpose(2, 0, 1))


def decode_batch(spec: SourceSpec, members: list[str]) -> list[np.ndarray | None]:
    """Decode several members in order (one task for a decoding process)."""
    return [decode_member(spec, member) for member in members]
