"""Small real-image fixtures in the layouts people keep CelebA in (no mocks: Pillow JPEGs)."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

from shared.image_sources import preprocess

CELEBA_SIZE = (178, 218)  # width, height of an aligned CelebA picture


def picture(index: int, size: tuple[int, int] = CELEBA_SIZE) -> Image.Image:
    """A smooth colour ramp with noise and a block: JPEG-compressible, different per index."""
    rng = np.random.default_rng(index)
    width, height = size
    y, x = np.mgrid[0:height, 0:width]
    base = rng.integers(0, 256, 3)
    pixels = np.stack([(base[c] + x * (c + 1) + y * (3 - c)) % 256 for c in range(3)], axis=-1)
    pixels = pixels + rng.normal(0, 12, pixels.shape)
    top, left = rng.integers(0, height // 2), rng.integers(0, width // 2)
    pixels[top : top + height // 3, left : left + width // 3] = rng.integers(0, 256, 3)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def write_celeba_folder(folder: Path, count: int, *, corrupt: tuple[int, ...] = ()) -> list[str]:
    """``000001.jpg``... like img_align_celeba/; members in ``corrupt`` are truncated."""
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for i in range(1, count + 1):
        name = f"{i:06d}.jpg"
        path = folder / name
        picture(i).save(path, quality=90)
        if i in corrupt:
            data = path.read_bytes()
            path.write_bytes(data[: len(data) // 3])  # a truncated download
        names.append(name)
    return names


def zip_folder(folder: Path, archive: Path, prefix: str = "img_align_celeba/") -> Path:
    """Zip a folder the way img_align_celeba.zip is laid out (one top folder)."""
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_STORED) as out:
        out.writestr(prefix, b"")  # the directory entry real zips carry
        for path in sorted(folder.iterdir()):
            out.write(path, prefix + path.name)
    return archive


def write_partition(path: Path, names: list[str]) -> dict[str, list[str]]:
    """``list_eval_partition.txt``: cycle names through train, train, valid, test."""
    splits: dict[str, list[str]] = {"train": [], "valid": [], "test": []}
    codes = ["0", "0", "1", "2"]
    lines = []
    for i, name in enumerate(names):
        code = codes[i % 4]
        lines.append(f"{name} {code}")
        splits[{"0": "train", "1": "valid", "2": "test"}[code]].append(name)
    path.write_text("\n".join(lines) + "\n")
    return splits


def expected_pixels(paths: list[Path]) -> np.ndarray:
    """What preprocessing gives image by image, as (N, 3, 64, 64) uint8."""
    arrays = []
    for path in paths:
        with Image.open(path) as image:
            arrays.append(preprocess(image).transpose(2, 0, 1))
    return np.stack(arrays)
