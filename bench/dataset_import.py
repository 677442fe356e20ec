"""How fast ``gan-coordinator dataset import`` is on this machine, per 10,000 images.

Generates CelebA-like JPEGs (178x218, quality 90, about CelebA's file size) once into a
folder, zips them, then times imports of the folder and the zip with 1..N decoding
processes. Prints images/s and the extrapolation to 10,000 images and to full CelebA
(202,599 images). Run: ``python bench/dataset_import.py [--count 2000] [--dir /tmp/x]``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

from coordinator_service.datasets.importer import default_workers, import_dataset
from shared.builtin_faces import render_face

CELEBA_IMAGES = 202_599


def make_jpegs(folder: Path, count: int) -> None:
    """CelebA-sized JPEGs: built-in faces scaled to 178x218 with a little sensor noise."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(1, count + 1):
        path = folder / f"{i:06d}.jpg"
        if path.exists():
            continue
        face = Image.fromarray(render_face(i)).resize((178, 218), Image.Resampling.BICUBIC)
        noise = np.random.default_rng(i).normal(0, 4, (218, 178, 3))
        pixels = np.clip(np.asarray(face, dtype=np.float32) + noise, 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(path, quality=90)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()) / "celeba-bench")
    args = parser.parse_args()
    folder = args.dir / "img_align_celeba"
    make_jpegs(folder, args.count)
    archive = args.dir / "img_align_celeba.zip"
    if not archive.exists() or len(zipfile.ZipFile(archive).namelist()) != args.count:
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as out:
            for path in sorted(folder.iterdir())[: args.count]:
                out.write(path, f"img_align_celeba/{path.name}")
    sizes = [p.stat().st_size for p in folder.iterdir()]
    print(f"{len(sizes)} JPEGs, mean {np.mean(sizes) / 1e3:.1f} kB; CPUs here: {os.cpu_count()}")
    print(f"load average before: {os.getloadavg()[0]:.2f} (other processes share these CPUs)")

    for workers in sorted({1, default_workers()}):
        for source in (folder, archive):
            root = args.dir / "root"
            shutil.rmtree(root, ignore_errors=True)
            started, cpu = time.perf_counter(), time.process_time()
            result = import_dataset(source, root, workers=workers, progress=False)
            seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
            rate = result.manifest.image_count / seconds
            print(
                f"{source.name:<22} workers={workers}: {result.manifest.image_count} images "
                f"in {seconds:.1f} s = {rate:.0f} img/s -> {10_000 / rate:.0f} s per 10,000, "
                f"{CELEBA_IMAGES / rate / 60:.1f} min for CelebA"
                + (f"; CPU {cpu / result.decoded * 1e3:.2f} ms/img" if workers == 1 else "")
            )
    shutil.rmtree(args.dir / "root", ignore_errors=True)


if __name__ == "__main__":
    main()
