"""/docs is reachable and the schema documents models, status codes and the error shape."""

from __future__ import annotations

from tests.conftest import RunningCoordinator


def test_docs_and_schema(coordinator: RunningCoordinator) -> None:
    client = coordinator.client()
    docs = client.get(coordinator.url + "/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()
    schema = client.get(coordinator.url + "/openapi.json").json()
    models = schema["components"]["schemas"]
    for name in ("WorkUnit", "RegisterRequest", "RegisterResponse", "ResultResponse",
                 "ErrorResponse", "RunConfig", "RunSummary", "HistoryEntry"):  # fmt: skip
        assert name in models, name
    paths = schema["paths"]
    claim = paths["/api/v1/work-units/claim"]["post"]["responses"]
    assert {"200", "204", "401", "403", "404", "410"} <= claim.keys()
    assert claim["410"]["content"]["application/json"]["schema"]["$ref"].endswith("ErrorResponse")
    result = paths["/api/v1/work-units/{unit_id}/result"]["post"]
    assert {"200", "401", "403", "404", "409", "413", "422"} <= result["responses"].keys()
    assert "application/octet-stream" in result["requestBody"]["content"]
    assert "stale_iteration" in result["responses"]["409"]["description"]
    assert {"WorkerToken", "AdminToken"} <= schema["components"]["securitySchemes"].keys()
    assert {"200", "304", "404"} <= paths["/api/v1/weights/{iteration}"]["get"]["responses"].keys()


def test_errors_share_one_json_shape(coordinator: RunningCoordinator) -> None:
    client = coordinator.client()
    for response in (client.get("/no/such/path"), client.get("/history"),
                     client.post("/workers", content=b"{")):  # fmt: skip
        assert response.status_code in (404, 422)
        assert set(response.json()) == {"detail", "code"}
    assert client.get(coordinator.url + "/healthz").json() == {"status": "ok"}
    assert "gan_claims" in client.get(coordinator.url + "/metrics").text
