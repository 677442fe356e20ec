"""What can go wrong talking to the coordinator, as one small exception hierarchy.

Every non-2xx answer and every transport failure becomes one of these, so the loop
decides what to do by type, never by parsing messages::

    WorkerError                      anything this package raises on purpose
    ├── ConfigError                  the student's settings cannot work (bad device, ...)
    ├── TLSVerifyError               HTTPS certificate not trusted: needs --ca-bundle
    ├── CoordinatorUnavailable       no answer: refused, DNS, timeout, or a 5xx (retry)
    │   ├── ServerError              the coordinator answered 5xx
    │   └── RateLimited              429 still, after waiting its Retry-After a while
    └── ApiError                     a 4xx answer (.status, .code, .detail)
        ├── AuthError                the token is not accepted
        │   ├── UnknownToken         401: the coordinator does not know this token
        │   ├── WorkerRevoked        403: the instructor removed this worker
        │   └── WorkerFlagged        403: spot checks found this worker's results wrong
        ├── JoinCodeRejected         401/403 while registering: wrong join code
        ├── LeaseLost                409: stale iteration or lease expired; drop the unit
        ├── RunFinished              410: training is over
        ├── ResultTooLarge           413
        ├── ResultRejected           422: malformed or non-finite result
        └── NotFound                 404
"""

from __future__ import annotations


class WorkerError(Exception):
    """Base of every error the worker raises on purpose."""


class ConfigError(WorkerError):
    """The settings cannot work on this machine (the message says which and why)."""


class TLSVerifyError(WorkerError):
    """The coordinator's HTTPS certificate failed verification."""


class CoordinatorUnavailable(WorkerError):
    """The coordinator could not be reached or could not answer; worth retrying."""


class ServerError(CoordinatorUnavailable):
    """The coordinator answered with a 5xx status."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"coordinator error {status}: {detail}")
        self.status = status
        self.detail = detail


class RateLimited(CoordinatorUnavailable):
    """429: the coordinator asked this worker to slow down, and kept asking.

    The client already waited each ``Retry-After`` it was given (up to its patience);
    like an outage, the loop retries later.
    """

    def __init__(self, retry_after: float, detail: str) -> None:
        super().__init__(f"rate limited: {detail}")
        self.retry_after = retry_after
        self.detail = detail


class ApiError(WorkerError):
    """A 4xx answer; ``code`` is the coordinator's stable machine code when it sent one."""

    def __init__(self, status: int, detail: str, code: str = "") -> None:
        super().__init__(f"{status} {code or 'error'}: {detail}")
        self.status = status
        self.detail = detail
        self.code = code


class AuthError(ApiError):
    """The worker token was refused."""


class UnknownToken(AuthError):
    """401: the coordinator has no worker with this token (database reset, typo)."""


class WorkerRevoked(AuthError):
    """403: the instructor revoked this worker."""


class WorkerFlagged(AuthError):
    """403 ``worker_flagged``: recomputations of this worker's units by other workers
    came out different; it may not work until the instructor clears the flag."""


class JoinCodeRejected(ApiError):
    """Registration refused: the join code is wrong or expired."""


class LeaseLost(ApiError):
    """409: the unit's iteration is over or its lease expired; the result is not needed."""


class RunFinished(ApiError):
    """410: the run is finished; there will be no more work."""


class ResultTooLarge(ApiError):
    """413: the result body is larger than the coordinator accepts."""


class ResultRejected(ApiError):
    """422: the coordinator found the request or result malformed."""


class NotFound(ApiError):
    """404: no such unit, weights or resource."""


_BY_STATUS: dict[int, type[ApiError]] = {
    401: UnknownToken,
    403: WorkerRevoked,
    404: NotFound,
    409: LeaseLost,
    410: RunFinished,
    413: ResultTooLarge,
    422: ResultRejected,
}


def error_for_status(status: int, detail: str, code: str = "") -> WorkerError:
    """The exception for a non-2xx status (5xx are retryable ServerErrors)."""
    if status >= 500:
        return ServerError(status, detail)
    if code == "worker_flagged":
        return WorkerFlagged(status, detail, code)
    return _BY_STATUS.get(status, ApiError)(status, detail, code)
