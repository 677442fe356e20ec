"""bench/class_simulator.py in smoke mode: every mode runs through the product's own
planner, step rule and strategies, and the class's time adds up."""

from __future__ import annotations

import pytest

from tests.bench.helpers import bench_module


def test_smoke_run_simulates_every_mode_and_writes_its_plot(tmp_path, capsys) -> None:
    with bench_module("class_simulator") as simulator:
        runs = simulator.main(["--smoke", "--output", str(tmp_path)])
    by_mode = {run["mode"]: run for run in runs}
    assert list(by_mode) == ["lone laptop", "synchronous", "local_steps", "async_local_steps"]
    alone = by_mode["lone laptop"]
    assert alone["minutes_to_target"] is not None and alone["computing_share"] > 0.99
    for run in runs:
        assert run["versions"] > 0 and run["images"] > 0
        assert 0 < run["computing_share"] <= 1
        minutes = [m for m, _ in run["curve"]]
        assert minutes == sorted(minutes) and all(d > 0 for _, d in run["curve"])
    # Without a barrier and with the next unit fetched while one computes, a worker
    # computes a larger share of its time than with a barrier.
    assert by_mode["async_local_steps"]["computing_share"] > by_mode["local_steps"][
        "computing_share"]  # fmt: skip
    for run in runs[1:]:  # the lone laptop's first minute at or below the run's last distance
        last = run["curve"][-1]
        first = next((m for m, d in alone["curve"] if d <= last[1]), None)
        assert run["alone_minutes_to_final"] == first
        assert run["speedup_at_final"] == (None if first is None else first / last[0])
    assert (tmp_path / "quality-vs-minutes.svg").read_text().startswith("<svg")
    assert "| async_local_steps | 2 |" in capsys.readouterr().out


def test_timing_alone_orders_the_modes_by_the_share_of_time_spent_computing(tmp_path) -> None:
    """Four laptops, the class model's transfers at 10 MB/s, H = 32: synchronous phases
    wait on the network, local steps on the barrier, asynchronous workers on neither."""
    with bench_module("class_simulator") as simulator:
        runs = simulator.main(["--timing-only", "--workers", "4", "--minutes", "10",
                               "--images", "20000", "--output", str(tmp_path)])  # fmt: skip
    share = {run["mode"]: run["computing_share"] for run in runs}
    assert share["synchronous"] < share["local_steps"] < share["async_local_steps"] <= 1
    assert (tmp_path / "timing.json").exists()


def test_dynamic_local_updates_keep_a_gpu_computing(tmp_path) -> None:
    """Four workers, one a GPU 15x a laptop: with units of H = 32 the GPU computes for
    1.7 s between 4 s of transfers; joined to its speed (the coordinator's rule,
    units_per_claim) its units grow to H = 128 and it computes most of its time."""
    with bench_module("class_simulator") as simulator:
        runs = simulator.main(["--timing-only", "--workers", "4", "--gpus", "1", "--minutes",
                               "10", "--images", "20000", "--modes", "async_local_steps",
                               "async_local_steps-dynamic", "--output", str(tmp_path)])  # fmt: skip
    fixed, dynamic = runs
    assert fixed["gpu_computing_share"] < 0.6 < 0.9 < dynamic["gpu_computing_share"] <= 1
    assert dynamic["images"] > fixed["images"]


def test_a_smoke_run_of_kept_inner_adam_with_dynamic_units(tmp_path) -> None:
    """The suffixes combine: each worker's inner Adam carries across its joined units."""
    with bench_module("class_simulator") as simulator:
        runs = simulator.main(["--smoke", "--modes", "async_local_steps-dynamic-kept",
                               "--output", str(tmp_path)])  # fmt: skip
        assert runs[-1]["mode"] == "async_local_steps-dynamic-kept" and runs[-1]["versions"] > 0
        with pytest.raises(SystemExit, match="unknown mode"):
            simulator.main(["--smoke", "--modes", "synchronous-kept", "--output", str(tmp_path)])


def test_workers_that_leave_mid_unit_lose_no_images(tmp_path) -> None:
    """Half the class leaves mid-unit; once their leases end (expiry, or a fold that
    leaves them too far behind), their units go back to the pool and the rest of the
    class trains them: every epoch still ends."""
    with bench_module("class_simulator") as simulator:
        runs = simulator.main(["--timing-only", "--workers", "4", "--minutes", "30",
                               "--images", "4096", "--inner-steps", "8", "--leave-fraction",
                               "0.5", "--modes", "local_steps", "async_local_steps",
                               "--output", str(tmp_path)])  # fmt: skip
    for run in runs:
        assert run["epochs"] >= 5, run  # 5 epochs of 8 units with two laptops left
        assert 0 < run["computing_share"] <= 1
