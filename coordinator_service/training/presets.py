"""Class-size presets: sensible run options for a handful, a classroom, a lecture hall.

More workers means more units in flight per step (so nobody idles) and, with more
students on flaky Wi-Fi, shorter timeouts so one straggler never holds the class up.

Every preset trains in local-steps mode, H = 16 on 1,024-image units with bfloat16
results (outer Nesterov SGD, lr 0.7, momentum 0.9: the defaults): in docs/local-steps.md
(one epoch of Fashion-MNIST) that was the only distributed schedule that learned (Fréchet
distance 239 vs 254 for single-process training), while synchronous gradients with three
workers learned nothing, and it sends 6.4x fewer result bytes per trained image than the
classic 320-image gradient units. Only 3 units per step was measured; medium and large
keep their units per step and are extrapolations.
"""

from __future__ import annotations

from typing import Any

from shared.protocol import LOCAL_STEPS_DEFAULTS, RunConfig

_LOCAL_STEPS: dict[str, Any] = {"result_kind": "local_steps", "inner_steps": 16,
                                "images_per_unit": 1024, "result_dtype": "bfloat16"}  # fmt: skip

PRESETS: dict[str, dict[str, Any]] = {
    # up to ~10 laptops
    "small": {**_LOCAL_STEPS, "units_per_step": 3, "step_timeout": 300.0,
              "lease_seconds": 300.0, "backup_after_seconds": 120.0},
    # a classroom, ~10-40 workers
    "medium": {**_LOCAL_STEPS, "units_per_step": 8, "step_timeout": 180.0,
               "lease_seconds": 240.0, "backup_after_seconds": 90.0},
    # a lecture hall, 40-150 workers
    "large": {**_LOCAL_STEPS, "units_per_step": 24, "step_timeout": 120.0,
              "lease_seconds": 180.0, "backup_after_seconds": 60.0},
}  # fmt: skip


def resolve(preset: str | None, overrides: dict[str, Any]) -> RunConfig:
    """Defaults, then the preset, then explicit options (validated as a RunConfig).

    ``--result-kind gradients`` on top of a preset drops the preset's local-steps
    choices (H, unit size, dtype) rather than refusing them: they were the preset's, not
    the instructor's, and a gradients run gets its own defaults (320-image units, fp32).
    """
    values: dict[str, Any] = dict(PRESETS[preset]) if preset else {}
    values.update(overrides)
    if values.get("result_kind", "gradients") != "local_steps":
        for name in {*LOCAL_STEPS_DEFAULTS, *_LOCAL_STEPS}:
            if name not in overrides:
                values.pop(name, None)
    return RunConfig.model_validate(values)
