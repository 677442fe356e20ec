"""A run naming an imported dataset: resolve the name to the manifest before the run starts.

``POST /admin/runs`` may say ``{"dataset": {"kind": "sharded", "dataset_id": "celeba"}}``
(an id, an id prefix or a name). The stored run config always holds the full id and
the manifest's size and shard size, so units are planned on the real shard boundaries
and a worker can check it is training on exactly these images.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from coordinator_service.datasets.catalog import DatasetNotFoundError, find_dataset
from coordinator_service.errors import CoordinatorError


def bind_dataset(overrides: dict[str, Any], root: Path) -> dict[str, Any]:
    """``overrides`` with a sharded dataset reference filled in from its manifest."""
    dataset = overrides.get("dataset")
    if not isinstance(dataset, dict) or dataset.get("kind") != "sharded":
        return overrides
    key = str(dataset.get("dataset_id") or dataset.get("name") or "")
    try:
        entry = find_dataset(root, key)
    except DatasetNotFoundError as exc:
        raise CoordinatorError("invalid_request", str(exc)) from None
    missing = [s.filename for s in entry.manifest.shards if not (entry.path / s.filename).is_file()]
    if missing:
        raise CoordinatorError(
            "invalid_request",
            f"dataset {entry.manifest.dataset_id} is missing {len(missing)} shard files "
            f"(first: {missing[0]}); import it again",
        )
    manifest = entry.manifest
    bound = {
        "kind": "sharded",
        "dataset_id": manifest.dataset_id,
        "name": manifest.name,
        "size": manifest.image_count,
        "shard_size": manifest.shard_size,
    }
    return {**overrides, "dataset": bound}
