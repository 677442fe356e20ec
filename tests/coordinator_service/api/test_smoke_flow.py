"""First end-to-end flow: register, start a run, claim, upload, step, weights move."""

from __future__ import annotations

import time

from tests.conftest import NARROW_RUN, RunningCoordinator
from tests.coordinator_service.helpers import claim, fake_body, upload


def test_register_claim_upload_step(coordinator: RunningCoordinator) -> None:
    token = coordinator.register("ada")
    run = coordinator.start_run(**NARROW_RUN, units_per_step=2)
    assert run["iteration"] == 0
    worker = coordinator.client(token)
    units = [claim(worker), claim(worker)]
    assert all(u is not None for u in units)
    for unit in units:
        assert unit is not None
        w = worker.get(coordinator.url + unit.weights_url)
        assert w.status_code == 200 and w.headers["etag"]
        response = upload(worker, unit, fake_body(unit))
        assert response.status_code == 200, response.text
        assert response.json()["accepted"] is True
    deadline = time.monotonic() + 30
    while worker.get("/status").json()["run"]["iteration"] < 1:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    history = worker.get("/history").json()
    assert len(history) == 1 and history[0]["num_results"] == 2
    assert worker.get("/samples/1.png").headers["content-type"] == "image/png"
    current = worker.get("/weights/current", follow_redirects=False)
    assert current.status_code == 307 and "/weights/1" in current.headers["location"]


def test_weights_are_immutable_and_cached(coordinator: RunningCoordinator) -> None:
    coordinator.start_run(**NARROW_RUN)
    client = coordinator.client()
    first = client.get("/weights/0")
    assert first.status_code == 200
    assert first.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert first.headers["content-type"] == "application/octet-stream"
    again = client.get("/weights/0", headers={"If-None-Match": first.headers["etag"]})
    assert again.status_code == 304 and again.headers["etag"] == first.headers["etag"]
    assert client.get("/weights/7").json()["code"] == "unknown_iteration"
    current = client.get("/weights/current", follow_redirects=True)  # the 307
    assert current.content == first.content
