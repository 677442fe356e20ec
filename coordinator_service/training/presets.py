"""Class-size presets: sensible run options for a handful, a classroom, a lecture hall.

Chosen with the class simulator (``bench/class_simulator.py``, docs/training.md) on top
of the local-steps schedule measured in docs/local-steps.md (H = 32 inner steps per
laptop unit, bfloat16 results, outer Nesterov SGD at lr 0.7 and momentum 0.9):

* ``small`` keeps the barrier: 3 units of 2,048 images per outer step. With 4 simulated
  laptops at seed 1 it led the asynchronous mode from the third class minute on (285
  against 779 after six), whose one-result folds are noisier.
* ``medium`` and ``large`` train asynchronously (no barrier), for equal progress with
  nobody waiting, not for speed: with 16 laptops at seed 1 both modes drew what one
  laptop alone draws about 1.5x sooner (the barrier 445 after 4 class minutes, the
  asynchronous mode 805 after 2), but the barrier kept 3 laptops computing and 13
  waiting. (A first sweep at seed 0 had the asynchronous mode 13.8x sooner; the lone
  laptop barely learned there, and that speed-up did not hold.) K, the results per
  fold, grows with the class so that a result is on average about 20 versions old at
  the top of its range (the timing simulation: 19 at 40 workers with K = 2, 18 at 150
  with K = 8, no result refused as too stale), where K = 1 left results 61 versions old
  at 120 workers and 1,236 of about 2,650 results (47 %) were computed for nothing,
  refused as too stale.
* None of them turns on dynamic local updates (``--unit-seconds``): in the simulator
  they kept a GPU 15x a laptop computing 92-98 % of its time instead of 40 %, but a class
  of 7 laptops and that GPU drew worse at equal class minutes with them (596 against 401
  and 394 against 283 after one class minute at two seeds, 32 feature maps): the GPU's
  H = 128 units move the weights further than the fold can use, as H = 32 x 8 did in
  docs/local-steps.md.

Timeouts allow for a slow laptop: a 2,048-image unit is about half a minute on two CPU
cores, plus 25 MB down and 13 MB up.
"""

from __future__ import annotations

from typing import Any

from shared.protocol import ASYNC_DEFAULTS, DYNAMIC_DEFAULTS, LOCAL_KINDS, RunConfig

_LOCAL_STEPS: dict[str, Any] = {"result_kind": "local_steps", "inner_steps": 32,
                                "images_per_unit": 2048, "result_dtype": "bfloat16"}  # fmt: skip
_ASYNC: dict[str, Any] = {**_LOCAL_STEPS, "result_kind": "async_local_steps"}

PRESETS: dict[str, dict[str, Any]] = {
    # up to ~10 laptops
    "small": {**_LOCAL_STEPS, "units_per_step": 3, "step_timeout": 300.0,
              "lease_seconds": 300.0, "backup_after_seconds": 150.0},
    # a classroom, ~10-40 workers
    "medium": {**_ASYNC, "units_per_step": 2, "step_timeout": 240.0,
               "lease_seconds": 300.0, "backup_after_seconds": 120.0},
    # a lecture hall, 40-150 workers
    "large": {**_ASYNC, "units_per_step": 8, "step_timeout": 180.0,
              "lease_seconds": 240.0, "backup_after_seconds": 90.0},
}  # fmt: skip

# What each kind of run may be given; a preset's other values are dropped when an
# explicit --result-kind changes the kind (e.g. a synchronous run on a medium class).
_ONLY_FOR = {
    **{name: LOCAL_KINDS for name in ("inner_steps", "result_dtype", "unit_seconds",
                                      "max_units_per_claim", *DYNAMIC_DEFAULTS)},
    **{name: ("async_local_steps",) for name in ASYNC_DEFAULTS},
}  # fmt: skip


def resolve(preset: str | None, overrides: dict[str, Any]) -> RunConfig:
    """Defaults, then the preset, then explicit options (validated as a RunConfig).

    ``--result-kind synchronous`` on top of a preset drops the preset's local-steps
    choices (H, unit size, dtype, dynamic units) rather than refusing them: they were the
    preset's, not the instructor's, and a synchronous run gets its own defaults (64-image
    units, fp32). Likewise another ``--images-per-unit`` or ``--batch-size`` without
    ``--inner-steps`` drops the preset's H, so H follows the unit (one pass over it).
    """
    values: dict[str, Any] = dict(PRESETS[preset]) if preset else {}
    if {"images_per_unit", "batch_size"} & overrides.keys() and "inner_steps" not in overrides:
        values.pop("inner_steps", None)
    kind = overrides.get("result_kind", values.get("result_kind", "synchronous"))
    for name, kinds in _ONLY_FOR.items():
        if kind not in kinds and name not in overrides:
            values.pop(name, None)
    if kind not in LOCAL_KINDS and "images_per_unit" not in overrides:
        values.pop("images_per_unit", None)
    values.update(overrides)
    return RunConfig.model_validate(values)
