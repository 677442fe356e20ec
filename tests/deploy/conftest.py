"""Fixtures for the deployment tests: the compose file's coordinator on an empty database."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from coordinator_service.embedded import with_database
from tests.conftest import _admin_execute, _unique
from tests.deploy.compose import ComposeCoordinator, start_compose_coordinator


@pytest.fixture
def empty_database_url(pg_server_url: str) -> Iterator[str]:
    """A brand-new database with no schema at all (the migrate service's starting point)."""
    name = _unique("gan_compose")
    asyncio.run(_admin_execute(pg_server_url, f'CREATE DATABASE "{name}"'))
    try:
        yield with_database(pg_server_url, name)
    finally:
        asyncio.run(_admin_execute(pg_server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def compose_coordinator(empty_database_url: str, tmp_path: Path) -> Iterator[ComposeCoordinator]:
    """migrate, then serve, as docker-compose.yml runs them (see tests/deploy/compose.py)."""
    running = start_compose_coordinator(empty_database_url, tmp_path)
    try:
        yield running
    finally:
        running.stop()
