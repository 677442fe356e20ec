"""The ``dataset import|list`` sub-commands: exit codes and what the instructor reads."""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from coordinator_service.datasets.catalog import list_datasets, partial_imports
from coordinator_service.datasets.commands import add_dataset_parser
from coordinator_service.datasets.importer import import_dataset


def _run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="gan-coordinator")
    add_dataset_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.handler(args)


def test_import_then_list(celeba_folder: Path, data_root: Path, capsys: pytest.CaptureFixture):
    argv = ["--data-dir", str(data_root), "--quiet", "--shard-size", "5", "--workers", "1"]
    assert _run(["dataset", "import", str(celeba_folder), "--name", "faces", *argv]) == 0
    out = capsys.readouterr().out
    assert "imported: faces" in out and "11 images in 3 shards" in out and "1 skipped" in out
    assert _run(["dataset", "import", str(celeba_folder), *argv]) == 0
    assert "already imported" in capsys.readouterr().out
    assert _run(["dataset", "list", "--data-dir", str(data_root)]) == 0
    listing = capsys.readouterr().out
    assert "faces" in listing and "11" in listing


def test_missing_path_exits_non_zero(tmp_path: Path, data_root: Path, capsys):
    code = _run(["dataset", "import", str(tmp_path / "nope"), "--data-dir", str(data_root)])
    assert code == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "does not exist" in err
    assert _run(["dataset", "list", "--data-dir", str(data_root)]) == 0
    assert "no datasets imported" in capsys.readouterr().out


def test_dataset_without_action_prints_usage(capsys):
    assert _run(["dataset"]) == 2
    assert "import" in capsys.readouterr().err


def test_run_start_can_name_an_imported_dataset():
    from coordinator_service.cli import build_parser, run_start_body

    args = build_parser().parse_args(["run", "start", "--dataset", "celeba", "--seed", "3"])
    body = run_start_body(args)
    assert body["config"] == {"seed": 3, "dataset": {"kind": "sharded", "dataset_id": "celeba"}}
    plain = run_start_body(build_parser().parse_args(["run", "start", "--dataset-size", "64"]))
    assert plain["config"] == {"dataset": {"size": 64}}


def test_killed_import_leaves_no_dataset_and_a_rerun_completes_it(tmp_path: Path):
    root = tmp_path / "datasets"
    command = [
        str(Path(sys.executable).with_name("gan-coordinator")), "dataset", "import", "builtin",
        "--builtin-size", "200", "--shard-size", "5", "--workers", "1", "--quiet",
        "--data-dir", str(root),
    ]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while len(list(root.glob(".partial-*/shard-*.json"))) < 2:
            assert process.poll() is None, "the import ended before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.01)
        process.send_signal(signal.SIGKILL)  # no handler runs, as in a power cut
    finally:
        process.wait(timeout=30)
    assert list_datasets(root) == [] and len(partial_imports(root)) == 1

    rerun = subprocess.run([*command[:-2], "--data-dir", str(root)], capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    assert "shards resumed" in rerun.stdout
    [entry] = list_datasets(root)
    clean = import_dataset("builtin", tmp_path / "clean", builtin_size=200, shard_size=5,
                           workers=1, progress=False)  # fmt: skip
    assert entry.manifest.dataset_id == clean.manifest.dataset_id
    assert partial_imports(root) == []
