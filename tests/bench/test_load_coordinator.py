"""bench/load_coordinator.py, briefly: the real coordinator under a few simulated workers
at a class's pace, every figure of its row measured."""

from __future__ import annotations

import math

from tests.bench.helpers import bench_module


def test_a_short_run_at_class_pace_measures_every_figure(pg_server_url, capsys) -> None:
    with bench_module("load_coordinator") as bench:
        (row,) = bench.main(["--workers", "4", "--seconds", "6", "--compute-seconds", "0.5",
                             "--heartbeat-seconds", "1",
                             "--database-url", pg_server_url])  # fmt: skip
    # 4 workers, 2 units per step, units of about half a second: several steps, none of
    # their results refused, and each step's weights published after its last result.
    assert row["workers"] == 4 and row["units_per_step"] == 2
    assert row["steps_per_s"] * 6 >= 2 and row["refused"] == 0
    assert 0 < row["result_mb_per_s"] < row["raw_mb_per_s"]
    for name in ("claim_p50_ms", "claim_p99_ms", "heartbeat_p50_ms", "upload_p50_ms",
                 "raw_upload_p50_ms", "downloadable_p50_ms"):  # fmt: skip
        assert math.isfinite(row[name]) and row[name] > 0, name
    assert row["claim_p50_ms"] <= row["claim_p99_ms"]
    assert "| 4 | 2 |" in capsys.readouterr().out
