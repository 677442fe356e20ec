"""Load test of a real coordinator: N simulated workers, no torch compute on their side.

Each simulated worker loops claim -> download W_t (once per iteration) -> upload a
pre-made valid result (seeded random gradients, encoded once per (iteration, size) and
reused) -> claim again, with no compute in between: the most load a worker can make.
With ``--compute-seconds S`` each simulated worker instead waits between download and
upload for a time drawn evenly from S/2 to 3S/2, as gan-worker computes, and the
workers start spread over S seconds: a class's pace (the presets' units take about 26 s
on a laptop). Its claims wait up to 5 s for work, as gan-worker's do, and beside that
loop it heartbeats every ``--heartbeat-seconds``, as gan-worker does while it computes.
A waiting claim's time says nothing about the server, so claim latency is measured by
a probe: one more worker that claims without waiting ten times a second (and gives back
what it gets). The coordinator is the real CLI (``gan-coordinator serve``,
``--api-processes`` of them) in a subprocess over a fresh database on a real
PostgreSQL, with its aggregator stepping for real (decode, average, Adam, snapshot,
commit).

Reported per worker count: leased claims/s; p50/p99 latency of every claim, heartbeat
and accepted upload, and the p99 of the coordinator's own share of claims and
heartbeats (its ``Server-Timing`` header: the rest is client, loopback and the wait for
one of the cores the clients share with it); the p99 of both event loops' lag (how late
the clients' loop, and the coordinator's by its /metrics, wake a 10 ms timer) and how
often the coordinator's woke more than 50 ms late; how many steps were computed again
under the exclusive run lock (every claim and upload waiting); result MB/s accepted
against a raw loopback upload of the same bytes by as many clients in the same run (a
bare ASGI app under uvicorn in its own process that reads the body and answers 200);
steps/s; and the time from a step's last accepted result to its weights being
downloadable (the commit that stores them, from the database's own clocks).

    .venv/bin/python bench/load_coordinator.py --workers 10 100 300 --seconds 20
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import uuid4

import asyncpg
import httpx

try:
    # The clients' loop is uvloop, as the coordinator's is: one Python process stands in
    # for hundreds of machines, and the less of the shared cores its loop takes, the less
    # the bench measures itself (heartbeat p99 9.3-9.8 ms at 300 workers against 11.2-11.8
    # with asyncio's loop, docs/coordinator.md). No uvloop on Windows.
    from uvloop import run as run_loop
except ImportError:
    from asyncio import run as run_loop  # type: ignore[assignment]

from coordinator_service.db import migrations
from coordinator_service.embedded import with_database
from coordinator_service.training import engine, presets
from shared.codec import DTYPE_NAMES, encode_result
from shared.models import StateSpec
from shared.protocol import API_PREFIX, LEASE_HEADER, LOCAL_KINDS, RunConfig, WorkUnit
from shared.strategies import LocalSteps, strategy_for
from shared.unit_result import UnitMetrics, UnitResult
from worker_client.api_client import KEEPALIVE_SECONDS

ADMIN, JOIN = "bench-admin-token", "bench-join-code"


@dataclass
class Stats:
    claim_latencies: list[float] = field(default_factory=list)
    heartbeat_latencies: list[float] = field(default_factory=list)
    # the coordinator's own share of each (app_seconds)
    claim_app_seconds: list[float] = field(default_factory=list)
    heartbeat_app_seconds: list[float] = field(default_factory=list)
    upload_latencies: list[float] = field(default_factory=list)  # accepted ones
    loop_lags: list[float] = field(default_factory=list)  # see loop_lag
    leased: int = 0
    accepted_bytes: int = 0
    accepted: int = 0
    refused: dict[int, int] = field(default_factory=dict)


class Results:
    """Pre-made result bodies of the run's kind, encoded once per (iteration, unit size)."""

    def __init__(self, config: RunConfig) -> None:
        import torch

        self.config = config
        self.strategy = strategy_for(config)
        self.spec = StateSpec.from_config(engine.model_config(config))
        rng = torch.Generator().manual_seed(0)
        self.tensors = {k: torch.randn(s, generator=rng) * 1e-3
                        for k, s in self.spec.parameters.items()}  # fmt: skip
        self.buffers = {k: torch.rand(s, generator=rng) + 0.5 for k, s in self.spec.buffers.items()}
        self.cache: dict[tuple[int, int], bytes] = {}

    def body(self, iteration: int, num_images: int) -> bytes:
        """A valid result for a unit of ``num_images`` leased at ``iteration``."""
        key = (iteration, num_images)
        if key not in self.cache:
            layout = self.strategy.layout(iteration, self.spec)
            extra = {"batch_size": str(self.config.batch_size)}
            if isinstance(self.strategy, LocalSteps):  # either local-steps mode
                extra["inner_steps"] = str(self.strategy.inner_steps(num_images))
            result = UnitResult(
                layout.kind, iteration, self.strategy.expected_samples(num_images),
                {k: self.tensors[k] for k in layout.tensors},
                {k: self.buffers[k] for k in layout.buffers},
                UnitMetrics(0.7, 1.3, 0.5, 0.5), extra,
            )  # fmt: skip
            self.cache[key] = encode_result(result, DTYPE_NAMES[self.config.result_dtype])
        return self.cache[key]


