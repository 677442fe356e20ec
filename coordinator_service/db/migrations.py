"""Running alembic and checking that a database is at head, from code.

``serve`` refuses a database behind head (someone forgot ``gan-coordinator migrate``);
embedded mode, where the coordinator owns the whole server, migrates itself instead.
"""

from __future__ import annotations

from pathlib import Path

import asyncpg
from alembic.config import Config
from alembic.script import ScriptDirectory

from alembic import command

REPO_ROOT = Path(__file__).resolve().parents[2]
ALEMBIC_INI = REPO_ROOT / "alembic.ini"


def alembic_config(database_url: str) -> Config:
    """An alembic Config for the repo's migrations, pointed at ``database_url``."""
    config = Config(str(ALEMBIC_INI))
    config.set_main_option("script_location", str(REPO_ROOT / "alembic"))
    config.attributes["database_url"] = database_url
    return config


def upgrade(database_url: str, revision: str = "head") -> None:
    """Apply migrations up to ``revision`` (blocking; call from sync code or a thread)."""
    command.upgrade(alembic_config(database_url), revision)


def downgrade(database_url: str, revision: str) -> None:
    """Revert migrations down to ``revision`` ("base" drops everything)."""
    command.downgrade(alembic_config(database_url), revision)


def head_revision() -> str:
    """The newest revision in alembic/versions."""
    head = ScriptDirectory.from_config(alembic_config("")).get_current_head()
    if head is None:
        raise RuntimeError("no alembic revisions found")
    return head


async def current_revision(conn: asyncpg.Connection) -> str | None:
    """The revision a database is at, or None if it was never migrated."""
    exists = await conn.fetchval("SELECT to_regclass('alembic_version') IS NOT NULL")
    if not exists:
        return None
    return await conn.fetchval("SELECT version_num FROM alembic_version")
