"""First end-to-end flow: register, start a run, claim, upload, step, weights move."""

from __future__ import annotations

import time

from tests.conftest import NARROW_RUN, RunningCoordinator
from tests.coordinator_service.helpers import claim, fake_body, sampled_through, upload


def _step(coordinator: RunningCoordinator, worker, version: int) -> list:
    """Claim the version's two units, upload fake results, wait for the next version."""
    units = [claim(worker), claim(worker)]
    for unit in units:
        assert unit is not None and unit.iteration == version
        w = worker.get(coordinator.url + unit.weights_url)
        assert w.status_code == 200 and w.headers["etag"]
        response = upload(worker, unit, fake_body(unit))
        assert response.status_code == 200, response.text
        assert response.json()["accepted"] is True
    deadline = time.monotonic() + 30
    while worker.get("/status").json()["run"]["iteration"] < version + 1:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    return units


def test_register_claim_upload_step(coordinator: RunningCoordinator) -> None:
    token = coordinator.register("ada")
    run = coordinator.start_run(**NARROW_RUN, units_per_step=2)
    assert run["iteration"] == 0
    worker = coordinator.client(token)
    d_units = _step(coordinator, worker, 0)  # the D phase
    # The G phase: the D phase's units again; D's new part is all a worker lacks.
    part = worker.get("/weights/1", params={"networks": "discriminator"})
    whole = worker.get("/weights/1")
    assert part.status_code == 200 and len(part.content) < 0.5 * len(whole.content)
    assert part.headers["etag"] != whole.headers["etag"]
    again = worker.get("/weights/1", params={"networks": "discriminator"},
                       headers={"If-None-Match": part.headers["etag"]})  # fmt: skip
    assert again.status_code == 304
    bad = worker.get("/weights/1", params={"networks": "critic"})
    assert bad.status_code == 422
    g_units = _step(coordinator, worker, 1)
    assert [u.image_indices for u in g_units] == [u.image_indices for u in d_units]
    history = worker.get("/history").json()
    assert [h["num_results"] for h in history] == [2, 2]
    sampled_through(worker, 2)
    assert worker.get("/samples/2.png").headers["content-type"] == "image/png"
    current = worker.get("/weights/current", follow_redirects=False)
    assert current.status_code == 307 and "/weights/2" in current.headers["location"]


def test_weights_are_immutable_and_cached(coordinator: RunningCoordinator) -> None:
    coordinator.start_run(**NARROW_RUN)
    client = coordinator.client(coordinator.register("ada"))
    first = client.get("/weights/0")
    assert first.status_code == 200
    assert first.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert first.headers["content-type"] == "application/octet-stream"
    again = client.get("/weights/0", headers={"If-None-Match": first.headers["etag"]})
    assert again.status_code == 304 and again.headers["etag"] == first.headers["etag"]
    assert client.get("/weights/7").json()["code"] == "unknown_iteration"
    current = client.get("/weights/current", follow_redirects=True)  # the 307
    assert current.content == first.content
