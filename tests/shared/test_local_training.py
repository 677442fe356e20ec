"""gan-train-local writes samples and checkpoints, and --resume continues exactly."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torch
from PIL import Image

from shared.local_training import load_checkpoint
from shared.train_local_cli import main

# A narrower model keeps a few thousand images within seconds on two cores; the
# contract tests elsewhere use the real size.
NARROW = ["--features", "16", "--batch-size", "64", "--threads", "1"]


def test_trains_a_few_thousand_images_and_writes_samples_and_a_checkpoint(tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert main([*NARROW, "--images", "2048", "--output", str(out), "--sample-every", "16"]) == 0
    run, progress, weights, optimizer = load_checkpoint(out / "checkpoint.safetensors")
    assert (progress.iteration, progress.images_seen) == (32, 2048)
    assert optimizer.step == 32 and run.model.generator_features == 16
    grids = []
    for name in ("samples_000016.png", "samples_000032.png", "samples_latest.png"):
        with Image.open(out / name) as grid:
            assert grid.size == (8 * 66 + 2, 8 * 66 + 2)  # 8x8 images of 64 px, 2 px padding
            grids.append(grid.tobytes())
    assert grids[0] != grids[1] and grids[1] == grids[2], "the generator should have moved"


def test_resume_continues_exactly_where_a_single_run_would_be(tmp_path: Path) -> None:
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert main([*NARROW, "--images", "384", "--output", str(straight)]) == 0
    assert main([*NARROW, "--images", "192", "--output", str(split)]) == 0
    checkpoint = split / "checkpoint.safetensors"
    assert (
        main(
            [
                "--resume",
                str(checkpoint),
                "--images",
                "384",
                "--output",
                str(split),
                "--threads",
                "1",
            ]
        )
        == 0
    )
    _, a_progress, a, a_opt = load_checkpoint(straight / "checkpoint.safetensors")
    _, b_progress, b, b_opt = load_checkpoint(checkpoint)
    assert a_progress == b_progress and a_opt.step == b_opt.step == 6
    for name in a:
        assert torch.equal(a[name], b[name]), name


def test_epochs_wrap_into_a_new_permutation(tmp_path: Path) -> None:
    out = tmp_path / "epochs"
    args = [*NARROW, "--builtin-size", "100", "--epochs", "2.5", "--output", str(out)]
    assert main(args) == 0
    _, progress, _, _ = load_checkpoint(out / "checkpoint.safetensors")
    # 100 images in steps of 64 then 36 per epoch: 2 steps per epoch, 250 images in all.
    assert (progress.epoch, progress.images_seen, progress.iteration) == (2, 250, 5)


def test_bad_dataset_path_is_a_clear_error(tmp_path: Path, capsys) -> None:
    assert main(["--dataset", str(tmp_path / "missing"), "--output", str(tmp_path)]) == 2
    assert "is not a folder of images" in capsys.readouterr().err


def test_folder_dataset_and_the_console_script(tmp_path: Path) -> None:
    folder = tmp_path / "pictures"
    folder.mkdir()
    for i in range(6):
        Image.new("RGB", (80 + i, 60), (40 * i, 100, 200)).save(folder / f"{i}.jpg")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "shared.train_local_cli",
            "--dataset",
            str(folder),
            "--dry-run",
            *NARROW,
            "--output",
            str(tmp_path / "out"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "6 images" in proc.stdout and "Dry run" in proc.stdout
    assert not (tmp_path / "out" / "checkpoint.safetensors").exists()
