"""notebooks/worker_colab.ipynb: valid nbformat 4 JSON whose commands use real flags."""

from __future__ import annotations

import ast
import json
import re
from typing import Any

import pytest
import tomllib

from tests.conftest import REPO_ROOT
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
