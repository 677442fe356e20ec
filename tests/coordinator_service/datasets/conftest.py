"""Fixtures for the dataset import tests: a CelebA-like folder with one corrupt JPEG."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.coordinator_service.datasets.fixtures import write_celeba_folder

COUNT = 12
CORRUPT = 5  # 000005.jpg is truncated


@pytest.fixture(scope="session")
def celeba_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """img_align_celeba/ with 12 JPEGs of 178x218, the fifth one truncated."""
    folder = tmp_path_factory.mktemp("celeba") / "img_align_celeba"
    write_celeba_folder(folder, COUNT, corrupt=(CORRUPT,))
    return folder


@pytest.fixture
def data_root(tmp_path: Path) -> Path:
    """An empty datasets root for one test."""
    return tmp_path / "datasets"
