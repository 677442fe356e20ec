"""bench/weight_delta_compression.py runs, its delta is lossless (checked inside) and smaller."""

from __future__ import annotations

from tests.bench.helpers import bench_module


def test_one_outer_step_delta_is_lossless_and_smaller(capsys) -> None:
    with bench_module("weight_delta_compression") as module:
        [saving] = module.main(["--steps", "1", "--inner-steps", "1", "--threads", "1"])
    assert saving > 1.1  # what the XOR delta buys over the raw fp32 snapshot
    assert "zlib(planes of XOR)" in capsys.readouterr().out
