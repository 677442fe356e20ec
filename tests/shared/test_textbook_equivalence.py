"""gan-train-local takes pytorch/examples' dcgan steps, at the class model's real size."""

from __future__ import annotations

from pathlib import Path

import torch

from shared.builtin_faces import BuiltinFaces
from shared.epoch_order import epoch_order
from shared.image_sources import BUILTIN_SHARD_SIZE
from shared.local_training import LocalRun, load_checkpoint, train
from shared.models import build_models, model_state
from shared.unit_result import image_noise
from tests.shared.helpers import assert_same_state, textbook_dcgan

BATCH, ITERATIONS, SEED = 16, 3, 5


def test_gan_train_local_equals_the_textbook_loop(tmp_path: Path) -> None:
    run = LocalRun(builtin_size=200, batch_size=BATCH, seed=SEED)
    source = BuiltinFaces(size=200, seed=SEED)
    train(
        run, source=source, total_images=ITERATIONS * BATCH, device=torch.device("cpu"),
        output=tmp_path, sample_every=100, checkpoint_every=100,
    )  # fmt: skip
    _, progress, ours, _ = load_checkpoint(tmp_path / "checkpoint.safetensors")
    assert progress.iteration == ITERATIONS

    order = epoch_order(SEED, 0, len(source), BUILTIN_SHARD_SIZE)
    batches = []
    for t in range(ITERATIONS):
        indices = order[t * BATCH : (t + 1) * BATCH]
        batches.append((source.load(indices), image_noise(SEED, t, indices, 100)))
    w0 = model_state(*build_models(run.model, seed=SEED))
    assert_same_state(ours, textbook_dcgan(run.model, w0, batches))
