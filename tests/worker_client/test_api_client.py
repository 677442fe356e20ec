"""The HTTP client: status codes become the documented exceptions, headers are right."""

from __future__ import annotations

import httpx
import pytest

from shared.protocol import HardwareInfo
from tests.conftest import NARROW_RUN
from worker_client import errors
from worker_client.api_client import CoordinatorClient

from .fake_coordinator import FakeCoordinator


def client_for(handler, token: str | None = "t") -> CoordinatorClient:
    return CoordinatorClient(
        "http://coordinator", token=token, transport=httpx.MockTransport(handler)
    )


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (401, errors.UnknownToken),
        (403, errors.WorkerRevoked),
        (404, errors.NotFound),
        (409, errors.LeaseLost),
        (410, errors.RunFinished),
        (413, errors.ResultTooLarge),
        (422, errors.ResultRejected),
        (400, errors.ApiError),
        (500, errors.ServerError),
        (503, errors.ServerError),
    ],
)
def test_status_codes_map_to_the_documented_exceptions(status, expected):
    body = {"detail": "nope", "code": "some_code"}
    with client_for(lambda r: httpx.Response(status, json=body)) as client:
        with pytest.raises(expected) as info:
            client.upload(3, "lease", b"x")
    if issubclass(expected, errors.ApiError):
        error = info.value
        assert (error.status, error.detail, error.code) == (status, "nope", "some_code")
    if status >= 500:
        assert isinstance(info.value, errors.CoordinatorUnavailable)  # retried like an outage


def test_fastapi_validation_errors_and_plain_text_bodies_are_readable():
    with client_for(lambda r: httpx.Response(422, json={"detail": [{"msg": "bad"}]})) as client:
        with pytest.raises(errors.ResultRejected, match="bad"):
            client.heartbeat()
    with client_for(lambda r: httpx.Response(502, text="Bad Gateway")) as client:
        with pytest.raises(errors.ServerError, match="Bad Gateway"):
            client.heartbeat()


def test_transport_failures_become_coordinator_unavailable():
    def refuse(request):
        raise httpx.ConnectError("[Errno 111] Connection refused")

    def slow(request):
        raise httpx.ReadTimeout("timed out")

    for handler in (refuse, slow):
        with client_for(handler) as client, pytest.raises(errors.CoordinatorUnavailable):
            client.claim()


def test_certificate_failures_are_told_apart():
    import ssl

    def bad_cert(request):
        cause = ssl.SSLCertVerificationError(1, "[SSL: CERTIFICATE_VERIFY_FAILED] self-signed")
        raise httpx.ConnectError("certificate verify failed") from cause

    with client_for(bad_cert) as client, pytest.raises(errors.TLSVerifyError):
        client.claim()


def test_requests_carry_bearer_token_lease_header_and_octet_stream():
    seen: list[httpx.Request] = []

    def handler(request):
        seen.append(request)
        return httpx.Response(
            200, json={"unit_id": 5, "iteration": 2, "accepted": True, "num_samples": 3}
        )

    with client_for(handler, token="secret") as client:
        answer = client.upload(5, "lease-5", b"body")
    assert answer.accepted and answer.num_samples == 3
    request = seen[0]
    assert request.url.path == "/api/v1/work-units/5/result"
    assert request.headers["Authorization"] == "Bearer secret"
    assert request.headers["X-Lease-Id"] == "lease-5"
    assert request.headers["Content-Type"] == "application/octet-stream"
    assert request.content == b"body"


def test_claim_204_means_no_work_and_register_rejects_bad_join_codes():
    fake = FakeCoordinator(idle_claims=1)
    with CoordinatorClient("http://c", transport=fake.transport()) as client:
        with pytest.raises(errors.JoinCodeRejected):
            client.register("wrong", "ada", HardwareInfo())
        answer = client.register("blue-otter", "ada", HardwareInfo(cpu_cores=2))
        client.token = answer.token
        assert client.claim() is None
        unit = client.claim()
        assert unit is not None and unit.image_indices == [0, 1, 2]
    sent = fake.requests[1]
    assert sent.url.path == "/api/v1/workers" and b'"cpu_cores":2' in sent.content


def test_weights_urls_may_be_relative_or_absolute():
    paths: list[str] = []

    def handler(request):
        paths.append(str(request.url))
        return httpx.Response(200, content=b"snap")

    with client_for(handler) as client:
        assert client.weights("/api/v1/weights/4") == b"snap"
        client.weights("http://coordinator/api/v1/weights/5")
    assert paths == ["http://coordinator/api/v1/weights/4", "http://coordinator/api/v1/weights/5"]


def test_an_answer_of_the_wrong_shape_is_an_api_error_not_a_crash():
    with client_for(lambda r: httpx.Response(200, json={"surprise": 1})) as client:
        with pytest.raises(errors.ApiError, match="unexpected answer"):
            client.heartbeat()


def test_a_429_that_does_not_end_becomes_rate_limited_after_the_clients_patience():
    """Waited out up to RATE_LIMIT_PATIENCE (a Retry-After over a minute counts as one),
    then RateLimited: an outage-like error that the loop's retries take over."""
    waits: list[float] = []
    answer = httpx.Response(429, json={"detail": "slow", "code": "rate_limited"},
                            headers={"Retry-After": "3600"})  # fmt: skip
    client = CoordinatorClient("http://coordinator", token="t", sleep=waits.append,
                               transport=httpx.MockTransport(lambda r: answer))  # fmt: skip
    with client, pytest.raises(errors.RateLimited) as info:
        client.heartbeat()
    assert waits == [60.0, 60.0] and info.value.retry_after == 60.0
    assert isinstance(info.value, errors.CoordinatorUnavailable)


class _LosesTheFirstClaimsAnswer(httpx.HTTPTransport):
    """A real connection whose first claim reaches the coordinator and whose answer
    does not come back, as when its process is killed or the Wi-Fi drops mid-answer."""

    lost = False

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = super().handle_request(request)
        if request.url.path.endswith("/work-units/claim") and not self.lost:
            self.lost = True
            response.close()
            raise httpx.ReadError("connection reset while reading the answer")
        return response


def test_a_claim_repeated_after_its_answer_was_lost_gets_the_same_lease(coordinator):
    token = coordinator.register()
    coordinator.start_run(**NARROW_RUN, units_per_step=10)
    with CoordinatorClient(
        coordinator.url, token=token, transport=_LosesTheFirstClaimsAnswer()
    ) as client:
        with pytest.raises(errors.CoordinatorUnavailable):
            client.claim()
        unit = client.claim()  # the lease granted to the first: nothing left orphaned
        assert unit is not None
        beat = client.heartbeat()
        assert beat.leases_extended == 1
        assert client.claim().unit_id != unit.unit_id  # answered: the next claim is new
