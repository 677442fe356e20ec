"""Two workers of a synchronous run take the steps of torchrun DDP with two ranks.

The coordinator side: two registered workers, each computing one unit of B/2 images
per phase. The reference: ``gan-train-local`` under ``torchrun --nproc-per-node 2``
(gloo), each rank training B/2 images of every batch with DistributedDataParallel
averaging the gradients. Both end after 3 iterations; every parameter and buffer must
agree to the last bit (the averaging orders are the same: a unit's D losses are summed
before the one all-reduce, and halving a sum of two is exact).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

from shared.codec import decode_snapshot, encode_result
from shared.local_training import load_checkpoint
from shared.models import ModelConfig, StateSpec
from tests.conftest import RunningCoordinator
from tests.coordinator_service.helpers import (
    claim_when_ready,
    real_result,
    upload,
    wait_for_version,
)
from tests.shared.helpers import assert_same_state

SEED, B, ITERATIONS, DATASET = 13, 16, 3, 64



def _torchrun(output: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         "-m", "shared.train_local_cli", "--builtin-size", str(DATASET), "--seed", str(SEED),
         "--batch-size", str(B), "--images", str(ITERATIONS * B), "--device", "cpu",
         "--threads", "1", "--output", str(output)],
        capture_output=True, text=True, timeout=600, env=env,
    )  # fmt: skip


def test_two_workers_equal_torchrun_ddp_with_two_gloo_ranks(
    coordinator: RunningCoordinator, tmp_path: Path
) -> None:
    torch.set_num_threads(1)
    config = ModelConfig()  # the real model size
    coordinator.start_run(
        seed=SEED, units_per_step=2, images_per_unit=B // 2, batch_size=B // 2,
        max_iterations=ITERATIONS, dataset={"size": DATASET, "shard_size": 1000},  # one shard
    )  # fmt: skip
    workers = [coordinator.client(coordinator.register(name)) for name in ("ada", "alan")]
    for version in range(2 * ITERATIONS):
        units = [claim_when_ready(w) for w in workers]
        assert {u.iteration for u in units} == {version}
        for worker, unit in zip(workers, units, strict=True):
            weights = worker.get(coordinator.url + unit.weights_url).content
            body = encode_result(real_result(unit, weights))
            assert upload(worker, unit, body).status_code == 200
    final = wait_for_version(workers[0], 2 * ITERATIONS)
    served = decode_snapshot(final, StateSpec.from_config(config)).weights

    ran = _torchrun(tmp_path / "ddp")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert "on 2 ranks" in ran.stdout
    _, progress, ddp, _ = load_checkpoint(tmp_path / "ddp" / "checkpoint.safetensors")
    assert progress.iteration == ITERATIONS
    assert served.keys() == ddp.keys()
    assert_same_state(served, ddp)
