"""Exception handlers: every error leaves as ``{"detail", "code"}`` with the catalogue's status."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from coordinator_service.errors import CATALOGUE, CoordinatorError

log = logging.getLogger(__name__)

_HTTP_CODES = {401: "not_authenticated", 404: "not_found", 405: "method_not_allowed"}


def _error(status: int, detail: str, code: str) -> JSONResponse:
    return JSONResponse({"detail": detail, "code": code}, status_code=status)


def install(app: FastAPI) -> None:
    """Register the handlers on an app."""

    @app.exception_handler(CoordinatorError)
    async def domain_error(request: Request, exc: CoordinatorError) -> JSONResponse:
        response = _error(exc.status, exc.detail, exc.code)
        response.headers.update(exc.headers)  # e.g. Retry-After on 429 rate_limited
        return response

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', '')}"
            for e in exc.errors()[:5]
        )
        return _error(422, f"{CATALOGUE['invalid_request'].message} {problems}", "invalid_request")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400:  # a body FastAPI could not parse (e.g. JSON not in UTF-8)
            message = CATALOGUE["invalid_request"].message
            return _error(422, f"{message} {exc.detail}", "invalid_request")
        code = _HTTP_CODES.get(exc.status_code, f"http_{exc.status_code}")
        response = _error(exc.status_code, str(exc.detail), code)
        if exc.headers:
            response.headers.update(exc.headers)
        return response

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        entry = CATALOGUE["internal_error"]
        return _error(entry.status, entry.message, "internal_error")
