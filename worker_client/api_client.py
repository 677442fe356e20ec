"""The coordinator's HTTP API as plain methods over one long-lived ``httpx.Client``.

Each method returns a protocol model (or bytes) on 2xx and raises one of the
``worker_client.errors`` exceptions otherwise; transport failures become
``CoordinatorUnavailable`` (or ``TLSVerifyError`` when the certificate is the problem),
so callers never see an httpx exception.
"""

from __future__ import annotations

import logging
import re
import ssl
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar, get_args
from uuid import UUID, uuid4

import httpx
from pydantic import BaseModel, ValidationError

from shared.dataset_shards import DatasetDescription
from shared.protocol import (
    API_PREFIX,
    LEASE_HEADER,
    ClaimRequest,
    HardwareInfo,
    HeartbeatResponse,
    RegisterRequest,
    RegisterResponse,
    ReleaseResponse,
    ResultKind,
    ResultResponse,
    WorkUnit,
)
from worker_client.errors import (
    ApiError,
    AuthError,
    ConfigError,
    CoordinatorUnavailable,
    JoinCodeRejected,
    NotFound,
    RateLimited,
    TLSVerifyError,
    WorkerError,
    error_for_status,
)

USER_AGENT = "gan-worker/0.1"
log = logging.getLogger("worker_client")
# How long one call keeps waiting out 429 answers before it raises RateLimited (the
# loop's retries then take over), and the longest single Retry-After it obeys.
RATE_LIMIT_PATIENCE = 120.0
MAX_RETRY_AFTER = 60.0
KEEPALIVE_SECONDS = 60.0  # below the coordinator's keep_alive_seconds (75)
_M = TypeVar("_M", bound=BaseModel)


def make_verify(ca_bundle: Path | None) -> ssl.SSLContext | bool:
    """TLS verification: the system store, or a context trusting ``ca_bundle`` too."""
    if ca_bundle is None:
        return True
    path = Path(ca_bundle).expanduser()
    if not path.is_file():
        raise WorkerError(f"--ca-bundle {path} does not exist")
    context = ssl.create_default_context()
    context.load_verify_locations(cafile=str(path))
    return context


def _is_cert_failure(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError) or "CERTIFICATE_VERIFY_FAILED" in str(
            seen
        ):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


