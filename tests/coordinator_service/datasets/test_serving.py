"""Serving an imported dataset: manifest and shards over HTTP, runs naming a dataset, and a
real worker training on it with an empty cache (downloads counted, damage repaired)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import torch

from coordinator_service.datasets.importer import import_dataset
from shared.dataset_shards import DatasetManifest, read_manifest
from shared.protocol import HardwareInfo
from tests.conftest import NARROW_RUN, RunningCoordinator
from tests.coordinator_service.datasets.fixtures import write_celeba_folder
from worker_client.api_client import CoordinatorClient
from worker_client.identity import IdentityStore
from worker_client.settings import WorkerSettings
from worker_client.shards import ShardCache, ShardSource
from worker_client.stopping import StopSignal
from worker_client.worker import EXIT_OK, Worker

SHARD_SIZE = 16
IMAGES = 48  # three shards of 16; units of 8 images: two units per shard


@pytest.fixture(scope="module")
def imported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, DatasetManifest]:
    """A datasets folder holding one imported JPEG dataset of 3 shards."""
    base = tmp_path_factory.mktemp("served")
    write_celeba_folder(base / "faces", IMAGES)
    root = base / "datasets"
    result = import_dataset(
        base / "faces", root, name="faces", shard_size=SHARD_SIZE, workers=1, progress=False
    )
    return root, result.manifest


@pytest.fixture
def served(
    coordinator_factory: Callable[..., RunningCoordinator], imported
) -> tuple[RunningCoordinator, DatasetManifest, Path]:
    root, manifest = imported
    return coordinator_factory(datasets_dir=root), manifest, root / manifest.dataset_id


def sharded_run(**extra: Any) -> dict[str, Any]:
    return {
        **NARROW_RUN,
        "images_per_unit": 8,
        "units_per_step": 1,
        "dataset": {"kind": "sharded", "dataset_id": "faces"},  # a name is enough
        **extra,
    }


def test_manifest_and_shards_are_served_with_immutable_etags(served):
    coordinator, manifest, folder = served
    api = coordinator.admin()  # the instructor may read the manifest too
    assert api.get("/dataset").status_code == 404  # no run yet
    run = coordinator.start_run(**sharded_run())
    assert run["config"]["dataset"] == {
        "kind": "sharded", "dataset_id": manifest.dataset_id, "name": "faces",
        "size": IMAGES, "shard_size": SHARD_SIZE,
    }  # fmt: skip
    description = api.get("/dataset").json()
    assert description["kind"] == "sharded" and description["num_images"] == IMAGES
    assert DatasetManifest.model_validate(description["manifest"]) == manifest

    assert coordinator.client().get("/dataset/shards/0").status_code == 401  # workers only
    worker = coordinator.client(coordinator.register("ada"))
    answer = worker.get("/dataset/shards/1", params={"dataset_id": manifest.dataset_id})
    assert answer.status_code == 200
    assert answer.content == (folder / "shard-00001.safetensors").read_bytes()
    assert hashlib.sha256(answer.content).hexdigest() == manifest.shards[1].sha256
    assert answer.headers["etag"] == f'"{manifest.shards[1].sha256}"'
    assert "immutable" in answer.headers["cache-control"]
    assert answer.headers["content-type"] == "application/octet-stream"
    again = worker.get("/dataset/shards/1", headers={"If-None-Match": answer.headers["etag"]})
    assert again.status_code == 304 and again.content == b""
    paths = api.get(coordinator.url + "/openapi.json").json()["paths"]
    documented = paths["/api/v1/dataset/shards/{k}"]["get"]["responses"]
    assert {"200", "304", "401", "404"} <= documented.keys()
    assert "unknown_shard" in documented["404"]["description"]
    assert "DatasetDescription" in str(paths["/api/v1/dataset"]["get"]["responses"]["200"])


def test_unknown_shard_or_dataset_is_404(served):
    coordinator, manifest, _ = served
    coordinator.start_run(**sharded_run())
    worker = coordinator.client(coordinator.register("ada"))
    for k in (3, 99):
        answer = worker.get(f"/dataset/shards/{k}")
        assert answer.status_code == 404 and answer.json()["code"] == "unknown_shard", k
    negative = worker.get("/dataset/shards/-1")  # outside the path's bounds (api/params.py)
    assert negative.status_code == 422 and negative.json()["code"] == "invalid_request"
    other = worker.get("/dataset/shards/0", params={"dataset_id": "0123456789abcdef"})
    assert other.status_code == 404 and other.json()["code"] == "unknown_dataset"
    assert worker.get("/dataset/shards/x").status_code == 422


def test_builtin_run_has_no_shards_and_unknown_dataset_refuses_the_run(served):
    coordinator, _, _ = served
    admin = coordinator.admin()
    refused = admin.post(
        "/admin/runs",
        json={"config": {**NARROW_RUN, "dataset": {"kind": "sharded", "dataset_id": "celeba"}}},
    )
    assert refused.status_code == 422 and "no imported dataset 'celeba'" in refused.json()["detail"]
    coordinator.start_run(**NARROW_RUN)
    description = coordinator.admin().get("/dataset").json()
    assert description["kind"] == "builtin" and description["manifest"] is None
    worker = coordinator.client(coordinator.register("ada"))
    answer = worker.get("/dataset/shards/0")
    assert answer.status_code == 404 and answer.json()["code"] == "unknown_dataset"


def _shards_of_leases(database_url: str, worker_id: int) -> list[int]:
    async def query() -> list[int]:
        conn = await asyncpg.connect(database_url)
        try:
            rows = await conn.fetch(
                "SELECT u.shard FROM leases l JOIN work_units u USING (unit_id) "
                "WHERE l.worker_id = $1 ORDER BY l.created_at",
                worker_id,
            )
        finally:
            await conn.close()
        return [r["shard"] for r in rows]

    return asyncio.run(query())


def _worker(coordinator: RunningCoordinator, tmp_path: Path, **options: Any) -> Worker:
    settings = WorkerSettings(
        url=coordinator.url, join_code=coordinator.join_code, name="ada",
        poll_interval=0.05, max_poll_interval=0.2, progress=False, state_dir=tmp_path / "state",
        cache_dir=tmp_path / "cache", **options,
    )  # fmt: skip
    return Worker(
        settings,
        CoordinatorClient(coordinator.url),
        IdentityStore(settings.state_dir),
        StopSignal(),
        device=torch.device("cpu"),
        hardware=HardwareInfo(),
    )


def _wait_for_iteration(coordinator: RunningCoordinator, iteration: int) -> None:
    # A worker exits right after its upload; the step follows a moment later. Claiming
    # before it would lease the old iteration and the result would (rightly) be stale.
    api = coordinator.client()
    deadline = time.monotonic() + 60
    while api.get("/status").json()["iteration"] < iteration:
        assert time.monotonic() < deadline, "the coordinator did not step"
        time.sleep(0.05)


def _cache_of(worker: Worker) -> ShardCache:
    assert worker._source is not None
    source = worker._source[1]
    assert isinstance(source, ShardSource) and source.cache is not None
    return source.cache


def test_worker_with_empty_cache_downloads_only_its_units_shards_and_repairs_damage(
    served, tmp_path: Path
):
    coordinator, manifest, _ = served
    # Local steps: every unit reads images (a synchronous G phase reads none).
    coordinator.start_run(**sharded_run(backup_after_seconds=1000.0, result_kind="local_steps"))

    first = _worker(coordinator, tmp_path, max_units=1)
    assert first.run() == EXIT_OK
    _wait_for_iteration(coordinator, 1)
    cache = _cache_of(first)
    identity = IdentityStore(tmp_path / "state").load(coordinator.url, "ada")
    assert identity is not None
    worker_id = identity.worker_id
    [shard] = _shards_of_leases(coordinator.database_url, worker_id)
    assert cache.downloaded == [shard]  # one unit, one shard, nothing else

    # Damage the cached shard: the next unit (the same shard's other half, preferred
    # because the claim says the shard is cached) must notice and fetch it again.
    path = cache.dir / manifest.shards[shard].filename
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    second = _worker(coordinator, tmp_path, max_units=1)
    assert second.run() == EXIT_OK
    _wait_for_iteration(coordinator, 2)
    repaired = _cache_of(second)
    assert repaired.damaged == [shard] and repaired.downloaded == [shard]
    assert _shards_of_leases(coordinator.database_url, worker_id) == [shard, shard]

    # Two more units, one process each (a unit claimed before the previous step would
    # be stale): the first needs a new shard, the second is that shard's other half.
    third = _worker(coordinator, tmp_path, max_units=1)
    assert third.run() == EXIT_OK
    _wait_for_iteration(coordinator, 3)
    fourth = _worker(coordinator, tmp_path, max_units=1)
    assert fourth.run() == EXIT_OK
    _wait_for_iteration(coordinator, 4)
    shards = _shards_of_leases(coordinator.database_url, worker_id)
    assert shards[2] == shards[3] != shard
    assert _cache_of(third).downloaded == [shards[2]] and _cache_of(fourth).downloaded == []
    assert sorted(_cache_of(fourth).cached()) == sorted({shard, shards[2]})
    board = {row["name"]: row for row in coordinator.client().get("/leaderboard").json()}
    assert board["ada"]["total_images"] == 4 * 8 and board["ada"]["total_work_units"] == 4
    assert read_manifest(cache.dir) == manifest  # the cache folder is a valid --dataset-dir


def test_a_local_dataset_dir_is_used_instead_of_downloading(served, tmp_path: Path):
    coordinator, _, folder = served
    coordinator.start_run(**sharded_run())
    worker = _worker(coordinator, tmp_path, max_units=1, dataset_dir=folder)
    assert worker.run() == EXIT_OK
    assert not (tmp_path / "cache").exists()
    _wait_for_iteration(coordinator, 1)


def _prefetch(coordinator: RunningCoordinator, tmp_path: Path, cache: str, *extra: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GAN_")}
    command = [
        str(Path(sys.executable).with_name("gan-worker")), "prefetch", "--url", coordinator.url,
        "--name", "ada", "--join-code", coordinator.join_code, "--no-progress",
        "--state-dir", str(tmp_path / "state"), "--cache-dir", str(tmp_path / cache), *extra,
    ]  # fmt: skip
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


def test_prefetch_downloads_every_shard_once_within_the_cache_size(served, tmp_path: Path):
    coordinator, manifest, folder = served
    coordinator.start_run(**sharded_run())
    out = _prefetch(coordinator, tmp_path, "cache")
    assert "Prefetched: 3 shards downloaded, 0 already here" in out
    cached = tmp_path / "cache" / manifest.dataset_id
    for entry in manifest.shards:
        assert (cached / entry.filename).read_bytes() == (folder / entry.filename).read_bytes()
    assert "Prefetched: 0 shards downloaded, 3 already here" in _prefetch(
        coordinator, tmp_path, "cache"
    )
    room = 2 * manifest.shards[0].bytes + 100
    small = _prefetch(coordinator, tmp_path, "small", "--cache-size", str(room))
    assert "prefetching the first 2 of 3 shards" in small
    assert len(list((tmp_path / "small" / manifest.dataset_id).glob("shard-*"))) == 2
