"""Write docs/configuration.md from the settings objects, so the reference never drifts.

    python scripts/gen_config_docs.py           # rewrite docs/configuration.md
    python scripts/gen_config_docs.py --check   # exit 1 if the committed file is stale

Every row comes from a pydantic-settings field: its environment variable (prefix and
aliases), type, default, bounds and ``description``. A field without a description in
the code gets the short text from ``FALLBACK`` below; the description in the code wins,
and a FALLBACK entry for a field that no longer exists is an error (tests/deploy).
Defaults computed per machine (a user folder, the login name) are shown as what they
compute, never as this machine's value, so the file is the same everywhere.
"""

from __future__ import annotations

import argparse
import sys
import types
import typing
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from coordinator_service.settings import Settings  # noqa: E402
from worker_client.cli import build_parser as worker_parser  # noqa: E402
from worker_client.settings import WorkerSettings  # noqa: E402

OUTPUT = REPO_ROOT / "docs" / "configuration.md"

# Short texts for fields that carry no description in the code (keyed by class, field).
FALLBACK: dict[tuple[str, str], str] = {
    ("Settings", "environment"): "`production` refuses placeholder or short secrets; "
    "`development` allows them (local tries only)",
    ("Settings", "database_url"): "PostgreSQL URL; empty: an embedded PostgreSQL in the "
    "data dir (migrated automatically)",
    ("Settings", "data_dir"): "where the embedded PostgreSQL keeps its files",
    ("Settings", "admin_token"): "the instructor's bearer token for /api/v1/admin and the "
    "`gan-coordinator run/join-code/workers` commands",
    ("Settings", "join_code"): "the code students register with (the first time only)",
    ("Settings", "public_url"): "the address students use, shown to the class",
    ("Settings", "pool_min_size"): "database connections kept open",
    ("Settings", "pool_max_size"): "most database connections at once",
    ("Settings", "aggregator_enabled"): "run the aggregator (the optimizer step) in this "
    "process; one per database is enough",
    ("Settings", "aggregator_tick_seconds"): "how often the aggregator checks whether a "
    "step is due (s)",
    ("Settings", "keep_last_states"): "the newest iterations whose weights are kept",
    ("Settings", "checkpoint_every"): "every Nth iteration's weights and optimizer state "
    "are kept for good (export and resume from them)",
    ("Settings", "weights_cache_size"): "iterations' weights kept in memory for downloads",
    ("WorkerSettings", "name"): "your name on the leaderboard",
    ("WorkerSettings", "verbose"): "debug lines and every HTTP request",
    ("WorkerSettings", "connect_timeout"): "seconds to wait for a connection",
}

