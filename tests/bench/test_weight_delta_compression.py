"""bench/weight_delta_compression.py runs, its delta is lossless (checked inside) and smaller."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "weight_delta_compression.py"


def test_one_outer_step_delta_is_lossless_and_smaller(capsys) -> None:
    spec = importlib.util.spec_from_file_location("weight_delta_compression", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
        [saving] = module.main(["--steps", "1", "--inner-steps", "1", "--threads", "1"])
    finally:
        sys.modules.pop(spec.name, None)
    assert saving > 1.1  # what the XOR delta buys over the raw fp32 snapshot
    assert "zlib(planes of XOR)" in capsys.readouterr().out
