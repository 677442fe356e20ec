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
