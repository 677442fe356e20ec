"""OpenAPI documentation of error answers: every error body is an ErrorResponse."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from coordinator_service.errors import CATALOGUE
from shared.protocol import ErrorResponse

ERROR_SCHEMA = {"$ref": "#/components/schemas/ErrorResponse"}


# Sent with every 429 (coordinator_service.rate_limits).
RETRY_AFTER = {
    "Retry-After": {
        "description": "whole seconds to wait before the next request",
        "schema": {"type": "integer", "minimum": 1},
    }
}
RETRIED_AFTER = {"rate_limited", "weights_pending"}  # the codes answered with it


def _description(codes: list[str]) -> str:
    return "; ".join(f"`{c}`: {CATALOGUE[c].message}" for c in codes)


def _example(code: str) -> dict[str, str]:
    return {"detail": CATALOGUE[code].message, "code": code}


def errors(*codes: str) -> dict[int | str, dict[str, Any]]:
    """``responses=`` entries for the given error codes, grouped by status."""
    by_status: dict[int, list[str]] = {}
    for code in codes:
        by_status.setdefault(CATALOGUE[code].status, []).append(code)
    return {
        status: {
            "model": ErrorResponse,
            "description": _description(group),
            "content": {"application/json": {"example": _example(group[0])}},
            **({"headers": RETRY_AFTER} if RETRIED_AFTER & set(group) else {}),
        }
        for status, group in by_status.items()
    }


def _document(responses: dict[str, Any], code: str) -> None:
    """Add ``code`` to an operation's answers, next to the codes its status already has."""
    status = str(CATALOGUE[code].status)
    entry: dict[str, Any] = responses.get(status, {})
    content = entry.get("content", {}).get("application/json", {})
    if content.get("schema") != ERROR_SCHEMA:  # absent, or FastAPI's HTTPValidationError
        responses[status] = {
            "description": _description([code]),
            "content": {"application/json": {"schema": ERROR_SCHEMA, "example": _example(code)}},
        }
    elif f"`{code}`" not in entry["description"]:
        entry["description"] += f"; {_description([code])}"


def install(app: FastAPI) -> None:
    """Make /openapi.json document the bodies api/errors.py sends, on every operation.

    FastAPI documents its own 422 body (HTTPValidationError) wherever it validates
    parameters or a body; ours is an ErrorResponse with the code ``invalid_request``.
    Any operation can also answer the generic ``internal_error``.
    """
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = generate()
        for item in schema["paths"].values():
            for operation in item.values():
                if "parameters" in operation or "requestBody" in operation:
                    _document(operation["responses"], "invalid_request")
                _document(operation["responses"], "internal_error")
        for name in ("HTTPValidationError", "ValidationError"):
            schema["components"]["schemas"].pop(name, None)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


# The per-worker rate limit is applied where the token is checked, hence rate_limited.
WORKER_AUTH = ("not_authenticated", "invalid_token", "worker_revoked", "rate_limited")
ADMIN_AUTH = ("not_authenticated", "not_admin")
