"""Simulated workers for coordinator tests: valid results without (or with) real compute."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import asyncpg
import httpx
import torch

from shared.builtin_faces import BuiltinFaces
from shared.codec import decode_snapshot, encode_result
from shared.models import ModelConfig, StateSpec, build_models, load_model_state
from shared.protocol import API_PREFIX, LEASE_HEADER, LOCAL_KINDS, WorkUnit
from shared.strategies import strategy_for
from shared.unit_result import UnitMetrics, UnitResult


def model_config(unit: WorkUnit) -> ModelConfig:
    m = unit.run.model
    return ModelConfig(m.latent_dim, m.generator_features, m.discriminator_features)


def fake_result(unit: WorkUnit, *, seed: int | None = None, scale: float = 1e-3,
                nan: bool = False) -> UnitResult:  # fmt: skip
    """A valid-looking result for ``unit``: seeded random tensors of the unit's layout."""
    strategy = strategy_for(unit.run)
    layout = strategy.layout(unit.iteration, StateSpec.from_config(model_config(unit)))
    rng = torch.Generator().manual_seed(unit.unit_id if seed is None else seed)
    tensors = {k: torch.randn(s, generator=rng) * scale for k, s in layout.tensors.items()}
    buffers = {k: torch.rand(s, generator=rng) + 0.5 for k, s in layout.buffers.items()}
    if nan:
        next(iter(tensors.values())).view(-1)[0] = float("nan")
    n = len(unit.image_indices)
    extra = {"batch_size": str(unit.run.batch_size)}
    if unit.run.result_kind in LOCAL_KINDS:
        extra["inner_steps"] = str(-(-n // unit.run.batch_size))
    return UnitResult(
        kind=layout.kind,
        iteration=unit.iteration,
        num_samples=strategy.expected_samples(n),
        tensors=tensors,
        buffers=buffers,
        metrics=UnitMetrics(0.7, 1.3, 0.5, 0.5),
        extra=extra,
    )


def fake_body(unit: WorkUnit, **kwargs: Any) -> bytes:
    return encode_result(fake_result(unit, **kwargs))


def real_result(unit: WorkUnit, weights: bytes) -> UnitResult:
    """What a real worker computes for ``unit`` at the downloaded (whole) weights."""
    config = model_config(unit)
    snapshot = decode_snapshot(weights, StateSpec.from_config(config))
    generator, discriminator = build_models(config)
    load_model_state(generator, discriminator, snapshot.weights)
    dataset = unit.run.dataset
    images = BuiltinFaces(dataset.num_images, dataset.builtin_seed).load(unit.image_indices)
    return strategy_for(unit.run).compute(
        generator, discriminator, images, unit.image_indices, version=unit.iteration
    )


def api_client(url: str, token: str | None = None) -> httpx.Client:
    """A client of a coordinator's /api/v1, with a bearer token when given."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=url + API_PREFIX, headers=headers, timeout=60)


def claim_when_ready(client: httpx.Client, timeout: float = 120) -> WorkUnit:
    """The next unit, once the aggregator has published the version it belongs to."""
    deadline = time.monotonic() + timeout
    while (unit := claim(client)) is None:
        assert time.monotonic() < deadline, "no unit came"
        time.sleep(0.05)
    return unit


def wait_for_version(client: httpx.Client, version: int, timeout: float = 120) -> bytes:
    """The served weights of ``version``, once it is published."""
    deadline = time.monotonic() + timeout
    while (response := client.get(f"/weights/{version}")).status_code != 200:
        assert time.monotonic() < deadline, response.text
        time.sleep(0.05)
    return response.content


def claim(client: httpx.Client, cached_shards: list[int] | None = None) -> WorkUnit | None:
    response = client.post("/work-units/claim", json={"cached_shards": cached_shards or []})
    if response.status_code == 204:
        return None
    assert response.status_code == 200, response.text
    return WorkUnit.model_validate(response.json())


def upload(client: httpx.Client, unit: WorkUnit, body: bytes,
           lease_id: str | None = None) -> httpx.Response:  # fmt: skip
    return client.post(
        f"/work-units/{unit.unit_id}/result",
        content=body,
        headers={LEASE_HEADER: lease_id or unit.lease_id,
                 "Content-Type": "application/octet-stream"},
    )  # fmt: skip


async def database_fingerprint(database_url: str) -> dict[str, str]:
    """An md5 of every table's rows: equal fingerprints mean nothing changed."""
    conn = await asyncpg.connect(database_url)
    try:
        tables = [r["tablename"] for r in await conn.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename")]
        out = {}
        for table in tables:
            out[table] = await conn.fetchval(
                f'SELECT md5(coalesce(string_agg(t::text, \',\' ORDER BY t::text), \'\')) '
                f'FROM "{table}" t'
            )
        return out
    finally:
        await conn.close()


async def fetch(database_url: str, query: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(database_url)
    try:
        return list(await conn.fetch(query, *args))
    finally:
        await conn.close()


def stored_checkpoint(database_url: str, run_id: int, version: int, timeout: float = 30) -> bytes:
    """The Adam state of ``version``, once stored (the aggregator writes it after the
    version is published, beside the next fold)."""
    query = "SELECT checkpoint FROM run_states WHERE run_id = $1 AND iteration = $2"
    deadline = time.monotonic() + timeout
    while not (rows := asyncio.run(fetch(database_url, query, run_id, version))) or (
        rows[0]["checkpoint"] is None
    ):
        assert time.monotonic() < deadline, f"no checkpoint of version {version}"
        time.sleep(0.05)
    return bytes(rows[0]["checkpoint"])


def sampled_through(client: httpx.Client, version: int, timeout: float = 30) -> list[int]:
    """The versions with a sample grid, once ``version`` has one (a grid is drawn after
    its version is published, beside the next fold)."""
    deadline = time.monotonic() + timeout
    while version not in (listed := client.get("/samples").json()):
        assert time.monotonic() < deadline, listed
        time.sleep(0.05)
    return list(listed)
