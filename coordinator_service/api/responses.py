"""OpenAPI documentation of error answers: every error body is an ErrorResponse."""

from __future__ import annotations

from typing import Any

from coordinator_service.errors import CATALOGUE
from shared.protocol import ErrorResponse


def errors(*codes: str) -> dict[int | str, dict[str, Any]]:
    """``responses=`` entries for the given error codes, grouped by status."""
    by_status: dict[int, list[str]] = {}
    for code in codes:
        by_status.setdefault(CATALOGUE[code].status, []).append(code)
    return {
        status: {
            "model": ErrorResponse,
            "description": "; ".join(f"`{c}`: {CATALOGUE[c].message}" for c in group),
            "content": {
                "application/json": {
                    "example": {"detail": CATALOGUE[group[0]].message, "code": group[0]}
                }
            },
        }
        for status, group in by_status.items()
    }


# The per-worker rate limit is applied where the token is checked, hence rate_limited.
WORKER_AUTH = ("not_authenticated", "invalid_token", "worker_revoked", "rate_limited")
ADMIN_AUTH = ("not_authenticated", "not_admin")
