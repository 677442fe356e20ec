"""``gan-coordinator dataset import|list``: the argparse sub-parser and its handlers.

Wiring into the coordinator's CLI is two lines::

    add_dataset_parser(subparsers)          # where the sub-commands are built
    ...args.handler(args) if hasattr(...)   # handlers are set with set_defaults(handler=...)

Handlers return the process exit code: 0 on success, 1 on an import error (the message
goes to stderr and says what to do), 130 on Ctrl+C (a re-run continues the import).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from coordinator_service.datasets.catalog import (
    datasets_root,
    list_datasets,
    partial_imports,
)
from coordinator_service.datasets.importer import import_dataset
from coordinator_service.datasets.sources import SPLITS, DatasetImportError
from coordinator_service.settings import Settings


def _megabytes(n: int) -> str:
    return f"{n / 1e6:,.1f} MB"


def add_dataset_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``dataset`` (with ``import`` and ``list``) to a CLI's sub-parsers."""
    dataset = subparsers.add_parser(
        "dataset",
        help="import CelebA (or any images) into shards; list imported datasets",
        description="Datasets are imported once into 64x64 shards that workers download.",
    )
    dataset.set_defaults(handler=lambda _args: _usage(dataset))
    actions = dataset.add_subparsers(dest="dataset_command", metavar="{import,list}")

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="where datasets live (default: GAN_DATASETS_DIR, else <GAN_DATA_DIR>/datasets)",
    )

    imp = actions.add_parser(
        "import",
        parents=[common],
        help="import a folder, a zip, torchvision's celeba/ root, or 'builtin'",
        description=(
            "PATH: img_align_celeba/ (a folder of JPEGs), img_align_celeba.zip (read in "
            "place), torchvision's celeba/ root with list_eval_partition.txt, any "
            "ImageFolder-style tree, or the word 'builtin'. Interrupted? Run it again."
        ),
    )
    imp.add_argument("path", help="folder, zip, celeba/ root, or 'builtin'")
    imp.add_argument("--split", choices=SPLITS, default="all", help="CelebA split (default all)")
    imp.add_argument("--name", default=None, help="display name (default from the path)")
    imp.add_argument(
        "--workers",
        type=int,
        default=None,
        help="decoding processes (default: one per CPU, one per 5,000 images at most)",
    )
    imp.add_argument("--shard-size", type=int, default=1000, help="images per shard (default 1000)")
    imp.add_argument("--builtin-size", type=int, default=20_000, help="images for 'builtin'")
    imp.add_argument("--builtin-seed", type=int, default=0, help="seed for 'builtin'")
    imp.add_argument("--quiet", action="store_true", help="no progress bar")
    imp.set_defaults(handler=handle_import)

    lst = actions.add_parser("list", parents=[common], help="show imported datasets")
    lst.set_defaults(handler=handle_list)
    return dataset


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


def _root(args: argparse.Namespace) -> Path:
    if args.data_dir is not None:
        return Path(args.data_dir)
    try:
        settings = Settings()  # GAN_DATASETS_DIR, else <GAN_DATA_DIR>/datasets
    except ValueError:  # production secrets unset: they do not matter for importing
        settings = Settings(environment="development")
    return datasets_root(settings)


def handle_import(args: argparse.Namespace) -> int:
    """Run ``dataset import``; print the new dataset's id and size."""
    root = _root(args)
    try:
        result = import_dataset(
            args.path,
            root,
            split=args.split,
            name=args.name,
            workers=args.workers,
            shard_size=args.shard_size,
            builtin_size=args.builtin_size,
            builtin_seed=args.builtin_seed,
            progress=not args.quiet,
        )
    except DatasetImportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted: run the same command again to continue.", file=sys.stderr)
        return 130
    m = result.manifest
    verb = "already imported" if result.already_imported else "imported"
    print(f"{verb}: {m.name}  id {m.dataset_id}")
    print(
        f"  {m.image_count:,} images in {len(m.shards)} shards of {m.shard_size} "
        f"({_megabytes(m.total_bytes)}), {m.skipped} skipped as unreadable"
    )
    if not result.already_imported:
        rate = result.decoded / result.seconds if result.seconds else 0.0
        resumed = f", {result.resumed_shards} shards resumed" if result.resumed_shards else ""
        print(f"  {result.seconds:.1f} s ({rate:,.0f} images/s){resumed}")
    print(f"  in {result.path}")
    return 0


def handle_list(args: argparse.Namespace) -> int:
    """Run ``dataset list``: one line per imported dataset, then unfinished imports."""
    root = _root(args)
    entries = list_datasets(root)
    if not entries:
        print(f"no datasets imported in {root}; try: gan-coordinator dataset import builtin")
    else:
        print(f"{'DATASET ID':<16}  {'IMAGES':>9}  {'SHARDS':>6}  {'SIZE':>10}  NAME / SOURCE")
        for entry in entries:
            m = entry.manifest
            print(
                f"{m.dataset_id:<16}  {m.image_count:>9,}  {len(m.shards):>6}  "
                f"{_megabytes(m.total_bytes):>10}  {m.name}  ({m.source})"
            )
    for partial in partial_imports(root):
        print(f"unfinished import: {partial} (re-run its import command to continue)")
    return 0
