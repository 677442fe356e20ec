"""Class-size presets: sensible run options for a handful, a classroom, a lecture hall.

More workers means more units in flight per step (so nobody idles) and, with more
students on flaky Wi-Fi, shorter timeouts so one straggler never holds the class up.
"""

from __future__ import annotations

from typing import Any

from shared.protocol import RunConfig

PRESETS: dict[str, dict[str, Any]] = {
    # up to ~10 laptops
    "small": {"units_per_step": 2, "step_timeout": 300.0, "lease_seconds": 300.0,
              "backup_after_seconds": 120.0},
    # a classroom, ~10-40 workers
    "medium": {"units_per_step": 8, "step_timeout": 180.0, "lease_seconds": 240.0,
               "backup_after_seconds": 90.0},
    # a lecture hall, 40-150 workers
    "large": {"units_per_step": 24, "step_timeout": 120.0, "lease_seconds": 180.0,
              "backup_after_seconds": 60.0},
}  # fmt: skip


def resolve(preset: str | None, overrides: dict[str, Any]) -> RunConfig:
    """Defaults, then the preset, then explicit options (validated as a RunConfig)."""
    values: dict[str, Any] = dict(PRESETS[preset]) if preset else {}
    values.update(overrides)
    return RunConfig.model_validate(values)
