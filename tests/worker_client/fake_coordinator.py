"""An in-memory coordinator behind ``httpx.MockTransport``: the worker's logic, no sockets.

It speaks the /api/v1 protocol with a tiny model so a unit computes in milliseconds,
and lets a test script failures: outages, 401/403, 409 on upload, the end of the run.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx

from shared.codec import decode_result, encode_snapshot, select_snapshot
from shared.models import ModelConfig, StateSpec, build_models, model_state
from shared.protocol import (
    LEASE_HEADER,
    DatasetInfo,
    LocalStepsInfo,
    ModelSpecInfo,
    RegisterRequest,
    RunInfo,
    WorkUnit,
)
from shared.strategies import strategy_for
from shared.unit_result import UnitResult

TINY = ModelConfig(latent_dim=8, generator_features=4, discriminator_features=4)


def run_info(run_id: int = 1, max_staleness: int | None = None) -> RunInfo:
    """A run of the tiny model on 64 built-in faces: synchronous, or with
    ``max_staleness`` asynchronous local steps (H = 2 micro-batches of 2)."""
    if max_staleness is None:
        kind: dict[str, Any] = {}
    else:
        local = LocalStepsInfo(inner_steps=2, inner_lr=2e-4, inner_beta1=0.5, inner_beta2=0.999)
        kind = {"result_kind": "async_local_steps", "local_steps": local,
                "max_staleness": max_staleness}  # fmt: skip
    return RunInfo(
        run_id=run_id,
        seed=7,
        model=ModelSpecInfo(**TINY.to_dict()),
        dataset=DatasetInfo(dataset_id="builtin-64", kind="builtin", num_images=64),
        batch_size=2,
        **kind,
    )


@dataclass
class FakeCoordinator:
    """Hands out ``units`` (lists of indices, iteration) in order, then answers 410."""

    units: list[tuple[int, list[int]]] = field(
        default_factory=lambda: [(0, [0, 1, 2]), (0, [3, 4, 5])]
    )
    lease_seconds: float = 60.0
    join_code: str = "blue-otter"
    tokens: dict[str, int] = field(default_factory=dict)
    revoked: set[str] = field(default_factory=set)
    flagged: set[str] = field(default_factory=set)  # claims answered 403 worker_flagged
    outage_claims: int = 0  # the next N claims fail as if the coordinator were down
    idle_claims: int = 0  # the next N claims answer 204
    conflict_units: set[int] = field(default_factory=set)  # uploads answered 409
    on_request: Callable[[httpx.Request], None] | None = None
    max_staleness: int | None = None  # set: an asynchronous run
    current_version: int | None = None  # /weights/current; None: the last unit's iteration
    requests: list[httpx.Request] = field(default_factory=list)
    results: dict[int, UnitResult] = field(default_factory=dict)
    weight_downloads: list[int] = field(default_factory=list)
    requests_for_weights: list[httpx.Request] = field(default_factory=list)
    heartbeats: int = 0
    released: list[int] = field(default_factory=list)
    _next_unit: int = 0
    _ids: itertools.count = field(default_factory=lambda: itertools.count(1))

    def transport(self) -> httpx.MockTransport:
        """A transport that routes every request to this fake."""
        return httpx.MockTransport(self.handle)

    def handle(self, request: httpx.Request) -> httpx.Response:
        """Answer one request as the real coordinator would."""
        self.requests.append(request)
        if self.on_request is not None:
            self.on_request(request)
        path = request.url.path
        if path == "/api/v1/workers" and request.method == "POST":
            return self._register(request)
        auth = request.headers.get("Authorization", "")
        token = auth.removeprefix("Bearer ")
        if token in self.revoked:
            return _error(403, "worker revoked", "worker_revoked")
        if token not in self.tokens:
            return _error(401, "unknown token", "unknown_token")
        if token in self.flagged and path == "/api/v1/work-units/claim":
            return _error(403, "results disagreed in spot checks", "worker_flagged")
        if path == "/api/v1/workers/me/heartbeat":
            self.heartbeats += 1
            deadline = datetime.now(timezone.utc) + timedelta(seconds=self.lease_seconds)
            return httpx.Response(
                200,
                json={
                    "worker_id": self.tokens[token],
                    "leases_extended": 1,
                    "lease_deadline": deadline.isoformat(),
                    "lease_seconds_left": self.lease_seconds,
                },
            )
        if path == "/api/v1/work-units/claim":
            return self._claim()
        if path == "/api/v1/weights/current":
            current = self.current_version
            if current is None:
                current = self.units[max(self._next_unit - 1, 0)][0]
            return httpx.Response(307, headers={"location": f"/api/v1/weights/{current}?run_id=1"})
        if path.startswith("/api/v1/weights/"):
            iteration = int(path.rsplit("/", 1)[1])
            self.weight_downloads.append(iteration)
            self.requests_for_weights.append(request)
            generator, discriminator = build_models(TINY, seed=iteration)
            body = encode_snapshot(iteration, model_state(generator, discriminator))
            networks = request.url.params.get_list("networks")
            body = select_snapshot(body, networks) if networks else body
            return httpx.Response(200, content=body)
        if path.endswith("/result"):
            return self._result(request)
        if path.endswith("/release"):
            unit_id = int(path.split("/")[-2])
            self.released.append(unit_id)
            return httpx.Response(200, json={"unit_id": unit_id, "released": True})
        return _error(404, "not found", "not_found")

    def _register(self, request: httpx.Request) -> httpx.Response:
        body = RegisterRequest.model_validate_json(request.content)
        if body.join_code != self.join_code:
            return _error(401, "invalid join code", "invalid_join_code")
        worker_id = next(self._ids)
        token = f"token-{worker_id}"
        self.tokens[token] = worker_id
        return httpx.Response(200, json={"worker_id": worker_id, "name": body.name, "token": token})

    def _claim(self) -> httpx.Response:
        if self.outage_claims:
            self.outage_claims -= 1
            raise httpx.ConnectError("[Errno 111] Connection refused")
        if self.idle_claims:
            self.idle_claims -= 1
            return httpx.Response(204)
        if self._next_unit >= len(self.units):
            return _error(410, "the run is finished", "run_finished")
        iteration, indices = self.units[self._next_unit]
        self._next_unit += 1
        unit = WorkUnit(
            unit_id=self._next_unit,
            lease_id=f"lease-{self._next_unit}",
            iteration=iteration,
            epoch=0,
            image_indices=indices,
            lease_deadline=datetime.now(timezone.utc) + timedelta(seconds=self.lease_seconds),
            lease_seconds_left=self.lease_seconds,
            weights_url=f"/api/v1/weights/{iteration}",
            run=run_info(max_staleness=self.max_staleness),
        )
        return httpx.Response(200, content=unit.model_dump_json())

    def _result(self, request: httpx.Request) -> httpx.Response:
        unit_id = int(request.url.path.split("/")[-2])
        if request.headers.get(LEASE_HEADER) != f"lease-{unit_id}":
            return _error(409, "not your lease", "lease_lost")
        if unit_id in self.conflict_units:
            return _error(409, "stale iteration", "stale_iteration")
        iteration = self.units[unit_id - 1][0]
        run = run_info(max_staleness=self.max_staleness)
        layout = strategy_for(run).layout(iteration, StateSpec.from_config(TINY))
        result = decode_result(request.content, layout)
        self.results[unit_id] = result
        body = {
            "unit_id": unit_id,
            "iteration": result.iteration,
            "accepted": True,
            "num_samples": result.num_samples,
        }
        return httpx.Response(200, json=body)


def _error(status: int, detail: str, code: str) -> httpx.Response:
    return httpx.Response(status, content=json.dumps({"detail": detail, "code": code}))
