"""Class-size presets: sensible run options for a handful, a classroom, a lecture hall.

Every preset trains in local-steps mode: H = 32 inner steps on 2,048-image units with
bfloat16 results, outer Nesterov SGD at lr 0.7 and momentum 0.9 (the defaults). In
docs/local-steps.md (one epoch of Fashion-MNIST, the class model) that schedule learned
clothes while single-process ``gan-train-local`` and every synchronous schedule did not,
and it moves 8.5x fewer bytes per trained image than 320-image gradient units (12.8x
fewer uploaded).

More workers means more units per step, so fewer students wait for the next weights;
spare workers compute backup copies of stragglers. Timeouts allow for a slow laptop: a
2,048-image unit is about half a minute on two CPU cores, plus 25 MB down and 13 MB up.
"""

from __future__ import annotations

from typing import Any

from shared.protocol import LOCAL_KINDS, LOCAL_STEPS_DEFAULTS, RunConfig

_LOCAL_STEPS: dict[str, Any] = {"result_kind": "local_steps", "inner_steps": 32,
                                "images_per_unit": 2048, "result_dtype": "bfloat16"}  # fmt: skip

PRESETS: dict[str, dict[str, Any]] = {
    # up to ~10 laptops
    "small": {**_LOCAL_STEPS, "units_per_step": 3, "step_timeout": 300.0,
              "lease_seconds": 300.0, "backup_after_seconds": 150.0},
    # a classroom, ~10-40 workers
    "medium": {**_LOCAL_STEPS, "units_per_step": 8, "step_timeout": 240.0,
               "lease_seconds": 300.0, "backup_after_seconds": 120.0},
    # a lecture hall, 40-150 workers
    "large": {**_LOCAL_STEPS, "units_per_step": 24, "step_timeout": 180.0,
              "lease_seconds": 240.0, "backup_after_seconds": 90.0},
}  # fmt: skip


def resolve(preset: str | None, overrides: dict[str, Any]) -> RunConfig:
    """Defaults, then the preset, then explicit options (validated as a RunConfig).

    ``--result-kind synchronous`` on top of a preset drops the preset's local-steps
    choices (H, unit size, dtype) rather than refusing them: they were the preset's, not
    the instructor's, and a synchronous run gets its own defaults (64-image units, fp32).
    Likewise another ``--images-per-unit`` or ``--batch-size`` without ``--inner-steps``
    drops the preset's H, so H follows the unit (one pass over it).
    """
    values: dict[str, Any] = dict(PRESETS[preset]) if preset else {}
    if {"images_per_unit", "batch_size"} & overrides.keys() and "inner_steps" not in overrides:
        values.pop("inner_steps", None)
    values.update(overrides)
    if values.get("result_kind", "synchronous") not in LOCAL_KINDS:
        for name in {*LOCAL_STEPS_DEFAULTS, *_LOCAL_STEPS}:
            if name not in overrides:
                values.pop(name, None)
    return RunConfig.model_validate(values)
