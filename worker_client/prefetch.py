"""``gan-worker prefetch``: download every shard of the current run's dataset ahead of class.

Uses the same settings, identity and cache as ``gan-worker`` itself, so the shards land
exactly where the worker will look for them; a second prefetch downloads only what is
missing or damaged. The cache folder is then also a valid ``--dataset-dir``.
"""

from __future__ import annotations

import logging

from tqdm import tqdm

from worker_client.api_client import CoordinatorClient
from worker_client.errors import ConfigError
from worker_client.identity import Identity, IdentityStore
from worker_client.settings import WorkerSettings
from worker_client.shards import open_cache

log = logging.getLogger("worker_client")


def _token(client: CoordinatorClient, settings: WorkerSettings, new_identity: bool) -> None:
    store = IdentityStore(settings.state_dir)
    stored = None if new_identity else store.load(settings.url, settings.name)
    if stored is not None:
        client.token = stored.token
        return
    if not settings.join_code:
        raise ConfigError(
            f"this worker has not joined the class at {settings.url} yet: run it once with "
            "--join-code CODE (your instructor has the code)"
        )
    from worker_client.hardware import describe, resolve_device

    answer = client.register(
        settings.join_code, settings.name, describe(resolve_device(settings.device))
    )
    store.save(Identity(settings.url, settings.name, answer.worker_id, answer.token))
    client.token = answer.token
    log.info("Joined the class as %r; identity saved in %s", answer.name, store.path)


def prefetch(settings: WorkerSettings, new_identity: bool = False) -> int:
    """Download the shards that are not cached yet (as many as --cache-size holds)."""
    with CoordinatorClient(
        settings.url,
        ca_bundle=settings.ca_bundle,
        connect_timeout=settings.connect_timeout,
        request_timeout=settings.request_timeout,
    ) as client:
        _token(client, settings, new_identity)
        cache = open_cache(client, settings)
        if cache is None:
            log.info("This run uses the built-in faces: they are drawn here, nothing to download.")
            return 0
        manifest = cache.manifest
        fits = list(manifest.shards)
        if manifest.total_bytes > cache.max_bytes:
            per_shard = max(s.bytes for s in manifest.shards)
            fits = fits[: max(1, cache.max_bytes // per_shard)]
            log.warning(
                "The dataset is %.2f GB but --cache-size is %.2f GB: prefetching the first %d "
                "of %d shards (the rest download when a unit needs them).",
                manifest.total_bytes / 1e9,
                cache.max_bytes / 1e9,
                len(fits),
                len(manifest.shards),
            )
        log.info(
            "Dataset %s (%s): %d images in %d shards, cache %s",
            manifest.name,
            manifest.dataset_id,
            manifest.image_count,
            len(manifest.shards),
            cache.dir,
        )
        with tqdm(
            total=sum(s.bytes for s in fits),
            unit="B",
            unit_scale=True,
            desc="Prefetching",
            disable=not settings.progress,
        ) as bar:
            for entry in fits:
                cache.path(entry)
                bar.update(entry.bytes)
        log.info(
            "Prefetched: %d shards downloaded, %d already here (%d were damaged and replaced).",
            len(cache.downloaded),
            len(fits) - len(cache.downloaded),
            len(cache.damaged),
        )
    return 0
