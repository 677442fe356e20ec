"""docs/configuration.md is generated from the settings objects: it must match them."""

from __future__ import annotations

import importlib.util
from types import ModuleType

from coordinator_service.settings import Settings
from tests.conftest import REPO_ROOT
from worker_client.settings import WorkerSettings

SCRIPT = REPO_ROOT / "scripts" / "gen_config_docs.py"


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_config_docs", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_configuration_reference_is_up_to_date() -> None:
    script = _script()
    committed = (REPO_ROOT / "docs" / "configuration.md").read_text()
    assert committed == script.render(), (
        "docs/configuration.md is stale: run python scripts/gen_config_docs.py and commit it"
    )
    assert script.main(["--check"]) == 0


def test_every_setting_is_documented_and_no_fallback_is_stale() -> None:
    script = _script()
    text = script.render()
    for name in Settings.model_fields:
        assert f"`GAN_{name.upper()}`" in text, name
    for name in WorkerSettings.model_fields:
        assert f"`GAN_WORKER_{name.upper()}`" in text, name
    assert script.stale_fallbacks() == []