def app_seconds(response: httpx.Response) -> float:
    """The coordinator's time in its app for this response (``Server-Timing: app;dur=``)."""
    return float(response.headers["server-timing"].removeprefix("app;dur=")) / 1000


async def heartbeats(client: httpx.AsyncClient, stats: Stats, every: float,
                     stop_at: float) -> None:  # fmt: skip
    await asyncio.sleep(every * secrets.randbelow(1000) / 1000)  # spread over the interval
    while time.monotonic() < stop_at:
        started = time.perf_counter()
        response = await client.post("/workers/me/heartbeat")
        assert response.status_code == 200, response.text
        stats.heartbeat_latencies.append(time.perf_counter() - started)
        stats.heartbeat_app_seconds.append(app_seconds(response))
        await asyncio.sleep(every)


async def worker_loop(client: httpx.AsyncClient, results: Results, stats: Stats,
                      stop_at: float, compute_seconds: float) -> None:  # fmt: skip
    have_weights = -1
    # At a class's pace workers join spread over one unit's time, as students do, not
    # all in the same instant.
    await asyncio.sleep(compute_seconds * secrets.randbelow(1000) / 1000)
    while time.monotonic() < stop_at:
        response = await client.post(
            "/work-units/claim", params={"wait": 5}, json={"claim_id": str(uuid4())}
        )
        if response.status_code != 200:
            continue
        stats.leased += 1
        unit = WorkUnit.model_validate(response.json())
        if unit.iteration != have_weights:
            await client.get(unit.weights_url.removeprefix(API_PREFIX))
            have_weights = unit.iteration
        body = results.body(unit.iteration, len(unit.image_indices))
        if compute_seconds:
            await asyncio.sleep(compute_seconds * (0.5 + secrets.randbelow(1001) / 1000))
        started = time.perf_counter()
        answer = await client.post(
            f"/work-units/{unit.unit_id}/result", content=body,
            headers={LEASE_HEADER: unit.lease_id, "Content-Type": "application/octet-stream"},
        )  # fmt: skip
        if answer.status_code == 200:
            stats.upload_latencies.append(time.perf_counter() - started)
            stats.accepted += 1
            stats.accepted_bytes += len(body)
        else:
            stats.refused[answer.status_code] = stats.refused.get(answer.status_code, 0) + 1


