"""bench/load_coordinator.py, briefly: the real coordinator under a few simulated workers
at a class's pace, every figure of its row measured, in both kinds of run it offers."""

from __future__ import annotations

import math

import pytest

from tests.bench.helpers import bench_module


@pytest.mark.parametrize(("kind", "per_fold"), [("synchronous", 2), ("async_local_steps", 8)])
def test_a_short_run_at_class_pace_measures_every_figure(
    pg_server_url: str, capsys: pytest.CaptureFixture[str], kind: str, per_fold: int
) -> None:
    with bench_module("load_coordinator") as bench:
        (row,) = bench.main(["--workers", "4", "--seconds", "6", "--compute-seconds", "0.5",
                             "--heartbeat-seconds", "1", "--result-kind", kind,
                             "--database-url", pg_server_url])  # fmt: skip
    # Units of about half a second: several folds, no result refused, and each fold's
    # weights published after the last result it took in.
    assert row["workers"] == 4 and row["units_per_step"] == per_fold
    assert row["steps_per_s"] * 6 >= 2 and row["refused"] == 0
    assert 0 < row["result_mb_per_s"] < row["raw_mb_per_s"]
    for name in ("claim_p50_ms", "claim_p99_ms", "heartbeat_p50_ms", "upload_p50_ms",
                 "raw_upload_p50_ms", "downloadable_p50_ms"):  # fmt: skip
        assert math.isfinite(row[name]) and row[name] > 0, name
    assert row["claim_p50_ms"] <= row["claim_p99_ms"]
    # The coordinator's share comes from its own header, and is part of what clients saw.
    assert 0 < row["claim_app_p99_ms"] < row["claim_p99_ms"]
    assert 0 < row["heartbeat_app_p99_ms"] < row["heartbeat_p99_ms"]
    # Both event loops' lag: the clients' own, and the coordinator's from its /metrics.
    assert 0 <= row["client_lag_p99_ms"] < 1000 and 0 <= row["server_lag_p99_ms"] < 1000
    assert f"| 4 | {per_fold} |" in capsys.readouterr().out
