"""Prometheus metrics, in a registry per app so several apps (tests) never collide."""

from __future__ import annotations

import asyncio

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Metrics:
    """The counters an instructor (or a load test) watches on /metrics."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.claims = Counter(
            "gan_claims", "Claims answered, by outcome", ["outcome"], registry=self.registry
        )
        self.claim_lookups = Counter(
            "gan_claim_lookups",
            "Claim transactions run (a long-polling claim looks again each time it is woken)",
            registry=self.registry,
        )
        self.results = Counter(
            "gan_results", "Result uploads, by outcome code", ["outcome"], registry=self.registry
        )
        self.result_bytes = Counter(
            "gan_result_bytes", "Bytes of accepted results", registry=self.registry
        )
        self.spot_checks = Counter(
            "gan_spot_checks", "Spot checks decided, by verdict", ["verdict"],
            registry=self.registry,
        )  # fmt: skip
        self.steps = Counter("gan_steps", "Optimizer steps taken", registry=self.registry)
        self.step_retries = Counter(
            "gan_step_retries",
            "Steps computed again under the exclusive run lock, claims and uploads waiting: "
            "the accepted results changed while the first attempt computed",
            registry=self.registry,
        )
        self.extras_failures = Counter(
            "gan_extras_failures",
            "Weights, sample grids and Adam states (checkpoints) of published versions that "
            "could not be stored, by kind (the versions' results stay stored: a restart "
            "replays them)",
            ["kind"],
            registry=self.registry,
        )
        for kind in ("weights", "sample", "checkpoint"):  # exported at 0 from the start
            self.extras_failures.labels(kind)
        self.step_seconds = Histogram(
            "gan_step_seconds", "Time to compute and commit a step", registry=self.registry
        )
        # Traffic and claims (counted by coordinator_service.api.dashboard.TrafficMetrics).
        self.claim_seconds = Histogram(
            "gan_claim_seconds", "Time to answer a claim", registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
        )  # fmt: skip
        self.loop_lag = Histogram(
            "gan_event_loop_lag_seconds",
            "How late the API process's event loop wakes a 10 ms timer: beyond a few ms, "
            "every request waits that long for the loop (the process is short of CPU, or "
            "something blocks the loop)",
            registry=self.registry,
            buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0),
        )
        self.bytes_in = Counter("gan_http_bytes_in", "Request body bytes", registry=self.registry)
        self.bytes_out = Counter(
            "gan_http_bytes_out", "Response body bytes", registry=self.registry
        )
        # Read from the database at scrape time (api.dashboard.refresh_gauges).
        self.iteration = Gauge(
            "gan_iteration", "Iteration of the live run (0 without one)", registry=self.registry
        )
        self.workers = Gauge(
            "gan_workers", "Registered workers by status", ["status"], registry=self.registry
        )


async def watch_event_loop(lag: Histogram, every: float = 0.01) -> None:
    """Forever: how late the running loop wakes a timer of ``every`` seconds. The time a
    request spends in the app (Server-Timing) leaves out its wait for the loop before the
    app sees it, which under load can be most of what a client waits."""
    loop = asyncio.get_running_loop()
    while True:
        started = loop.time()
        await asyncio.sleep(every)
        lag.observe(max(0.0, loop.time() - started - every))
