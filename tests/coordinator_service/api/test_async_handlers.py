"""Every endpoint and dependency is a coroutine: FastAPI runs a plain ``def`` one in its
thread pool, a thread hop per request that, under a class's load, waits behind uploads
decoding in threads (measured: docs/coordinator.md, "At a class's pace")."""

from __future__ import annotations

import inspect
from typing import Any

from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from coordinator_service.app import create_app
from coordinator_service.settings import Settings


def _runs_in_thread_pool(call: Any) -> bool:
    target = call if inspect.isfunction(call) or inspect.ismethod(call) else call.__call__
    return not (inspect.iscoroutinefunction(target) or inspect.isasyncgenfunction(target))


def _calls(dependant: Dependant) -> list[Any]:
    return [dependant.call, *(c for d in dependant.dependencies for c in _calls(d))]


def _api_routes(routes: list[Any]) -> list[APIRoute]:
    """Every APIRoute, also inside included routers (FastAPI >= 0.160 keeps those as one
    route holding the ``original_router``)."""
    found: list[APIRoute] = []
    for route in routes:
        if isinstance(route, APIRoute):
            found.append(route)
        elif (included := getattr(route, "original_router", None)) is not None:
            found.extend(_api_routes(included.routes))
    return found


def test_no_endpoint_or_dependency_runs_in_the_thread_pool() -> None:
    app = create_app(Settings(database_url="postgresql://unused/unused"))
    routes = _api_routes(app.routes)
    assert len(routes) > 20  # the whole API, not an empty list
    in_pool = {
        f"{route.path}: {getattr(call, '__qualname__', type(call).__name__)}"
        for route in routes
        for call in _calls(route.dependant)
        if call is not None and _runs_in_thread_pool(call)
    }
    assert not in_pool, f"make these async def: {sorted(in_pool)}"
