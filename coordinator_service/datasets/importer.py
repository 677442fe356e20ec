"""Import a source once into 64x64 uint8 shards plus a manifest (``shared.dataset_shards``).

How an import stays safe to interrupt:

1. Nothing is written before the source resolves to at least one member.
2. Shards go into ``<root>/.partial-<source fingerprint>/``; the fingerprint hashes the
   source kind, path, split and every member's name and size, so a re-run of the same
   command finds the same folder. Each shard is written atomically, then a small
   progress record ``shard-NNNNN.json`` saying where in the member list it ended and
   which members were skipped. A re-run keeps the longest run of shards whose records
   and bytes check out and decodes on from there.
3. The manifest is written last, then the folder is renamed to ``<root>/<dataset_id>/``
   in one step. The catalog only lists folders named by an id holding a valid manifest,
   so a half-done import is never visible as a dataset.

Members are imported in a fixed shuffle of their listed order (the same content still
gives the same dataset). Folders and archives
list files by path, and an ImageFolder's paths are sorted by class: unshuffled, every
shard would hold one class, and so would every micro-batch cut from a shard (measured
on Fashion-MNIST: 892 of 938 micro-batches of one class, and a generator collapsed onto
dresses). Shuffled, each shard is a uniform sample of the whole, so the epoch's walk
(``shared.epoch_order``) gives the class mix of a shuffled DataLoader while a worker
still downloads only the shards its units touch.

Decoding runs in a process pool (``workers``), batches of members in flight at once and
results consumed in member order, so parallelism never changes the bytes.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import shutil
import time
from collections import deque
from collections.abc import Callable, Generator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing.context import BaseContext
from pathlib import Path
from typing import TypeVar

import numpy as np
from pydantic import BaseModel
from tqdm import tqdm

from coordinator_service.datasets.catalog import find_by_fingerprint
from coordinator_service.datasets.sources import (
    NoImagesError,
    SourcePlan,
    SourceSpec,
    close_archives,
    decode_batch,
    resolve_source,
)
from shared.dataset_shards import (
    DEFAULT_SHARD_SIZE,
    IMAGE_SIZE,
    DatasetManifest,
    ShardEntry,
    dataset_id_for,
    encode_shard,
    read_manifest,
    shard_filename,
    verify_shard,
    write_atomic,
    write_manifest,
)

_T = TypeVar("_T")
BATCH = 32  # members per decoding task: big enough to amortise the pickling
MAX_SKIPPED_EXAMPLES = 20
PER_PROCESS = 5000  # images that make another decoding process worth its start-up


class ImportInterrupted(Exception):
    """Raised by the ``stop_after_shards`` hook: the import stopped, a re-run continues."""


class _Progress(BaseModel):
    """The record written beside each finished shard of an unfinished import."""

    shard: ShardEntry
    next_member: int
    skipped: list[str]


@dataclass
class ImportResult:
    """What an import produced."""

    manifest: DatasetManifest
    path: Path
    already_imported: bool = False
    resumed_shards: int = 0
    new_shards: int = 0
    seconds: float = 0.0
    decoded: int = 0  # members decoded in this run


def default_workers() -> int:
    """One decoding process per CPU this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


