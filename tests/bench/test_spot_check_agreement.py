"""bench/spot_check_agreement.py: honest recomputations agree, a sign flip does not."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "spot_check_agreement.py"


def test_honest_recomputations_agree_and_a_lie_does_not(capsys) -> None:
    spec = importlib.util.spec_from_file_location("spot_check_agreement", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
        rows = module.main(["--features", "16", "--unit-images", "64", "--micro-batch", "32",
                            "--warm-iterations", "1"])  # fmt: skip
    finally:
        sys.modules.pop(spec.name, None)
    distances = {label: max(d, g) for label, d, g in rows}
    assert distances.pop("CPU, 1 thread, again") == 0.0  # one machine, one order: bit for bit
    assert distances.pop("a lie: the reference sign-flipped") > 1.9
    assert all(d < module.TOLERANCE / 100 for d in distances.values()), distances
    assert "DISAGREES" in capsys.readouterr().out
