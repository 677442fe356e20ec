"""The coordinator's event-loop lag: what a request waits for the loop before the app
(and its Server-Timing) sees it. A loop blocked for 0.2 s shows as one late wake-up of
that size; an idle one wakes within a few ms."""

from __future__ import annotations

import asyncio
import time

import httpx
from prometheus_client import CollectorRegistry, Histogram

from coordinator_service.metrics import watch_event_loop
from tests.conftest import RunningCoordinator
from tests.coordinator_service.test_dashboard_api import metric


async def _observe(block_for: float) -> list[float]:
    lags: list[float] = []
    histogram = Histogram("lag", "lag", registry=CollectorRegistry())
    histogram.observe = lags.append  # type: ignore[method-assign]
    watcher = asyncio.create_task(watch_event_loop(histogram))
    await asyncio.sleep(0.1)
    time.sleep(block_for)  # what a full garbage collection or a CPU-bound call does
    await asyncio.sleep(0.1)
    watcher.cancel()
    return lags


def test_a_blocked_loop_shows_as_one_late_wake_up() -> None:
    lags = asyncio.run(_observe(0.2))
    assert len(lags) >= 10
    assert 0.18 <= max(lags) < 0.5
    assert sorted(lags)[-2] < 0.05  # only that one wake-up was late


def test_metrics_export_the_lag_of_a_running_coordinator(
    coordinator: RunningCoordinator,
) -> None:
    time.sleep(0.3)
    text = httpx.get(coordinator.url + "/metrics").text
    assert metric(text, "gan_event_loop_lag_seconds_count") >= 10
    assert 'gan_event_loop_lag_seconds_bucket{le="0.005"}' in text
