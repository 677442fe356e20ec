"""bench/spot_check_agreement.py: honest recomputations agree, a sign flip does not."""

from __future__ import annotations

from tests.bench.helpers import bench_module


def test_honest_recomputations_agree_and_a_lie_does_not(capsys) -> None:
    with bench_module("spot_check_agreement") as module:
        rows = module.main(["--features", "16", "--unit-images", "64", "--micro-batch", "32",
                            "--warm-iterations", "1"])  # fmt: skip
    distances = {label: max(d, g) for label, d, g in rows}
    assert distances.pop("CPU, 1 thread, again") == 0.0  # one machine, one order: bit for bit
    assert distances.pop("a lie: the reference sign-flipped") > 1.9
    assert all(d < module.TOLERANCE / 100 for d in distances.values()), distances
    assert "DISAGREES" in capsys.readouterr().out
