"""bench/local_steps_quality.py in smoke mode: the plumbing runs and its table is sane.

Fashion-MNIST when the Debian package is installed, generated labelled shapes otherwise
(``--data auto``), so this test never skips.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from tests.bench.helpers import bench_module


@pytest.fixture(scope="module")
def bench():
    with bench_module("local_steps_quality") as module:
        yield module


def test_frechet_distance_of_known_gaussians(bench):
    rng = np.random.default_rng(0)
    a = rng.normal(size=(4000, 6))
    assert abs(bench.frechet_distance(a, a)) < 1e-6
    # Same covariance, mean shifted by 2 along one axis: the distance is |shift|^2 = 4.
    assert bench.frechet_distance(a, a + np.array([2.0, 0, 0, 0, 0, 0])) == pytest.approx(4.0)
    # Scaled: for diagonal covariances the distance is sum (sigma_a - sigma_b)^2.
    b = rng.normal(size=(200_000, 6)) * 3
    c = rng.normal(size=(200_000, 6))
    assert bench.frechet_distance(b, c) == pytest.approx(6 * (3 - 1) ** 2, rel=0.02)


def test_schedule_names(bench):
    local = bench.parse_schedule("local-h16x3-lr0.35", 64)
    assert (local.mode, local.unit_images, local.units_per_step) == ("local", 1024, 3)
    assert (local.inner_steps, local.outer_lr, local.outer_momentum) == (16, 0.35, 0.9)
    plain = bench.parse_schedule("local-h16x1-lr1-m0", 64)
    assert (plain.outer_lr, plain.outer_momentum) == (1.0, 0.0)
    sync = bench.parse_schedule("sync-320x3", 64)
    assert bench.parse_schedule("sync-32x2", 64).unit_images == 32
    assert (sync.mode, sync.unit_images, sync.units_per_step) == ("sync", 320, 3)
    assert (sync.wire, sync.seed) == ("float32", None)
    light = bench.parse_schedule("local-h32x8-lr0.35-bf16-s2", 64)
    assert (light.inner_steps, light.units_per_step, light.outer_lr) == (32, 8, 0.35)
    assert (light.wire, light.seed, light.training_seed(0)) == ("bfloat16", 2, 2)
    assert bench.parse_schedule("sync-64x3-fp16", 64).wire == "float16"
    textbook = bench.parse_schedule("textbook", 64, 1000)
    assert (textbook.mode, textbook.unit_images, textbook.inner_steps) == ("local", 1000, 16)
    assert (textbook.outer_lr, textbook.outer_momentum) == (1.0, 0.0)
    with pytest.raises(ValueError):
        bench.parse_schedule("async-3", 64)


def test_synthetic_data_is_labelled_and_64x64(bench):
    data = bench.load_synthetic(300, 100, seed=1)
    assert tuple(data.train.shape) == (300, 1, 64, 64)
    assert data.train.dtype.is_floating_point is False
    assert set(data.train_labels.tolist()) == set(range(10))


def test_smoke_run_table_is_sane(bench, tmp_path):
    report = bench.main(["--smoke", "--output", str(tmp_path), "--threads", "1"])
    rows = {row["schedule"]: row for row in report["schedules"]}
    assert list(rows) == list(bench.SMOKE_SCHEDULES)
    images = report["images"]
    expected_steps = {
        "baseline": math.ceil(images / 64),
        "textbook": 1,
        # synchronous: two versions (D phase, G phase) per iteration
        "sync-64x1": 2 * math.ceil(images / 64),
        "sync-32x2": 2 * math.ceil(images / 64),
        "sync-320x3": 2 * math.ceil(images / 960),
        "local-h4x3": math.ceil(math.ceil(images / 256) / 3),
        "local-h16x3": math.ceil(math.ceil(images / 1024) / 3),
        "local-h16x3-bf16": math.ceil(math.ceil(images / 1024) / 3),
    }
    for name, row in rows.items():
        assert row["steps"] == expected_steps[name], name
        assert row["images"] == images
        assert math.isfinite(row["frechet_distance"]) and row["frechet_distance"] > 0, name
        assert math.isfinite(row["ratio_vs_baseline"]) and row["ratio_vs_baseline"] > 0, name
        for key in ("up_bytes_per_image", "down_bytes_per_image"):
            assert math.isfinite(row[key]) and row[key] > 0, (name, key)
        png = tmp_path / f"local-steps-{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    assert rows["baseline"]["ratio_vs_baseline"] == pytest.approx(1.0)
    # gan-train-local, sync 64x1 through the simulated coordinator and the textbook loop
    # take the same steps: the same distance (the textbook up to its final rounding).
    assert rows["sync-64x1"]["frechet_distance"] == rows["baseline"]["frechet_distance"]
    assert rows["textbook"]["frechet_distance"] == pytest.approx(
        rows["baseline"]["frechet_distance"], rel=1e-3
    )
    # By construction: a 1024-image unit sends one result where 64-image sync units send 16.
    h16, h16_bf16 = rows["local-h16x3"], rows["local-h16x3-bf16"]
    sync64, sync320 = rows["sync-64x1"], rows["sync-320x3"]
    assert h16["up_bytes_per_image"] * 15 <= sync64["up_bytes_per_image"]
    assert h16_bf16["wire"] == "bfloat16"
    assert h16_bf16["up_bytes_per_image"] < 0.55 * h16["up_bytes_per_image"]
    assert h16_bf16["up_bytes_per_image"] * 6 <= sync320["up_bytes_per_image"]
    # Downloads: one snapshot per unit, so they shrink with the unit size.
    assert h16["down_bytes_per_image"] * 3 <= sync320["down_bytes_per_image"]
    # At the real model size (64 feature maps, RGB) the ratios are the same story.
    assert h16_bf16["real_model_up_bytes_per_image"] * 30 <= sync64["real_model_up_bytes_per_image"]
    # The bf16 results really travel as bf16: rounding them changes the training.
    assert h16_bf16["frechet_distance"] != h16["frechet_distance"]
    assert 0.1 < report["classifier"]["test_accuracy"] <= 1.0
    refs = report["reference_distances"]
    assert 0 <= refs["real_train_vs_test"] < refs["untrained_generator"]
    check = report["fresh_adam_check"]
    assert set(check) == {"warm", "fresh", "local"}
    assert all(row["g_norm"] > 0 and row["d_norm"] > 0 for row in check.values())
    assert "| local-h16x3 |" in report["table"]
    assert (tmp_path / "results.json").exists()


def test_merge_combines_runs_with_equal_settings_only(bench, tmp_path):
    settings = {"data": "x", "images": 100, "seed": 0}
    for name, rows in {"a": ["baseline", "sync-320x3"], "b": ["local-h32x3-bf16"]}.items():
        (tmp_path / name).mkdir()
        report = {**settings, "schedules": [{"schedule": r} for r in rows], "table": name}
        (tmp_path / name / "results.json").write_text(json.dumps(report))
        (tmp_path / name / f"classifier-{name}.safetensors").write_bytes(b"weights")
    out = tmp_path / "merged"
    names = bench.merge_results([tmp_path / "a", tmp_path / "b"], out)
    assert names == ["baseline", "sync-320x3", "local-h32x3-bf16"]
    merged = json.loads((out / "results.json").read_text())
    assert {k: merged[k] for k in settings} == settings and "table" not in merged
    assert {p.name for p in out.glob("classifier-*")} == {
        "classifier-a.safetensors",
        "classifier-b.safetensors",
    }
    (tmp_path / "c").mkdir()
    other = {**settings, "seed": 1, "schedules": []}
    (tmp_path / "c" / "results.json").write_text(json.dumps(other))
    with pytest.raises(SystemExit, match="other settings"):
        bench.merge_results([tmp_path / "a", tmp_path / "c"], tmp_path / "bad")