# What a per-machine default computes, where the factory's docstring says too little.
COMPUTED_DEFAULTS: dict[tuple[str, str], str] = {
    ("Settings", "data_dir"): "your user data folder: `~/.local/share/gan-coordinator` "
    "on Linux (in the container image: `/data/gan-coordinator`)",
}


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return " \\| ".join(f"`{a}`" for a in typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        names = [_type_name(a) for a in typing.get_args(annotation) if a is not type(None)]
        return " \\| ".join(names) + " (optional)"
    if isinstance(annotation, type):
        return {"str": "text", "Path": "path", "bool": "true/false"}.get(
            annotation.__name__, annotation.__name__
        )
    return str(annotation)


def _default(cls: type[BaseSettings], name: str, field: FieldInfo) -> str:
    if (cls.__name__, name) in COMPUTED_DEFAULTS:
        return COMPUTED_DEFAULTS[(cls.__name__, name)]
    if field.default_factory is not None:
        doc = (field.default_factory.__doc__ or "").strip().splitlines() or ["see meaning"]
        return "per machine: " + doc[0][:1].lower() + doc[0][1:].rstrip(".")
    value = field.default
    if value is None:
        return "not set"
    if value == "":
        return "empty"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    return f"`{value}`"


def _bounds(field: FieldInfo) -> str:
    parts = []
    lengths = {}
    for item in field.metadata:
        for attr, sign in (("ge", "≥"), ("gt", ">"), ("le", "≤"), ("lt", "<")):
            if getattr(item, attr, None) is not None:
                parts.append(f"{sign} {getattr(item, attr)}")
        for attr in ("min_length", "max_length"):
            if getattr(item, attr, None) is not None:
                lengths[attr] = getattr(item, attr)
    if lengths:
        low, high = lengths.get("min_length", 0), lengths.get("max_length", "")
        parts.append(f"{low}–{high} characters")
    return ", ".join(parts)


def _env_names(cls: type[BaseSettings], name: str, field: FieldInfo) -> list[str]:
    alias = field.validation_alias
    choices = getattr(alias, "choices", None)
    if choices:
        return [str(c) for c in choices]
    return [(cls.model_config.get("env_prefix") or "") + name.upper()]


def _description(cls: type[BaseSettings], name: str, field: FieldInfo) -> str:
    return field.description or FALLBACK.get((cls.__name__, name), "")


def _escape(text: str) -> str:
    return text.replace("|", "\\|")


def _table(cls: type[BaseSettings], flags: dict[str, list[str]] | None = None) -> Iterable[str]:
    header = ["environment variable", "type", "default", "meaning"]
    if flags is not None:
        header.insert(1, "flag")
    yield "| " + " | ".join(header) + " |"
    yield "|" + "---|" * len(header)
    for name, field in cls.model_fields.items():
        envs = " or ".join(f"`{e}`" for e in _env_names(cls, name, field))
        bounds = _bounds(field)
        meaning = _escape(_description(cls, name, field)) + (f" ({bounds})" if bounds else "")
        row = [envs, _type_name(field.annotation), _default(cls, name, field), meaning]
        if flags is not None:
            row.insert(1, ", ".join(f"`{f}`" for f in flags.get(name, [])) or "—")
        yield "| " + " | ".join(row) + " |"


def _worker_flags() -> dict[str, list[str]]:
    flags: dict[str, list[str]] = {}
    for action in worker_parser()._actions:
        if action.dest != "help":
            flags.setdefault(action.dest, []).extend(action.option_strings)
    return flags


def render() -> str:
    """The whole of docs/configuration.md."""
    lines = [
        "# Configuration reference",
        "",
        "<!-- Generated by scripts/gen_config_docs.py from the settings objects; do not edit.",
        "     Regenerate with: python scripts/gen_config_docs.py -->",
        "",
        "Both programs read one settings object each (pydantic-settings). Secrets and every",
        "other option can come from the environment; nothing needs a config file.",
        "",
        "## Coordinator (`gan-coordinator`)",
        "",
        f"`{Settings.__module__}.{Settings.__name__}`: environment variables with the prefix",
        f"`{Settings.model_config.get('env_prefix')}`, also read from a `.env` file in the "
        "working directory",
        "(the environment wins). With `docker compose`, set them in `.env` (see `.env.example`)",
        "and in `docker-compose.yml`'s `x-coordinator-environment`.",
        "",
        *_table(Settings),
        "",
        "`serve` takes its address as flags: `--host` (default `127.0.0.1`; `0.0.0.0` to be",
        "reachable from the class), `--port` (default `8000`), `--ssl-certfile` and",
        "`--ssl-keyfile` for HTTPS without a proxy. `gan-coordinator --help` lists every",
        "command.",
        "",
        "## Worker (`gan-worker`)",
        "",
        f"`{WorkerSettings.__module__}.{WorkerSettings.__name__}`: a command-line flag wins "
        "over an environment",
        f"variable (prefix `{WorkerSettings.model_config.get('env_prefix')}`), which wins "
        "over the YAML file named by",
        "`--config` (keys are the setting names, see `config.yaml.template`), which wins over",
        "the default.",
        "",
        *_table(WorkerSettings, _worker_flags()),
        "",
        "## Docker Compose only",
        "",
        "`POSTGRES_PASSWORD`, `COORDINATOR_PORT`, `DATASETS_DIR`, the `HTTPS_*` and `DEMO_*`",
        "variables configure the containers, not the programs: `.env.example` documents each.",
        "",
    ]
    return "\n".join(lines)


def stale_fallbacks() -> list[tuple[str, str]]:
    """FALLBACK/COMPUTED_DEFAULTS keys that name no field any more (silently unused)."""
    classes: dict[str, type[BaseSettings]] = {
        "Settings": Settings,
        "WorkerSettings": WorkerSettings,
    }
    keys = [*FALLBACK, *COMPUTED_DEFAULTS]
    return [key for key in keys if key[1] not in classes[key[0]].model_fields]


def main(argv: list[str] | None = None) -> int:
    """Write the file, or with --check report whether it is up to date."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the file is stale")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        if not OUTPUT.exists() or OUTPUT.read_text() != text:
            print(f"{OUTPUT} is stale: run python scripts/gen_config_docs.py", file=sys.stderr)
            return 1
        return 0
    OUTPUT.write_text(text)
    print(f"wrote {OUTPUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
