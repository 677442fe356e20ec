"""notebooks/worker_colab.ipynb: valid nbformat 4 JSON whose commands use real flags, and
that runs, cell by cell in a Jupyter kernel, a worker that trains with a live coordinator."""

from __future__ import annotations

import ast
import json
import os
import re
import sys
from pathlib import Path
from typing import Any

import nbclient
import nbformat
import pytest
import tomllib
import torch

from tests.conftest import NARROW_RUN, REPO_ROOT, RunningCoordinator
from tests.deploy import docs
from worker_client.settings import WorkerSettings

NOTEBOOK = REPO_ROOT / "notebooks" / "worker_colab.ipynb"


@pytest.fixture(scope="module")
def notebook() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(NOTEBOOK.read_text())
    return data


def _source(cell: dict[str, Any]) -> str:
    source = cell["source"]
    return "".join(source) if isinstance(source, list) else str(source)


def test_notebook_is_valid_nbformat_4(notebook: dict[str, Any]) -> None:
    assert notebook["nbformat"] == 4 and notebook["nbformat_minor"] >= 4
    assert notebook["metadata"]["kernelspec"]["language"] == "python"
    ids = [cell.get("id") for cell in notebook["cells"]]
    if notebook["nbformat_minor"] >= 5:
        assert all(isinstance(i, str) and re.fullmatch(r"[a-zA-Z0-9-_]{1,64}", i) for i in ids)
        assert len(set(ids)) == len(ids)
    for cell in notebook["cells"]:
        assert cell["cell_type"] in ("markdown", "code", "raw")
        assert isinstance(cell["metadata"], dict)
        assert isinstance(cell["source"], list | str)
        if cell["cell_type"] == "code":
            # Committed clean: no outputs from someone's run, no execution counts.
            assert cell["outputs"] == [] and cell["execution_count"] is None


def _settings(notebook: dict[str, Any]) -> dict[str, str]:
    """The notebook's plain-Python cells must compile; their string assignments returned."""
    values: dict[str, str] = {}
    for cell in notebook["cells"]:
        if cell["cell_type"] != "code":
            continue
        python = "\n".join(
            line for line in _source(cell).splitlines() if not line.lstrip().startswith("!")
        )
        for node in ast.walk(ast.parse(python)):
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant):
                for target in node.targets:
                    if isinstance(target, ast.Name) and isinstance(node.value.value, str):
                        values[target.id] = node.value.value
    return values


def test_notebook_commands_use_real_flags(notebook: dict[str, Any]) -> None:
    values = _settings(notebook)
    shell = [
        line.strip()[1:].format(**values)
        for cell in notebook["cells"]
        if cell["cell_type"] == "code"
        for line in _source(cell).splitlines()
        if line.strip().startswith("!")
    ]
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["name"]
    assert any(re.search(rf"pip install .*\b{re.escape(project)}\b", line) for line in shell)
    calls = [call for line in shell for call in docs.program_calls(line)]
    assert [program for program, _ in calls] == ["gan-worker"]
    _, args = calls[0]
    assert docs.parse_error("gan-worker", args) is None
    assert {"--url", "--join-code", "--name"} <= set(args)
    url = args[args.index("--url") + 1]
    assert WorkerSettings(url=url, join_code=values["JOIN_CODE"]).url == url


def test_the_notebook_runs_a_worker_against_a_live_coordinator(
    coordinator: RunningCoordinator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Run all, as a student would, in a real Jupyter kernel: the parameters cell gets this
    coordinator (as papermill injects values after a cell tagged ``parameters``), and the
    ``install`` cell is left out because this environment already holds the package."""
    coordinator.start_run(**NARROW_RUN, units_per_step=1, max_iterations=1)
    nb = nbformat.reads(NOTEBOOK.read_text(), as_version=4)
    tags = [tags_of(cell) for cell in nb.cells]
    assert sum("parameters" in t for t in tags) == 1 and sum("install" in t for t in tags) == 1
    nb.cells = [cell for cell, t in zip(nb.cells, tags, strict=True) if "install" not in t]
    where = next(i for i, cell in enumerate(nb.cells) if "parameters" in tags_of(cell))
    injected = (
        f"COORDINATOR_URL = {coordinator.url!r}\nJOIN_CODE = {coordinator.join_code!r}\n"
        "NAME = 'colab-test'"
    )
    nb.cells.insert(where + 1, nbformat.v4.new_code_cell(injected))
    # The kernel finds gan-worker where pip put it, and keeps its token in this test's folder.
    bin_dir = str(Path(sys.executable).parent)
    monkeypatch.setenv("PATH", bin_dir + os.pathsep + os.environ["PATH"])
    monkeypatch.setenv("GAN_WORKER_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("GAN_WORKER_TORCH_THREADS", "1")
    monkeypatch.setenv("GAN_WORKER_POLL_INTERVAL", "0.1")
    client = nbclient.NotebookClient(
        nb, kernel_name="python3", timeout=300, resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()
    printed = "".join(
        output.get("text", "")
        for cell in nb.cells
        if cell.cell_type == "code"
        for output in cell.outputs
    )
    expected_device = "GPU:" if torch.cuda.is_available() else "No GPU: the worker will use"
    assert expected_device in printed
    assert "The training run is finished" in printed, printed
    board = {row["name"]: row for row in coordinator.client().get("/leaderboard").json()}
    assert board["colab-test"]["total_work_units"] == 2  # the D phase's unit and the G phase's


def tags_of(cell: Any) -> list[str]:
    return list(cell.metadata.get("tags", []))