class CoordinatorClient:
    """One coordinator, one connection pool, one bearer token."""

    def __init__(
        self,
        base_url: str,
        *,
        token: str | None = None,
        ca_bundle: Path | None = None,
        connect_timeout: float = 10.0,
        request_timeout: float = 120.0,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self._sleep = sleep  # waits out Retry-After; tests pass their own
        self._unanswered_claim: UUID | None = None
        # Bodies are tens of MB on slow school Wi-Fi, hence the long read/write timeout;
        # a dead address should fail fast, hence the short connect timeout.
        timeout = httpx.Timeout(request_timeout, connect=connect_timeout, pool=request_timeout)
        # Two connections: the main loop and the heartbeat thread share this client. Kept
        # between requests (seconds apart while a unit computes) for less than the
        # coordinator keeps them (GAN_KEEP_ALIVE_SECONDS, 75), so a connection the
        # coordinator is closing is never reused, and none is opened (or, with TLS,
        # shaken hands on) per request.
        limits = httpx.Limits(
            max_connections=4, max_keepalive_connections=2, keepalive_expiry=KEEPALIVE_SECONDS
        )
        self._http = httpx.Client(
            base_url=self.base_url,
            timeout=timeout,
            limits=limits,
            verify=make_verify(ca_bundle),
            transport=transport,
            headers={"User-Agent": USER_AGENT},
        )

    def close(self) -> None:
        """Close every pooled connection."""
        self._http.close()

    def __enter__(self) -> CoordinatorClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- endpoints ---------------------------------------------------------------------

    def register(self, join_code: str, name: str, hardware: HardwareInfo) -> RegisterResponse:
        """Join the class: returns the worker id and its token (shown only this once)."""
        body = RegisterRequest(join_code=join_code, name=name, hardware=hardware)
        try:
            response = self._request("POST", "/workers", json=body.model_dump(mode="json"))
        except (AuthError, NotFound) as exc:
            raise JoinCodeRejected(exc.status, exc.detail, exc.code) from None
        return self._parse(RegisterResponse, response)

    def heartbeat(self) -> HeartbeatResponse:
        """Tell the coordinator this worker is alive; extends its leases."""
        return self._parse(HeartbeatResponse, self._request("POST", "/workers/me/heartbeat"))

    def claim(self, cached_shards: list[int] | None = None, wait: float = 0.0) -> WorkUnit | None:
        """Lease a work unit, or None when there is nothing to do (204), having let the
        coordinator hold the request up to ``wait`` seconds for one."""
        # A claim that got no answer may have been granted all the same: the next claim
        # repeats its id, and the coordinator answers with that lease, not a second one.
        claim_id = self._unanswered_claim or uuid4()
        self._unanswered_claim = claim_id
        body = ClaimRequest(cached_shards=cached_shards or [], claim_id=claim_id)
        response = self._request(
            "POST", "/work-units/claim", json=body.model_dump(mode="json"),
            params={"wait": wait} if wait > 0 else None,
        )  # fmt: skip
        self._unanswered_claim = None
        if response.status_code == 204:
            return None
        try:
            return self._parse(WorkUnit, response)
        except ApiError:
            kind = _result_kind(response)
            if kind is not None and kind not in get_args(ResultKind):
                raise ConfigError(
                    f"this class trains in a mode ({kind!r}) that this gan-worker does not "
                    "know yet: update gan-worker (pip install -U ganns-with-friends)"
                ) from None
            raise

    def weights(self, url: str) -> bytes:
        """The safetensors snapshot at ``url`` (a unit's ``weights_url``)."""
        return self._request("GET", url, follow_redirects=True).content

    def upload(self, unit_id: int, lease_id: str, body: bytes) -> ResultResponse:
        """Post a unit's encoded result under its lease."""
        response = self._request(
            "POST",
            f"/work-units/{unit_id}/result",
            content=body,
            headers={"Content-Type": "application/octet-stream", LEASE_HEADER: lease_id},
        )
        return self._parse(ResultResponse, response)

    def current_version(self, run_id: int) -> int:
        """The run's newest published version (where /weights/current redirects to)."""
        response = self._send(
            "GET", "/weights/current", params={"run_id": run_id}, follow_redirects=False
        )
        location = response.headers.get("location", "")
        match = re.search(r"/weights/(\d+)", location)
        if response.status_code != 307 or match is None:
            detail, code = _error_body(response)
            raise error_for_status(response.status_code, detail, code)
        return int(match[1])

    def release(self, unit_id: int, lease_id: str) -> ReleaseResponse:
        """Give a leased unit back so another worker can take it."""
        response = self._request(
            "POST", f"/work-units/{unit_id}/release", headers={LEASE_HEADER: lease_id}
        )
        return self._parse(ReleaseResponse, response)

    def dataset(self) -> DatasetDescription:
        """The current run's dataset, with the shard manifest when it is an imported one."""
        return self._parse(DatasetDescription, self._request("GET", "/dataset"))

    def shard(self, index: int, dataset_id: str) -> bytes:
        """The bytes of shard ``index`` of ``dataset_id`` (checked by the caller)."""
        response = self._request(
            "GET", f"/dataset/shards/{index}", params={"dataset_id": dataset_id}
        )
        return response.content

    # --- plumbing ----------------------------------------------------------------------

    def _url(self, path: str) -> str:
        if path.startswith(("http://", "https://", API_PREFIX + "/")):
            return path
        return API_PREFIX + path

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One call; a 429 is waited out as its Retry-After says and the call repeated,
        for up to RATE_LIMIT_PATIENCE seconds (then RateLimited, which callers retry)."""
        waited = 0.0
        while True:
            response = self._send(method, path, **kwargs)
            if response.status_code != 429:
                break
            detail, _ = _error_body(response)
            delay = _retry_after(response)
            if waited + delay > RATE_LIMIT_PATIENCE:
                raise RateLimited(delay, detail)
            log.warning(
                "The coordinator asks this worker to slow down (429: %s); waiting %.0f s as "
                "its Retry-After says, then sending %s %s again",
                detail, delay, method, self._url(path).split("?")[0],
            )  # fmt: skip
            self._sleep(delay)
            waited += delay
        if response.is_success:
            return response
        detail, code = _error_body(response)
        raise error_for_status(response.status_code, detail, code)

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = dict(kwargs.pop("headers", None) or {})
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        try:
            response = self._http.request(method, self._url(path), headers=headers, **kwargs)
        except httpx.TransportError as exc:
            if _is_cert_failure(exc):
                raise TLSVerifyError(str(exc)) from exc
            raise CoordinatorUnavailable(f"{type(exc).__name__}: {exc}" or repr(exc)) from exc
        return response

    @staticmethod
    def _parse(model: type[_M], response: httpx.Response) -> _M:
        try:
            return model.model_validate_json(response.content)
        except ValidationError as exc:
            # A coordinator speaking another protocol version: not worth retrying.
            raise ApiError(
                response.status_code, f"unexpected answer: {exc}", "bad_answer"
            ) from None


def _result_kind(response: httpx.Response) -> str | None:
    """The ``run.result_kind`` of a claim answer, read without the model."""
    try:
        kind = response.json().get("run", {}).get("result_kind")
    except (ValueError, AttributeError):
        return None
    return kind if isinstance(kind, str) else None


def _retry_after(response: httpx.Response) -> float:
    """A 429's Retry-After in seconds (1 when absent or an HTTP date; at most a minute)."""
    try:
        seconds = float(response.headers.get("Retry-After", "1"))
    except ValueError:
        seconds = 1.0
    return min(MAX_RETRY_AFTER, max(0.1, seconds)) if seconds == seconds else 1.0


def _error_body(response: httpx.Response) -> tuple[str, str]:
    """``(detail, code)`` from an ``{"detail": ..., "code": ...}`` body, leniently."""
    try:
        data = response.json()
    except ValueError:
        return (response.text[:200] or response.reason_phrase), ""
    if not isinstance(data, dict):
        return str(data)[:200], ""
    detail = data.get("detail", "")
    if not isinstance(detail, str):  # FastAPI's validation errors are a list
        detail = str(detail)[:500]
    return detail, str(data.get("code", "") or "")
