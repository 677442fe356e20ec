"""``gan-coordinator export`` / ``sample``: the generator of a stored iteration, as a file."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image
from safetensors.torch import load as st_load

from coordinator_service.db.pool import connect
from coordinator_service.db.runs import RunsRepo
from coordinator_service.export import (
    FORMAT_GENERATOR,
    ExportError,
    export_generator,
    generator_file,
    load_generator,
    sample_png,
)
from coordinator_service.training import engine
from coordinator_service.training.planner import plan_epoch
from shared.codec import encode_snapshot, read_metadata
from shared.protocol import RunConfig
from tests.conftest import NARROW_RUN, RunningCoordinator, free_port
from tests.shared.helpers import assert_same_state


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread() -> None:
    torch.set_num_threads(1)


def _start_run(database_url: str, config: RunConfig) -> tuple[int, dict[str, torch.Tensor]]:
    """A run at iteration 0, written the way POST /admin/runs writes it."""
    state, encoded = engine.initial_state(config)

    async def create() -> int:
        conn = await connect(database_url)
        try:
            run = await RunsRepo(conn).create(
                config=config,
                weights=encoded.weights,
                weights_etag=encoded.weights_etag,
                checkpoint=encoded.checkpoint,
                units=plan_epoch(config, 0),
            )
        finally:
            await conn.close()
        return run.run_id

    return asyncio.run(create()), state.weights


def _export(database_url: str, **kw: Any) -> Any:
    return asyncio.run(export_generator(database_url, **kw))


@pytest.fixture
def narrow() -> RunConfig:
    return RunConfig.model_validate({**NARROW_RUN, "seed": 7})


def test_export_holds_the_generator_of_the_stored_iteration(
    database_url: str, narrow: RunConfig
) -> None:
    run_id, weights = _start_run(database_url, narrow)
    exported = _export(database_url)
    assert (exported.run_id, exported.iteration) == (run_id, 0)

    generator, metadata = load_generator(exported.data)
    assert metadata["format"] == FORMAT_GENERATOR
    assert (metadata["run_id"], metadata["iteration"]) == (str(run_id), "0")
    assert json.loads(metadata["model"])["latent_dim"] == narrow.latent_dim
    assert RunConfig.model_validate_json(metadata["run_config"]) == narrow
    assert not generator.training
    own = generator.state_dict()
    expected = {k[len("generator.") :]: v for k, v in weights.items() if k.startswith("generator.")}
    assert expected and expected.keys() <= own.keys()
    for name, tensor in expected.items():
        assert torch.equal(own[name], tensor), name
    again = _export(database_url, run_id=run_id, iteration=0)
    assert load_generator(again.data)[1] == metadata


def test_export_names_what_is_stored_when_the_iteration_is_not(
    database_url: str, narrow: RunConfig
) -> None:
    with pytest.raises(ExportError, match="no run yet"):
        _export(database_url)
    run_id, _ = _start_run(database_url, narrow)
    with pytest.raises(ExportError, match="stored: 0"):
        _export(database_url, iteration=5)
    with pytest.raises(ExportError, match=f"no run {run_id + 1}"):
        _export(database_url, run_id=run_id + 1)


def test_sample_draws_a_deterministic_grid(narrow: RunConfig) -> None:
    state, _ = engine.initial_state(narrow)
    data = generator_file(state.weights, run_id=1, iteration=0, config=narrow)
    png = sample_png(data, count=6, nrow=3)
    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG"
    assert image.size == (3 * 66 + 2, 2 * 66 + 2)  # 64x64 images, 2-pixel padding
    assert sample_png(data, count=6, nrow=3) == png
    assert sample_png(data, count=6, nrow=3, seed=narrow.seed + 1) != png


def test_load_generator_refuses_other_files(narrow: RunConfig) -> None:
    state, _ = engine.initial_state(narrow)
    with pytest.raises(ExportError, match="format"):
        load_generator(encode_snapshot(0, state.weights))
    with pytest.raises(ExportError, match="not an exported generator"):
        load_generator(b"not safetensors at all")


def test_cli_export_then_sample(
    database_url: str, narrow: RunConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    from coordinator_service.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DATABASE_URL", database_url)
    assert main(["export"]) == 1
    assert "no run yet" in capsys.readouterr().err
    run_id, _ = _start_run(database_url, narrow)
    assert main(["export", "--run", str(run_id), "--iteration", "0", "-o", "g.safetensors"]) == 0
    assert f"run {run_id} at iteration 0" in capsys.readouterr().out
    assert main(["sample", "g.safetensors", "--count", "4", "--nrow", "2"]) == 0
    assert Image.open(tmp_path / "samples.png").size == (2 * 66 + 2, 2 * 66 + 2)
    assert main(["sample", "missing.safetensors"]) == 1
    assert "missing.safetensors" in capsys.readouterr().err


def test_cli_export_by_url_downloads_what_the_database_holds(
    coordinator: RunningCoordinator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    from coordinator_service.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DATABASE_URL", raising=False)  # over HTTP only: no database at hand
    by_url = ["--url", coordinator.url, "--admin-token", coordinator.admin_token]
    assert main(["export", *by_url]) == 1
    assert "no run yet" in capsys.readouterr().err
    run_id = coordinator.start_run(**NARROW_RUN, seed=7)["run_id"]
    assert main(["export", *by_url, "-o", "http.safetensors"]) == 0
    assert f"run {run_id} at iteration 0" in capsys.readouterr().out
    direct = _export(coordinator.database_url, run_id=run_id, iteration=0)
    # Equal as files are read (safetensors writes its metadata map in no fixed order).
    downloaded = (tmp_path / "http.safetensors").read_bytes()
    assert read_metadata(downloaded) == read_metadata(direct.data)
    assert_same_state(st_load(downloaded), st_load(direct.data))

    assert main(["export", *by_url, "--iteration", "5"]) == 1
    assert f"run {run_id} has no stored weights for iteration 5" in capsys.readouterr().err
    assert main(["export", *by_url, "--run", str(run_id + 1)]) == 1
    assert f"no run {run_id + 1}" in capsys.readouterr().err
    # The weights are not public: without the admin token the download is refused, clearly.
    monkeypatch.delenv("GAN_ADMIN_TOKEN", raising=False)
    assert main(["export", "--url", coordinator.url, "-o", "anon.safetensors"]) == 1
    assert "refused the admin token (401)" in capsys.readouterr().err
    assert not (tmp_path / "anon.safetensors").exists()
    assert main(["export", "--url", f"http://127.0.0.1:{free_port()}"]) == 1
    assert "cannot reach the coordinator" in capsys.readouterr().err
