"""/docs is reachable and the schema documents models, status codes and the error shape."""

from __future__ import annotations

from coordinator_service.errors import CATALOGUE
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


def test_every_error_documented_is_the_error_body_sent(coordinator: RunningCoordinator) -> None:
    """No operation documents FastAPI's HTTPValidationError: the app never sends it.

    Each operation that validates parameters or a body documents 422 ``invalid_request``
    as an ErrorResponse, each documents the generic 500, and integer parameters carry
    their columns' bounds, so a client (or a fuzzer) knows what is refused before asking.
    """
    schema = coordinator.client().get(coordinator.url + "/openapi.json").json()
    assert not {"HTTPValidationError", "ValidationError"} & schema["components"]["schemas"].keys()
    operations = [op for item in schema["paths"].values() for op in item.values()]
    error_statuses = {str(entry.status) for entry in CATALOGUE.values()}
    for operation in operations:
        responses = operation["responses"]
        for status, response in responses.items():
            if (operation["operationId"], status) == ("healthz_healthz_get", "503"):
                continue  # the health report itself, documented as such
            if status in error_statuses:
                assert response["content"]["application/json"]["schema"]["$ref"].endswith(
                    "/ErrorResponse"
                ), (operation["operationId"], status)
        assert "`internal_error`" in responses["500"]["description"]
        if "parameters" in operation or "requestBody" in operation:
            assert "`invalid_request`" in responses["422"]["description"], operation["operationId"]
    result = schema["paths"]["/api/v1/work-units/{unit_id}/result"]["post"]["responses"]["422"]
    assert "`invalid_result`" in result["description"]  # the route's own 422 keeps its code
    assert "`invalid_request`" in result["description"]
    weights = schema["paths"]["/api/v1/weights/{iteration}"]["get"]["parameters"]
    bounds = {p["name"]: p["schema"] for p in weights}
    assert (bounds["iteration"]["minimum"], bounds["iteration"]["maximum"]) == (0, 2**31 - 1)
    run_id = next(s for s in bounds["run_id"]["anyOf"] if s.get("type") == "integer")
    assert (run_id["minimum"], run_id["maximum"]) == (1, 2**63 - 1)
