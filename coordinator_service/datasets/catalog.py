"""The imported datasets under a data root: ``<root>/<dataset_id>/manifest.json`` + shards.

Only a folder named by a dataset id whose manifest validates counts as a dataset;
``.partial-*`` folders of unfinished imports are listed separately and never served.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from coordinator_service.settings import Settings
from shared.dataset_shards import MANIFEST_NAME, DatasetManifest, read_manifest

_ID = re.compile(r"^[0-9a-f]{16}$")


class DatasetNotFoundError(LookupError):
    """No imported dataset matches the given id, id prefix or name."""


@dataclass(frozen=True)
class CatalogEntry:
    """One imported dataset: its folder and manifest."""

    path: Path
    manifest: DatasetManifest


def datasets_root(settings: Settings) -> Path:
    """Where this coordinator keeps imported datasets (``GAN_DATASETS_DIR``, else
    ``<GAN_DATA_DIR>/datasets``)."""
    return settings.datasets_dir or settings.data_dir / "datasets"


def open_dataset(root: str | Path, dataset_id: str) -> CatalogEntry | None:
    """The complete dataset with exactly this id, or None (ids are never paths)."""
    if not _ID.match(dataset_id):
        return None
    folder = Path(root) / dataset_id
    try:
        manifest = read_manifest(folder)
    except (OSError, ValueError, ValidationError):
        return None
    return CatalogEntry(folder, manifest) if manifest.dataset_id == dataset_id else None


def list_datasets(root: str | Path) -> list[CatalogEntry]:
    """Every complete dataset under ``root``, oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    entries = []
    for folder in root.iterdir():
        if not _ID.match(folder.name) or not (folder / MANIFEST_NAME).is_file():
            continue
        try:
            manifest = read_manifest(folder)
        except (OSError, ValueError, ValidationError):
            continue  # not ours, or damaged: never serve it
        if manifest.dataset_id == folder.name:
            entries.append(CatalogEntry(folder, manifest))
    return sorted(entries, key=lambda e: (e.manifest.created_at, e.manifest.dataset_id))


def partial_imports(root: str | Path) -> list[Path]:
    """Folders of imports that have not finished (re-run the import to continue)."""
    root = Path(root)
    return sorted(root.glob(".partial-*")) if root.is_dir() else []


def find_dataset(root: str | Path, key: str) -> CatalogEntry:
    """The dataset whose id, id prefix (4+ characters) or name is ``key``."""
    entries = list_datasets(root)
    for entry in entries:
        if entry.manifest.dataset_id == key:
            return entry
    matches = [e for e in entries if e.manifest.name == key]
    if len(key) >= 4:
        matches += [e for e in entries if e.manifest.dataset_id.startswith(key)]
    distinct = {e.manifest.dataset_id: e for e in matches}
    if len(distinct) == 1:
        return next(iter(distinct.values()))
    if not distinct:
        known = ", ".join(f"{e.manifest.name} ({e.manifest.dataset_id})" for e in entries)
        raise DatasetNotFoundError(
            f"no imported dataset {key!r} in {root}; imported: {known or 'none'}. "
            "Import one with: gan-coordinator dataset import PATH"
        )
    raise DatasetNotFoundError(f"{key!r} matches several datasets; give the full dataset id")


def find_by_fingerprint(root: str | Path, fingerprint: str) -> CatalogEntry | None:
    """The dataset an earlier import of the very same source produced, if any."""
    for entry in list_datasets(root):
        if entry.manifest.source_fingerprint == fingerprint:
            return entry
    return None
