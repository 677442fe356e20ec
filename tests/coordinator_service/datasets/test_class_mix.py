"""An ImageFolder sorted by class on disk still gives every micro-batch a shuffled
DataLoader's class mix, and an epoch trains every image exactly once."""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image

from coordinator_service.datasets.importer import import_dataset
from coordinator_service.training.planner import plan_epoch
from shared.dataset_shards import ShardedDataset
from shared.epoch_order import cut
from shared.protocol import RunConfig

CLASSES, PER_CLASS, BATCH = 10, 100, 64


def _colour(label: int) -> tuple[int, int, int]:
    return (20 * label + 10, 240 - 20 * label, 128)


def _mean_distinct(batches: list[list[int]]) -> float:
    return sum(len(set(b)) for b in batches) / len(batches)


def test_imported_class_folders_train_in_shuffled_micro_batches(tmp_path: Path) -> None:
    folder = tmp_path / "fashion"
    for label in range(CLASSES):
        (folder / f"class_{label}").mkdir(parents=True)
        for i in range(PER_CLASS):
            Image.new("RGB", (8, 8), _colour(label)).save(folder / f"class_{label}" / f"{i}.png")
    result = import_dataset(folder, tmp_path / "data", shard_size=100, workers=1, progress=False)
    dataset = ShardedDataset(result.path)
    reds = dataset.load(range(len(dataset)))[:, 0, 0, 0].tolist()
    label_of = {_colour(c)[0]: c for c in range(CLASSES)}
    labels = [label_of[r] for r in reds]

    config = RunConfig.model_validate({
        "images_per_unit": 128, "batch_size": BATCH,
        "dataset": {"kind": "sharded", "dataset_id": result.manifest.dataset_id,
                    "size": len(dataset), "shard_size": 100},
    })  # fmt: skip
    units = plan_epoch(config, epoch=0)
    trained = [i for _, indices in units for i in indices]
    assert sorted(trained) == list(range(len(dataset)))  # each image once in the epoch
    ours = [[labels[i] for i in batch]
            for _, indices in units for batch in cut(indices, BATCH)]  # fmt: skip

    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0)).tolist()
    loader = [[labels[i] for i in batch] for batch in cut(order, BATCH)]  # shuffle=True
    assert abs(_mean_distinct(ours) / _mean_distinct(loader) - 1) < 0.05
    # What the path order alone would give: about one class per micro-batch.
    by_path = sorted(labels)
    assert _mean_distinct(cut(by_path, BATCH)) < 2