def auto_workers(remaining: int) -> int:
    """Decoding processes worth starting for ``remaining`` images.

    A process costs about 2.5 s of CPU to start (it imports Pillow and torch), the time
    it takes to decode some 5,000 images, so small imports stay in this process."""
    return max(1, min(default_workers(), remaining // PER_PROCESS))


def shuffled(members: Sequence[_T]) -> list[_T]:
    """The import order: a fixed permutation of the listed members, the same for every
    source of that many (a folder and its zip still give the same dataset)."""
    order = np.random.default_rng([len(members), 0x5EED]).permutation(len(members))
    return [members[i] for i in order.tolist()]


def _record_path(partial: Path, k: int) -> Path:
    return partial / shard_filename(k).replace(".safetensors", ".json")


def _resume(partial: Path, shard_size: int) -> list[_Progress]:
    """The longest prefix of shards whose progress record and bytes both check out."""
    done: list[_Progress] = []
    while (record_path := _record_path(partial, len(done))).is_file():
        try:
            record = _Progress.model_validate_json(record_path.read_bytes())
        except ValueError:
            break
        k = len(done)
        if record.shard.index != k or not verify_shard(partial / shard_filename(k), record.shard):
            break
        done.append(record)
        if record.shard.count < shard_size:  # only the last shard is short
            break
    # Anything beyond the good prefix, and temporary files, are from a crash: drop them.
    for stale in partial.iterdir():
        beyond = stale.name.startswith("shard-") and int(stale.name[6:11]) >= len(done)
        if beyond or stale.name.endswith(".tmp"):
            stale.unlink()
    return done


def _decoded(
    spec: SourceSpec, members: list[str], start: int, workers: int
) -> Generator[np.ndarray | None, None, None]:
    """Decode ``members[start:]`` in order, ``workers`` processes at a time."""
    batches = (members[i : i + BATCH] for i in range(start, len(members), BATCH))
    if workers <= 1:
        for batch in batches:
            yield from decode_batch(spec, batch)
        return
    # forkserver/spawn, never fork: the parent may hold torch threads and fork copies
    # them half-locked. The fork server imports the decoder (Pillow, and torch through
    # shared/) once, about 2.5 s, and forks every child from that warm process.
    if "forkserver" in multiprocessing.get_all_start_methods():
        forkserver = multiprocessing.get_context("forkserver")
        forkserver.set_forkserver_preload([decode_batch.__module__])
        context: BaseContext = forkserver
    else:
        context = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=context)
    in_flight: deque[Future[list[np.ndarray | None]]] = deque()
    try:
        for batch in batches:
            in_flight.append(pool.submit(decode_batch, spec, batch))
            if len(in_flight) >= 4 * workers:
                yield from in_flight.popleft().result()
        while in_flight:
            yield from in_flight.popleft().result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def import_dataset(
    source: str | Path,
    data_root: str | Path,
    *,
    split: str = "all",
    name: str | None = None,
    workers: int | None = None,
    shard_size: int = DEFAULT_SHARD_SIZE,
    builtin_size: int = 20_000,
    builtin_seed: int = 0,
    progress: bool = True,
    stop_after_shards: int | None = None,
    on_shard: Callable[[ShardEntry], None] | None = None,
) -> ImportResult:
    """Import ``source`` into ``data_root/<dataset_id>/``; re-running continues or no-ops."""
    started = time.monotonic()
    if shard_size < 1:
        raise ValueError("shard_size must be at least 1")
    plan: SourcePlan = resolve_source(
        source, split=split, builtin_size=builtin_size, builtin_seed=builtin_seed
    )
    root = Path(data_root)
    fingerprint = f"{plan.fingerprint}-{shard_size}-shuffled"
    members = shuffled(plan.members)
    existing = find_by_fingerprint(root, fingerprint)
    if existing is not None:
        return ImportResult(existing.manifest, existing.path, already_imported=True)

    partial = root / f".partial-{fingerprint}"
    partial.mkdir(parents=True, exist_ok=True)
    done = _resume(partial, shard_size)
    cursor = done[-1].next_member if done else 0
    finished = bool(done) and done[-1].shard.count < shard_size
    decoded = 0
    trailing_skipped: list[str] = []

    bar = tqdm(
        total=len(members),
        initial=cursor,
        unit="img",
        desc=f"import {plan.default_name}",
        disable=not progress,
        smoothing=0.05,
    )
    buffer: list[np.ndarray] = []
    buffer_skipped: list[str] = []

    def flush(next_member: int) -> None:
        k = len(done)
        data = encode_shard(np.stack(buffer))
        entry = ShardEntry(
            index=k, count=len(buffer), sha256=hashlib.sha256(data).hexdigest(), bytes=len(data)
        )
        write_atomic(partial / shard_filename(k), data)
        record = _Progress(shard=entry, next_member=next_member, skipped=list(buffer_skipped))
        write_atomic(_record_path(partial, k), record.model_dump_json().encode())
        done.append(record)
        buffer.clear()
        buffer_skipped.clear()
        if on_shard is not None:
            on_shard(entry)
        if stop_after_shards is not None and len(done) - resumed >= stop_after_shards:
            raise ImportInterrupted(f"stopped after {len(done)} shards as asked")

    resumed = len(done)
    try:
        if not finished:
            if workers is None:
                workers = auto_workers(len(members) - cursor)
            stream = _decoded(plan.spec, members, cursor, workers)
            try:
                for position, images in enumerate(stream, start=cursor):
                    decoded += 1
                    bar.update(1)
                    if images is None:
                        buffer_skipped.append(members[position])
                        continue
                    buffer.append(images)
                    if len(buffer) == shard_size:
                        flush(position + 1)
                if buffer:
                    flush(len(members))
            finally:
                stream.close()
                close_archives()
            trailing_skipped = list(buffer_skipped)
    finally:
        bar.close()

    skipped = [name for record in done for name in record.skipped] + trailing_skipped
    if not done:
        shutil.rmtree(partial, ignore_errors=True)
        raise NoImagesError(
            f"none of the {len(members)} files in {plan.description} could be decoded "
            f"as an image (first: {', '.join(skipped[:3])}); nothing was imported."
        )
    shards = [record.shard for record in done]
    manifest = DatasetManifest(
        name=name or plan.default_name,
        dataset_id=dataset_id_for(shards),
        image_count=sum(s.count for s in shards),
        image_size=IMAGE_SIZE,
        shard_size=shard_size,
        shards=shards,
        source=plan.description,
        source_fingerprint=fingerprint,
        skipped=len(skipped),
        skipped_examples=skipped[:MAX_SKIPPED_EXAMPLES],
    )
    final = root / manifest.dataset_id
    already = (final / "manifest.json").is_file()
    if already:
        shutil.rmtree(partial)
        manifest = read_manifest(final)
    else:
        write_manifest(partial, manifest)
        os.rename(partial, final)  # the one step that makes the dataset visible
        for k in range(len(shards)):
            _record_path(final, k).unlink(missing_ok=True)
    return ImportResult(
        manifest=manifest,
        path=final,
        already_imported=already,
        resumed_shards=resumed,
        new_shards=len(done) - resumed,
        seconds=time.monotonic() - started,
        decoded=decoded,
    )
