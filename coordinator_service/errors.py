"""Domain errors and the one catalogue that turns their codes into HTTP answers.

Hierarchy::

    CoordinatorError(code)        every refusal the coordinator means to make
    └── raised with a code from CATALOGUE; the API layer maps it to
        (status, public message) and answers {"detail": ..., "code": ...}

Anything else escaping a route is a bug: it is logged and answered with a generic 500,
so no internal detail (SQL, paths, tensors) ever reaches a student's terminal.
"""

from __future__ import annotations

from typing import NamedTuple


class ErrorEntry(NamedTuple):
    status: int
    message: str


CATALOGUE: dict[str, ErrorEntry] = {
    "not_authenticated": ErrorEntry(401, "A bearer token is required."),
    "invalid_token": ErrorEntry(401, "The token is not valid."),
    "worker_revoked": ErrorEntry(403, "This worker has been revoked by the instructor."),
    "worker_flagged": ErrorEntry(
        403,
        "Spot checks found this worker's results different from other workers' "
        "recomputations of the same units; the instructor can clear the flag.",
    ),
    "invalid_join_code": ErrorEntry(403, "The join code is not valid."),
    "not_admin": ErrorEntry(403, "The admin token is not valid."),
    "unknown_unit": ErrorEntry(404, "No such work unit."),
    "unknown_run": ErrorEntry(404, "No such run."),
    "unknown_iteration": ErrorEntry(404, "No weights stored for that iteration."),
    "unknown_sample": ErrorEntry(404, "No sample grid stored for that iteration."),
    "unknown_worker": ErrorEntry(404, "No such worker."),
    "no_run": ErrorEntry(404, "No training run has been started yet."),
    "unknown_dataset": ErrorEntry(404, "This run's images are not served as shards."),
    "unknown_shard": ErrorEntry(404, "No such shard in this dataset."),
    "lease_lost": ErrorEntry(409, "This lease is no longer yours; the unit went back to the pool."),
    "lease_expired": ErrorEntry(409, "The lease expired; the unit went back to the pool."),
    "stale_iteration": ErrorEntry(
        409, "The model has moved on to a newer iteration; this result is stale."
    ),
    "unit_completed": ErrorEntry(409, "Another worker's result for this unit was accepted first."),
    "run_active": ErrorEntry(409, "A run is already active; stop it first."),
    "run_not_live": ErrorEntry(409, "The run is not active or paused."),
    "run_finished": ErrorEntry(410, "Training is finished."),
    "result_too_large": ErrorEntry(413, "The result body is larger than this model allows."),
    "invalid_result": ErrorEntry(422, "The result body was refused."),
    "result_out_of_bounds": ErrorEntry(
        422, "The result's values or norms are far outside what this run's workers send."
    ),
    "invalid_request": ErrorEntry(422, "The request is malformed."),
    "rate_limited": ErrorEntry(
        429, "Too many requests; wait the seconds in the Retry-After header, then retry."
    ),
    "weights_pending": ErrorEntry(
        503, "These weights were just published and are still being stored; retry shortly."
    ),
    "internal_error": ErrorEntry(500, "Internal error; the instructor can find it in the log."),
}


class CoordinatorError(Exception):
    """A refusal with a stable code; ``detail`` adds a safe, specific explanation and
    ``headers`` go out with the answer (``Retry-After`` on 429)."""

    def __init__(
        self, code: str, detail: str | None = None, *, headers: dict[str, str] | None = None
    ) -> None:
        if code not in CATALOGUE:
            raise KeyError(f"unknown error code {code!r}")
        self.code = code
        self.detail = detail or CATALOGUE[code].message
        self.headers = headers or {}
        super().__init__(f"{code}: {self.detail}")

    @property
    def status(self) -> int:
        return CATALOGUE[self.code].status