async def probe_claims(client: httpx.AsyncClient, stats: Stats, stop_at: float) -> None:
    """Claims that do not wait, timed; a unit it gets goes straight back to the pool."""
    while time.monotonic() < stop_at:
        started = time.perf_counter()
        response = await client.post("/work-units/claim", json={"claim_id": str(uuid4())})
        stats.claim_latencies.append(time.perf_counter() - started)
        stats.claim_app_seconds.append(app_seconds(response))
        if response.status_code == 200:
            unit = WorkUnit.model_validate(response.json())
            await client.post(f"/work-units/{unit.unit_id}/release",
                              headers={LEASE_HEADER: unit.lease_id})  # fmt: skip
        await asyncio.sleep(0.1)


async def loop_lag(stats: Stats, stop_at: float) -> None:
    """How late this process's event loop wakes a 10 ms sleep: what any latency above
    carries of the clients' own wait for their loop (or a core), not the server's."""
    while time.monotonic() < stop_at:
        started = time.perf_counter()
        await asyncio.sleep(0.01)
        stats.loop_lags.append(time.perf_counter() - started - 0.01)


def loop_lag_buckets(metrics: str) -> dict[float, float]:
    """The coordinator's own event-loop lag histogram in a /metrics scrape: cumulative
    counts by upper bound."""
    prefix = 'gan_event_loop_lag_seconds_bucket{le="'
    return {float(line[len(prefix):].split('"')[0]): float(line.rsplit(" ", 1)[1])
            for line in metrics.splitlines() if line.startswith(prefix)}  # fmt: skip


def step_retries(metrics: str) -> float:
    """Steps the coordinator computed twice, the second time holding every claim and
    upload, in a /metrics scrape (nan from a coordinator that does not count them)."""
    counts = [float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
              if line.startswith("gan_step_retries_total ")]  # fmt: skip
    return sum(counts) if counts else float("nan")


def histogram_quantile(q: float, before: dict[float, float], after: dict[float, float]) -> float:
    """The q-quantile of what a histogram observed between two scrapes, interpolated
    within its bucket (as Prometheus's histogram_quantile does)."""
    bounds = sorted(after)
    counts = [after[b] - before.get(b, 0.0) for b in bounds]
    if not counts or counts[-1] <= 0:
        return float("nan")
    rank, lower, below = q * counts[-1], 0.0, 0.0
    for bound, count in zip(bounds, counts, strict=True):
        if count >= rank:
            if math.isinf(bound):
                return lower
            return lower + (bound - lower) * (rank - below) / max(count - below, 1e-12)
        lower, below = bound, count
    return lower


def stalls_over(seconds: float, before: dict[float, float], after: dict[float, float]) -> int:
    """How many of the coordinator's loop wake-ups between two scrapes came more than
    ``seconds`` late (a bucket bound): the rare long stalls a p99 does not show."""
    def late(counts: dict[float, float]) -> float:
        return counts.get(math.inf, 0.0) - counts.get(seconds, 0.0)

    return int(late(after) - late(before))


def worker_client(base: str, token: str) -> httpx.AsyncClient:
    """One simulated worker's own client, as each gan-worker has: httpx's pool looks through
    all its connections on every request, so one pool for hundreds of workers makes the
    bench, not the coordinator, the bottleneck."""
    return httpx.AsyncClient(
        base_url=base + API_PREFIX, timeout=120, headers={"Authorization": f"Bearer {token}"},
        # as gan-worker's: kept for less than the coordinator keeps them (75 s)
        limits=httpx.Limits(max_connections=2, keepalive_expiry=KEEPALIVE_SECONDS),
    )


