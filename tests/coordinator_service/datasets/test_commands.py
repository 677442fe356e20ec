"""The ``dataset import|list`` sub-commands: exit codes and what the instructor reads."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from coordinator_service.datasets.commands import add_dataset_parser


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
