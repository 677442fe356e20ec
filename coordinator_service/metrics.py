"""Prometheus metrics, in a registry per app so several apps (tests) never collide."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram


class Metrics:
    """The counters an instructor (or a load test) watches on /metrics."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.claims = Counter(
            "gan_claims", "Claims answered, by outcome", ["outcome"], registry=self.registry
        )
        self.results = Counter(
            "gan_results", "Result uploads, by outcome code", ["outcome"], registry=self.registry
        )
        self.result_bytes = Counter(
            "gan_result_bytes", "Bytes of accepted results", registry=self.registry
        )
        self.steps = Counter("gan_steps", "Optimizer steps taken", registry=self.registry)
        self.step_seconds = Histogram(
            "gan_step_seconds", "Time to compute and commit a step", registry=self.registry
        )
