"""Image sources for training: anything with ``len()`` and ``load(indices)``.

``load`` returns uint8 images (N, 3, 64, 64) in the order asked for. The built-in faces
(``shared.builtin_faces``) and a plain folder of pictures live behind this one
interface, so the training loop never knows where pixels come from.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from PIL import Image

from shared.builtin_faces import BuiltinFaces
from shared.dataset_shards import MANIFEST_NAME, ShardedDataset

IMAGE_SIZE = 64
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


class ImageSource(Protocol):
    """What the training loop needs from a dataset."""

    @property
    def name(self) -> str: ...

    def __len__(self) -> int: ...

    def load(self, indices: Sequence[int]) -> torch.Tensor: ...


def preprocess(image: Image.Image, size: int = IMAGE_SIZE) -> np.ndarray:
    """DCGAN-on-CelebA preprocessing: RGB, short side to ``size``, centre crop; HWC uint8."""
    image = image.convert("RGB")
    width, height = image.size
    scale = size / min(width, height)
    resized = image.resize(
        (max(size, round(width * scale)), max(size, round(height * scale))),
        Image.Resampling.BILINEAR,
    )
    left = (resized.width - size) // 2
    top = (resized.height - size) // 2
    return np.asarray(resized.crop((left, top, left + size, top + size)), dtype=np.uint8)


class FolderImages:
    """Every picture below a folder (recursively, sorted by path), decoded on demand."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"{self.root} is not a folder of images")
        self.paths = sorted(
            p for p in self.root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
        )
        if not self.paths:
            raise FileNotFoundError(
                f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) found below {self.root}"
            )
        self.name = f"folder:{self.root}"

    def __len__(self) -> int:
        return len(self.paths)

    def load(self, indices: Sequence[int]) -> torch.Tensor:
        """Decode and preprocess the images at ``indices`` into (N, 3, 64, 64) uint8."""
        arrays = []
        for index in indices:
            with Image.open(self.paths[index]) as image:
                arrays.append(preprocess(image))
        return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


BUILTIN_SHARD_SIZE = 1000  # the coordinator's virtual shards of the built-in faces


def open_source(spec: str, *, builtin_size: int = 20_000, seed: int = 0) -> ImageSource:
    """``builtin`` for the generated faces, a folder imported with ``gan-coordinator
    dataset import`` (it holds ``manifest.json``), or any other folder of images."""
    if spec == "builtin":
        return BuiltinFaces(size=builtin_size, seed=seed)
    if (Path(spec) / MANIFEST_NAME).is_file():
        return ShardedDataset(spec)
    return FolderImages(spec)


class FirstChannels:
    """A source keeping its first ``channels`` channels (grey images stored as RGB)."""

    def __init__(self, source: ImageSource, channels: int) -> None:
        self.source, self.channels, self.name = source, channels, source.name

    def __len__(self) -> int:
        return len(self.source)

    def load(self, indices: Sequence[int]) -> torch.Tensor:
        """The inner source's images, cut to ``channels``."""
        return self.source.load(indices)[:, : self.channels].contiguous()


def shard_size_of(source: ImageSource) -> int:
    """The shard size an epoch's walk uses for this source: an imported dataset's own
    (the coordinator's order), the built-in faces' virtual one, and for a plain folder
    the whole folder (one uniform shuffle)."""
    if isinstance(source, FirstChannels):
        return shard_size_of(source.source)
    if isinstance(source, ShardedDataset):
        return source.manifest.shard_size
    if isinstance(source, BuiltinFaces):
        return BUILTIN_SHARD_SIZE
    return len(source)
