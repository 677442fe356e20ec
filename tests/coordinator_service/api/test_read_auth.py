"""The weights and the dataset are for registered, unrevoked workers and the instructor.

Anyone who can reach the coordinator's port could otherwise copy the class's model
(or keep downloading it after being revoked). The dashboard and its sample grids stay
public: they are what the class watches.
"""

from __future__ import annotations

import asyncio

import httpx

from tests.conftest import NARROW_RUN, RunningCoordinator
from tests.coordinator_service.helpers import database_fingerprint

READS = ("/weights/0", "/weights/current", "/dataset", "/dataset/shards/0")


def _answers(client: httpx.Client) -> dict[str, tuple[int, str]]:
    """Status and error code (or "") of every protected read."""
    out = {}
    for path in READS:
        response = client.get(path, follow_redirects=False)
        code = response.json().get("code", "") if response.status_code >= 400 else ""
        out[path] = (response.status_code, code)
    return out


def test_weights_and_dataset_need_a_worker_or_the_admin_token(
    coordinator: RunningCoordinator,
) -> None:
    token = coordinator.register("ada")
    coordinator.start_run(**NARROW_RUN)
    worker, admin = coordinator.client(token), coordinator.admin()
    served = worker.get("/weights/0")
    assert served.status_code == 200 and served.content
    assert admin.get("/weights/0").content == served.content
    assert worker.get("/weights/current", follow_redirects=False).status_code == 307
    assert worker.get("/dataset").json()["kind"] == "builtin"
    assert admin.get("/dataset").status_code == 200

    before = asyncio.run(database_fingerprint(coordinator.database_url))
    anonymous, stranger = coordinator.client(), coordinator.client("not-a-real-token")
    assert set(_answers(anonymous).values()) == {(401, "not_authenticated")}
    assert set(_answers(stranger).values()) == {(401, "invalid_token")}
    # The public side is untouched: status, the dashboard, the sample grid.
    assert anonymous.get("/status").status_code == 200
    assert anonymous.get(coordinator.url + "/").status_code == 200

    worker_id = worker.get("/workers/me").json()["worker_id"]
    assert admin.post(f"/admin/workers/{worker_id}/revoke").status_code == 200
    revoked_state = asyncio.run(database_fingerprint(coordinator.database_url))
    assert revoked_state != before  # the revocation itself is written...
    assert set(_answers(worker).values()) == {(403, "worker_revoked")}
    # ...and no refused read wrote anything.
    assert asyncio.run(database_fingerprint(coordinator.database_url)) == revoked_state


def test_openapi_documents_the_read_auth(coordinator: RunningCoordinator) -> None:
    paths = coordinator.client().get(coordinator.url + "/openapi.json").json()["paths"]
    for path in ("/api/v1/weights/{iteration}", "/api/v1/weights/current", "/api/v1/dataset",
                 "/api/v1/dataset/shards/{k}"):  # fmt: skip
        operation = paths[path]["get"]
        schemes = {name for entry in operation["security"] for name in entry}
        assert schemes == {"WorkerToken", "AdminToken"}, path
        assert {"401", "403"} <= operation["responses"].keys(), path
        assert "worker_revoked" in operation["responses"]["403"]["description"], path
