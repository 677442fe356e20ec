"""``gan-coordinator export|sample``: the argparse side, free of torch so ``--help`` is quick.

Wiring into the coordinator's CLI::

    add_export_parsers(subparsers)      # where the sub-commands are built
    args.func(args, settings)           # handlers are set with set_defaults(func=...)

The work itself is in :mod:`coordinator_service.export`, imported only when a command runs.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

from coordinator_service.settings import Settings


def add_export_parsers(subparsers: Any) -> None:
    """Add ``export`` and ``sample`` to a CLI's sub-parsers."""
    export = subparsers.add_parser(
        "export",
        help="write the class's generator (an iteration's weights) as a safetensors file",
        description="The generator of a stored iteration with its config in the metadata; "
        "the newest stored iteration of the current (or latest) run by default. With --url "
        "it downloads the weights from a running coordinator, as a worker does, with the "
        "admin token (the weights are served to the class's workers and the instructor "
        "only); without, it "
        "reads the database (DATABASE_URL, or the embedded one in the data folder) of a "
        "coordinator that need not be running.",
    )
    export.add_argument(
        "--url", default=None,
        help="a running coordinator's base URL, e.g. http://127.0.0.1:8000 (default: read "
        "the database instead)",
    )  # fmt: skip
    export.add_argument(
        "--admin-token", default=None,
        help="with --url: the instructor's token, which the weights download needs "
        "(default: GAN_ADMIN_TOKEN)",
    )  # fmt: skip
    export.add_argument(
        "--cacert", default=None,
        help="CA bundle for an HTTPS coordinator (default: the system's certificates)",
    )  # fmt: skip
    export.add_argument(
        "-o", "--output", type=Path, default=Path("generator.safetensors"),
        help="file to write (default: generator.safetensors)",
    )  # fmt: skip
    export.add_argument(
        "--run", dest="run_id", type=int, help="run id (default: the current or latest run)"
    )
    export.add_argument(
        "--iteration", type=int,
        help="iteration (published version) to export (default: the newest stored)",
    )  # fmt: skip
    export.set_defaults(func=cmd_export)

    sample = subparsers.add_parser(
        "sample",
        help="draw a PNG grid of faces from an exported generator (no database needed)",
    )
    sample.add_argument("generator", type=Path, help="a file written by gan-coordinator export")
    sample.add_argument(
        "-o", "--output", type=Path, default=Path("samples.png"),
        help="PNG to write (default: samples.png)",
    )  # fmt: skip
    sample.add_argument("--count", type=int, default=64, help="number of images (default 64)")
    sample.add_argument("--nrow", type=int, default=8, help="images per row (default 8)")
    sample.add_argument("--seed", type=int, help="noise seed (default: the run's seed)")
    sample.set_defaults(func=cmd_sample)


def cmd_export(args: argparse.Namespace, settings: Settings) -> int:
    """``gan-coordinator export``: download or read W_t, write the file; the exit code."""
    from coordinator_service.cli import database
    from coordinator_service.export import ExportError, export_generator, fetch_generator

    wanted = {"run_id": args.run_id, "iteration": args.iteration}
    try:
        if args.url:
            token = args.admin_token or settings.admin_token
            exported = fetch_generator(
                args.url, verify=args.cacert or True, admin_token=token, **wanted
            )
        else:
            with database(settings) as (url, _):
                exported = asyncio.run(export_generator(url, **wanted))
    except ExportError as exc:
        print(f"gan-coordinator export: {exc}", file=sys.stderr)
        return 1
    args.output.write_bytes(exported.data)
    print(
        f"Wrote the generator of run {exported.run_id} at iteration {exported.iteration} "
        f"to {args.output} ({len(exported.data) / 1e6:.1f} MB)"
    )
    return 0


def cmd_sample(args: argparse.Namespace, settings: Settings) -> int:
    """``gan-coordinator sample``: draw the grid; the exit code."""
    if args.count < 1 or args.nrow < 1:
        print("gan-coordinator sample: --count and --nrow must be at least 1", file=sys.stderr)
        return 2
    from coordinator_service.export import ExportError, sample_png

    try:
        png = sample_png(
            args.generator.read_bytes(), count=args.count, seed=args.seed, nrow=args.nrow
        )
    except (OSError, ExportError) as exc:
        print(f"gan-coordinator sample: {exc}", file=sys.stderr)
        return 1
    args.output.write_bytes(png)
    print(f"Wrote {args.count} samples from {args.generator} to {args.output}")
    return 0
