"""The current run's dataset: its description and manifest, and its image shards.

Shards are files of an imported dataset (``coordinator_service.datasets``), streamed
from disk with ``FileResponse`` and never read into memory or the database. A shard's
bytes never change (its name in the URL is pinned by ``dataset_id``, its ETag is its
sha256), so workers and any proxy may cache it for good. Both routes answer registered,
unrevoked workers and the instructor only (``ReaderDep``).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query, Response
from fastapi.responses import FileResponse

from coordinator_service.api.convert import dataset_info
from coordinator_service.api.deps import ConnDep, ReaderDep, StateDep
from coordinator_service.api.params import ShardPath
from coordinator_service.api.responses import WORKER_AUTH, errors
from coordinator_service.datasets.catalog import CatalogEntry, datasets_root, open_dataset
from coordinator_service.db.models import Run
from coordinator_service.db.runs import RunsRepo
from coordinator_service.errors import CoordinatorError
from shared.dataset_shards import DatasetDescription

router = APIRouter(tags=["dataset"])

IMMUTABLE = "public, max-age=31536000, immutable"
DatasetQuery = Annotated[
    str | None, Query(description="the dataset id from the manifest; default: the current run's")
]


async def _current_run(conn: ConnDep) -> Run:
    run = await RunsRepo(conn).latest()
    if run is None:
        raise CoordinatorError("no_run")
    return run


def _entry(state: StateDep, dataset_id: str) -> CatalogEntry:
    entry = open_dataset(datasets_root(state.settings), dataset_id)
    if entry is None:
        raise CoordinatorError("unknown_dataset", f"Dataset {dataset_id!r} is not served here.")
    return entry


@router.get("/dataset", responses=errors(*WORKER_AUTH, "no_run", "unknown_dataset"))
async def dataset(_reader: ReaderDep, conn: ConnDep, state: StateDep) -> DatasetDescription:
    """The current run's dataset; for an imported one also its manifest (shard hashes)."""
    info = dataset_info(await _current_run(conn))
    if info.kind != "sharded":
        return DatasetDescription(**info.model_dump())
    manifest = _entry(state, info.dataset_id).manifest
    return DatasetDescription(**info.model_dump(), manifest=manifest)


@router.get(
    "/dataset/shards/{k}",
    response_class=FileResponse,
    responses={
        200: {
            "content": {"application/octet-stream": {}},
            "description": "safetensors with one uint8 tensor images (n, 3, 64, 64)",
        },
        304: {"description": "Not modified (If-None-Match matched the sha256 ETag)"},
        **errors(*WORKER_AUTH, "no_run", "unknown_dataset", "unknown_shard"),
    },
)
async def shard(
    k: ShardPath,
    _reader: ReaderDep,
    conn: ConnDep,
    state: StateDep,
    dataset_id: DatasetQuery = None,
    if_none_match: Annotated[str | None, Header()] = None,
) -> Response:
    """Shard ``k`` of the current run's imported dataset, streamed from disk."""
    info = dataset_info(await _current_run(conn))
    if info.kind != "sharded" or (dataset_id is not None and dataset_id != info.dataset_id):
        raise CoordinatorError("unknown_dataset")
    entry = _entry(state, info.dataset_id)
    if not 0 <= k < len(entry.manifest.shards):
        raise CoordinatorError(
            "unknown_shard", f"This dataset has shards 0..{len(entry.manifest.shards) - 1}."
        )
    shard_entry = entry.manifest.shards[k]
    etag = f'"{shard_entry.sha256}"'
    headers = {"ETag": etag, "Cache-Control": IMMUTABLE}
    if if_none_match is not None and etag in if_none_match:
        return Response(status_code=304, headers=headers)
    return FileResponse(
        entry.path / shard_entry.filename, media_type="application/octet-stream", headers=headers
    )