async def admin_execute(url: str, statement: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


async def turnarounds(database_url: str) -> tuple[list[tuple[float, float]], int, float]:
    """Each fold's (seconds from its last accepted result to its row, of which its own
    computing), the number of folds and their median computing time."""
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch(
            "SELECT extract(epoch FROM h.created_at - max(r.accepted_at)) AS seconds, "
            "h.step_seconds FROM history h JOIN results r "
            "ON r.run_id = h.run_id AND r.folded_version = h.iteration "
            "GROUP BY h.run_id, h.iteration, h.created_at, h.step_seconds"
        )
        steps = await conn.fetchval("SELECT count(*) FROM history")
        compute = await conn.fetchval(
            "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY step_seconds) FROM history"
        )
        return (
            [(float(r["seconds"]), float(r["step_seconds"])) for r in rows],
            int(steps),
            float(compute or "nan"),
        )
    finally:
        await conn.close()


async def raw_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The raw loopback baseline: read the whole body, answer an empty 200."""
    assert scope["type"] == "http"
    while (await receive()).get("more_body"):
        pass
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", b"0")]})  # fmt: skip
    await send({"type": "http.response.body", "body": b""})


def serve_raw(port: int) -> None:
    import uvicorn

    uvicorn.run(raw_app, host="127.0.0.1", port=port, lifespan="off", log_level="warning")


async def wait_until_up(client: httpx.AsyncClient, url: str) -> None:
    for _ in range(600):
        try:
            await client.get(url)
            return
        except httpx.TransportError:
            await asyncio.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


async def raw_ingest(n: int, body: bytes, seconds: float) -> tuple[float, list[float]]:
    """MB/s that n clients (each its own, as the workers) upload ``body`` back to back to a
    bare server for ``seconds``, and each upload's latency."""
    port = 18000 + secrets.randbelow(2000)
    server = subprocess.Popen([sys.executable, __file__, "--serve-raw", str(port)])
    url = f"http://127.0.0.1:{port}/"
    clients = [worker_client(url, "raw") for _ in range(n)]
    sent, latencies = 0, []
    try:
        await wait_until_up(clients[0], url)
        stop_at = time.monotonic() + seconds

        async def upload_loop(client: httpx.AsyncClient) -> None:
            nonlocal sent
            while time.monotonic() < stop_at:
                started = time.perf_counter()
                response = await client.post(url, content=body)
                assert response.status_code == 200
                latencies.append(time.perf_counter() - started)
                sent += len(body)

        t0 = time.monotonic()
        await asyncio.gather(*(upload_loop(client) for client in clients))
        return sent / (time.monotonic() - t0) / 1e6, latencies
    finally:
        for client in clients:
            await client.aclose()
        server.terminate()
        server.wait(timeout=30)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def run_options(args: argparse.Namespace, n: int) -> dict[str, Any]:
    """The bench's run: a barrier run waits for half the workers' units per step; an
    asynchronous one folds the large preset's 8 results at a time."""
    options: dict[str, Any] = {
        "generator_features": args.features, "discriminator_features": args.features,
        "latent_dim": 100, "images_per_unit": args.images_per_unit, "batch_size": 64,
        "dataset": {"size": 1_000_000}, "result_kind": args.result_kind,
        "units_per_step": max(1, n // 2) if args.result_kind == "synchronous" else 8,
    }  # fmt: skip
    if args.result_kind in LOCAL_KINDS:
        options["result_dtype"] = "bfloat16"  # as the presets send them
    return options


async def bench(n: int, args: argparse.Namespace, results: Results) -> dict[str, float]:
    server_url = with_database(args.database_url, "postgres")
    name = f"gan_bench_{os.getpid()}_{secrets.token_hex(3)}"
    await admin_execute(server_url, f'CREATE DATABASE "{name}"')
    database_url = with_database(args.database_url, name)
    await asyncio.to_thread(migrations.upgrade, database_url)
    port = 18000 + secrets.randbelow(2000)
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("GAN_")},
           "DATABASE_URL": database_url, "GAN_ADMIN_TOKEN": ADMIN, "GAN_JOIN_CODE": JOIN,
           "GAN_TORCH_THREADS": "1", "GAN_SAMPLE_EVERY": "0", "GAN_POOL_MAX_SIZE": "20",
           # The bench measures the coordinator's capacity, not a class: its simulated
           # workers loop as fast as answers come, far beyond a real worker's rate limit,
           # and all register from one address.
           "GAN_WORKER_REQUESTS_PER_SECOND": "0", "GAN_REGISTRATIONS_PER_MINUTE": "0"}  # fmt: skip
    log = tempfile.TemporaryFile()
    server = subprocess.Popen(
        [str(Path(sys.executable).with_name("gan-coordinator")), "serve", "--port", str(port),
         "--log-level", "warning",
         *(["--workers", str(args.api_processes)] if args.api_processes > 1 else [])],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=base + API_PREFIX, timeout=120) as c:
            await wait_until_up(c, base + "/healthz")
            started = await c.post("/admin/runs", json={"config": run_options(args, n)},
                                   headers={"Authorization": f"Bearer {ADMIN}"})  # fmt: skip
            assert started.status_code == 201, started.text
            tokens = [
                (await c.post("/workers", json={"join_code": JOIN, "name": f"w{i}"})).json()[
                    "token"
                ]
                for i in range(n + 1)
            ]
            probe, tokens = tokens[0], tokens[1:]
            stats = Stats()
            clients = [worker_client(base, t) for t in tokens]
            probe_client = worker_client(base, probe)
            lag_before = loop_lag_buckets((await c.get(base + "/metrics")).text)
            t0 = time.monotonic()
            stop_at = t0 + args.seconds
            await asyncio.gather(
                *(worker_loop(w, results, stats, stop_at, args.compute_seconds) for w in clients),
                *(heartbeats(w, stats, args.heartbeat_seconds, stop_at) for w in clients),
                probe_claims(probe_client, stats, stop_at),
                loop_lag(stats, stop_at),
            )
            elapsed = time.monotonic() - t0
            scraped = (await c.get(base + "/metrics")).text
            lag_after, retries = loop_lag_buckets(scraped), step_retries(scraped)
            for client in [*clients, probe_client]:
                await client.aclose()
        turn, steps, compute = await turnarounds(database_url)
    finally:
        server.terminate()
        server.wait(timeout=60)
        if args.show_log:
            log.seek(0)
            print(log.read().decode(errors="replace")[-5000:], file=sys.stderr)
        await admin_execute(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    body = results.body(0, args.images_per_unit)
    raw, raw_latencies = await raw_ingest(n, body, min(args.seconds, 10.0))
    ingest = stats.accepted_bytes / elapsed / 1e6
    nan = float("nan")
    worst = max(turn, default=(nan, nan))
    return {
        "workers": n,
        "units_per_step": run_options(args, n)["units_per_step"],
        "claims_per_s": stats.leased / elapsed,
        "claim_p50_ms": 1000 * percentile(stats.claim_latencies, 0.5),
        "claim_p99_ms": 1000 * percentile(stats.claim_latencies, 0.99),
        "heartbeat_p50_ms": 1000 * percentile(stats.heartbeat_latencies, 0.5),
        "heartbeat_p99_ms": 1000 * percentile(stats.heartbeat_latencies, 0.99),
        "claim_app_p99_ms": 1000 * percentile(stats.claim_app_seconds, 0.99),
        "heartbeat_app_p99_ms": 1000 * percentile(stats.heartbeat_app_seconds, 0.99),
        "client_lag_p99_ms": 1000 * percentile(stats.loop_lags, 0.99),
        "server_lag_p99_ms": 1000 * histogram_quantile(0.99, lag_before, lag_after),
        "server_stalls_over_50ms": stalls_over(0.05, lag_before, lag_after),
        "upload_p50_ms": 1000 * percentile(stats.upload_latencies, 0.5),
        "upload_p99_ms": 1000 * percentile(stats.upload_latencies, 0.99),
        "raw_upload_p50_ms": 1000 * percentile(raw_latencies, 0.5),
        "result_mb_per_s": ingest,
        "raw_mb_per_s": raw,
        "ingest_vs_raw": ingest / raw,
        "results_per_s": stats.accepted / elapsed,
        "refused": sum(stats.refused.values()),
        "steps_per_s": steps / elapsed,
        "step_retries": retries,
        "step_compute_p50_ms": 1000 * compute,
        "downloadable_p50_ms": 1000 * statistics.median(t for t, _ in turn) if turn else nan,
        "downloadable_max_ms": 1000 * worst[0],
        "worst_fold_compute_ms": 1000 * worst[1],
    }


def main(argv: list[str] | None = None) -> list[dict[str, float]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[10, 50, 100],
                        help="simulated worker counts, one row each (default: 10 50 100)")
    parser.add_argument("--seconds", type=float, default=20.0,
                        help="how long each row's workers run (default: 20)")
    parser.add_argument("--features", type=int, default=8,
                        help="G and D feature maps; 64 is the class model (default: 8)")
    parser.add_argument("--images-per-unit", type=int, default=32,
                        help="images per work unit (default: 32)")
    parser.add_argument("--result-kind", choices=["synchronous", "async_local_steps"],
                        default="synchronous",
                        help="the run's mode: synchronous phases with a barrier (units per "
                        "step: half the workers) or asynchronous local steps (the large "
                        "preset's 8 results per fold) (default: synchronous)")
    parser.add_argument("--compute-seconds", type=float, default=0.0,
                        help="each unit's simulated compute time, drawn from half to 1.5 "
                        "times this; 0: none, the most load workers can make (default: 0)")
    parser.add_argument("--api-processes", type=int, default=1,
                        help="the coordinator's API processes (serve --workers; "
                        "default: 1)")  # fmt: skip
    parser.add_argument("--heartbeat-seconds", type=float, default=5.0,
                        help="each simulated worker's heartbeat interval (gan-worker: 15 s "
                        "at most while it computes; default: 5)")  # fmt: skip
    parser.add_argument("--serve-raw", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--show-log", action="store_true", help="print the server's log tail")
    parser.add_argument("--database-url", default=os.environ.get(
        "DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"),
        help="a PostgreSQL server the bench may create databases on (default: $DATABASE_URL "
        "or postgresql://postgres@127.0.0.1:5432/postgres)")  # fmt: skip
    args = parser.parse_args(argv)
    if args.serve_raw is not None:  # the raw loopback baseline's server process
        serve_raw(args.serve_raw)
        return []
    import torch

    torch.set_num_threads(1)
    config = presets.resolve(None, run_options(args, max(args.workers)))
    results = Results(config)
    size = len(results.body(0, args.images_per_unit))
    print(f"{args.result_kind} run, {args.features} feature maps, result body "
          f"{size / 1e6:.2f} MB ({config.result_dtype})")
    header = ("workers", "units_per_step", "claims_per_s", "claim_p50_ms", "claim_p99_ms",
              "heartbeat_p50_ms", "heartbeat_p99_ms", "claim_app_p99_ms",
              "heartbeat_app_p99_ms", "client_lag_p99_ms", "server_lag_p99_ms",
              "server_stalls_over_50ms",
              "upload_p50_ms", "upload_p99_ms",
              "raw_upload_p50_ms", "result_mb_per_s", "raw_mb_per_s", "ingest_vs_raw",
              "refused", "steps_per_s", "step_retries", "step_compute_p50_ms",
              "downloadable_p50_ms",
              "downloadable_max_ms", "worst_fold_compute_ms")  # fmt: skip
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    rows = []
    for n in args.workers:
        rows.append(row := run_loop(bench(n, args, results)))
        print("| " + " | ".join(_cell(row[h]) for h in header) + " |", flush=True)
    return rows


def _cell(value: float) -> str:
    if isinstance(value, int):
        return str(value)
    return f"{value:.2f}" if abs(value) < 1 else f"{value:.1f}"


if __name__ == "__main__":
    main()
