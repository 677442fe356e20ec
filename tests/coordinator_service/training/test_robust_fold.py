"""A robust fold keeps a short run on course when 1 of 5 workers sends poisoned results.

A local-steps run with outer lr 1 and no momentum publishes exactly W_t minus the
combined weight change, so the published weights show the fold's update. Each version
(two from W_0) the test computes all five units honestly (real torch), sends one of
them scaled by 1,000 or sign-flipped, and compares the coordinator's update with the
clean one (the plain mean of the five honest changes, computed here): the cosine must
stay >= 0.9.
The plain mean under the same attack is computed too, to show the attack matters: it
steps 100 times too far.

A sign-flipped result is not an outlier coordinate by coordinate wherever honest
results disagree, so the coordinate-wise folds hardly help against it: measured here at
version 0, trimmed mean 0.77, median 0.73, plain mean 0.74. Multi-Krum judges whole
results and leaves exactly the attacker's out: 0.947, what dropping that unit gives.
"""

from __future__ import annotations

import httpx
import pytest
import torch
from torch import Tensor

from shared.codec import decode_snapshot, encode_result
from shared.models import StateSpec
from shared.protocol import WorkUnit
from tests.conftest import NARROW_RUN, RunningCoordinator
from tests.coordinator_service.helpers import (
    claim_when_ready,
    model_config,
    real_result,
    upload,
    wait_for_version,
)

UNITS = 5


def _flat(tensors: dict[str, Tensor]) -> Tensor:
    return torch.cat([tensors[k].flatten() for k in sorted(tensors)])


def _cosine(a: Tensor, b: Tensor) -> float:
    return float(torch.dot(a, b) / (a.norm() * b.norm()))


@pytest.mark.parametrize(
    ("aggregation", "attack", "factor"),
    [("trimmed_mean", "x1000", 1000.0), ("median", "x1000", 1000.0),
     ("multi_krum", "x1000", 1000.0), ("multi_krum", "sign flip", -1.0)],
)  # fmt: skip
def test_one_poisoned_worker_of_five(
    coordinator: RunningCoordinator, aggregation: str, attack: str, factor: float
) -> None:
    honest = coordinator.client(coordinator.register("honest"))
    attacker = coordinator.client(coordinator.register("mallory"))
    coordinator.start_run(
        **{**NARROW_RUN, "images_per_unit": 16}, batch_size=8, units_per_step=UNITS,
        result_kind="local_steps", outer_lr=1.0, outer_momentum=0.0,
        aggregation=aggregation,
    )  # fmt: skip
    for version in range(2):
        weights = wait_for_version(honest, version)
        units: list[tuple[httpx.Client, WorkUnit]] = [(attacker, claim_when_ready(attacker))]
        units += [(honest, claim_when_ready(honest)) for _ in range(UNITS - 1)]
        results = [real_result(unit, weights) for _, unit in units]
        clean = -sum(_flat(r.tensors) for r in results) / UNITS  # equal units: the mean
        # What leaving the attacker's unit out altogether would give: the best a fold can
        # do when it cannot tell that unit's result from an honest one.
        without = -sum(_flat(r.tensors) for r in results[1:]) / (UNITS - 1)
        for r in results[:1]:
            for tensor in r.tensors.values():
                tensor.mul_(factor)
        plain = -sum(_flat(r.tensors) for r in results) / UNITS
        for (client, unit), result in zip(units, results, strict=True):
            response = upload(client, unit, encode_result(result))
            assert response.status_code == 200, response.text
        spec = StateSpec.from_config(model_config(units[0][1]))
        before = decode_snapshot(weights, spec).weights
        after = decode_snapshot(wait_for_version(honest, version + 1), spec).weights
        names = sorted(results[0].tensors)
        update = _flat({k: after[k] - before[k] for k in names})
        cosine, size = _cosine(update, clean), float(update.norm() / clean.norm())
        print(f"{aggregation}, {attack}, version {version}: cosine {cosine:.3f}, norm x{size:.2f}"
              f" (plain mean: cosine {_cosine(plain, clean):.3f}, "
              f"norm x{float(plain.norm() / clean.norm()):.1f}; without the unit: "
              f"{_cosine(without, clean):.3f})")  # fmt: skip
        assert cosine >= 0.9 and 0.5 < size < 2
        if factor > 1:  # the plain mean would step 100 times too far, mostly the attacker's way
            assert plain.norm() > 100 * clean.norm() and _cosine(plain, clean) < 0.9
        else:
            assert _cosine(plain, clean) < 0.9
