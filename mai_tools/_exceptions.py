"""Exceptions raised by mai_tools, split by who can fix the problem.

```
MAIImageError
├── ConfigurationError (also ValueError) [O]   bad base_url, bad option: fix the setup
│   └── MissingAPIKeyError               [O]   no API key anywhere
├── InvalidArgumentError (also ValueError)     a bad argument, caught before anything is sent
│   ├── InvalidImageError                       an image input that cannot be sent
│   └── IdempotencyKeyReusedError               a key that already names another request's job
├── APIError                                  something went wrong talking to the gateway
│   ├── APIConnectionError                    could not reach it / connection dropped
│   │   └── APITimeoutError                   an HTTP request timed out
│   ├── APIResponseError                      a 2xx answer we could not understand
│   └── APIStatusError                        the gateway answered with an error status
│       ├── BadRequestError          400      fix the request
│       ├── AuthenticationError      401 [O]  fix the key
│       ├── InsufficientBalanceError 402 [O]  top up the wallet
│       ├── PermissionDeniedError    403 [O]
│       ├── NotFoundError            404      unknown request id
│       ├── RateLimitError           429      slow down (retried automatically)
│       │   └── QuotaExceededError   403      the call quota is used up: retry once replenished
│       └── ServerError              5xx      gateway trouble (status reads are retried)
├── JobFailedError                            the job ended FAILED or ERROR
├── JobTimeoutError                           the wait deadline passed; the job may still finish
├── SpendingLimitError                        a spending limit the operator set; nothing was sent
└── DownloadError                             saving a result image failed
```

[O]: also an :class:`OperatorError`: only whoever runs the program (its configuration, key or
wallet) can fix it; an agent or its user changing the request will not help.

Invalid arguments raise :class:`InvalidArgumentError` before anything is sent; when pydantic
found them, :meth:`InvalidArgumentError.errors` lists them field by field (pydantic's own
``ValidationError`` is the ``__cause__``). No exception text ever contains the API key:
server-provided text is scrubbed of it.

This module is a leaf: it imports nothing from mai_tools at run time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from datetime import datetime
    from decimal import Decimal

    import httpx
    import pydantic
    from pydantic_core import ErrorDetails

    from ._status import JobStatus, Status

__all__ = [
    "APIConnectionError",
    "APIError",
    "APIResponseError",
    "APIStatusError",
    "APITimeoutError",
    "AuthenticationError",
    "BadRequestError",
    "ConfigurationError",
    "DownloadError",
    "IdempotencyKeyReusedError",
    "InsufficientBalanceError",
    "InvalidArgumentError",
    "InvalidImageError",
    "JobBookError",
    "JobFailedError",
    "JobTimeoutError",
    "JobUnknownError",
    "MAIImageError",
    "MissingAPIKeyError",
    "NotFoundError",
    "OperatorError",
    "PermissionDeniedError",
    "QuotaExceededError",
    "RateLimitError",
    "ServerError",
    "SpendingLimitError",
]


class MAIImageError(Exception):
    """Root of every exception mai_tools raises on purpose."""


class OperatorError(MAIImageError):
    """Mixin: only the operator (configuration, key, wallet) can fix this; retrying won't help."""


class ConfigurationError(OperatorError, ValueError):
    """The client is not set up correctly (a malformed base URL, a bad option)."""


class MissingAPIKeyError(ConfigurationError):
    """No API key was given, and none was found where mai-tools looks for one."""


class InvalidArgumentError(MAIImageError, ValueError):
    """An argument is invalid; nothing was sent.

    Raised for every invalid argument, also those pydantic's request models refuse: then
    :meth:`errors` lists each problem (``loc``, ``msg``, ``type``) and the pydantic
    ``ValidationError`` is the ``__cause__``.
    """

    def __init__(self, message: str, *, errors: list[ErrorDetails] | None = None) -> None:
        super().__init__(message)
        self._errors: list[ErrorDetails] = list(errors or [])

    def errors(self) -> list[ErrorDetails]:
        """The problems field by field (empty when the error is not about a field)."""
        return list(self._errors)

    def error_count(self) -> int:
        return len(self._errors)

    @classmethod
    def from_validation(cls, exc: pydantic.ValidationError) -> InvalidArgumentError:
        """Wrap pydantic's error: one line naming each field and what is wrong with it."""
        details = exc.errors(include_url=False)
        parts = [
            f"{'.'.join(str(p) for p in e['loc']) or 'arguments'}: {e['msg']}" for e in details
        ]
        return cls("; ".join(parts) or str(exc), errors=details)


class InvalidImageError(InvalidArgumentError):
    """An image input is missing, not an image, too large, or of an unsupported kind."""


class IdempotencyKeyReusedError(InvalidArgumentError):
    """An ``idempotency_key`` already names a job with another request; nothing was sent.

    Attributes:
        idempotency_key: the key.
        field: the first field that differs (``"operation"`` for another operation), or None.
        earlier, given: that field's value in the first request and in this one.
        created_at: when the first request's job was created (seconds since the epoch).
    """

    def __init__(
        self,
        message: str,
        *,
        idempotency_key: str,
        field: str | None,
        earlier: Any = None,
        given: Any = None,
        created_at: float,
    ) -> None:
        super().__init__(message)
        self.idempotency_key = idempotency_key
        self.field = field
        self.earlier = earlier
        self.given = given
        self.created_at = created_at


class APIError(MAIImageError):
    """A failure talking to the gateway.

    Attributes:
        request_id: the job this concerned, when known.
        may_have_arrived: True when a submit may have reached the gateway although no answer
            came back: a job may exist (and be charged). Such a submit is never re-sent.
    """

    def __init__(
        self, message: str, *, request_id: str | None = None, may_have_arrived: bool = False
    ) -> None:
        super().__init__(message)
        self.message = message
        self.request_id = request_id
        self.may_have_arrived = may_have_arrived


class APIConnectionError(APIError):
    """The gateway could not be reached, or the connection broke before an answer."""


class APITimeoutError(APIConnectionError):
    """An HTTP request to the gateway timed out."""


class APIResponseError(APIError):
    """The gateway answered 2xx with a body that is not the documented JSON."""


class APIStatusError(APIError):
    """The gateway answered with an HTTP error status.

    Attributes:
        status_code: the HTTP status.
        error: the gateway's short ``error`` field, if any.
        message: the gateway's ``message`` field (or a description of the body).
        retry_after: seconds the gateway asked us to wait, if it said.
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int,
        error: str | None = None,
        request_id: str | None = None,
        retry_after: float | None = None,
        body: Any = None,
    ) -> None:
        super().__init__(message, request_id=request_id)
        self.status_code = status_code
        self.error = error
        self.retry_after = retry_after
        self.body = body

    def __str__(self) -> str:
        text = self.summary()
        if self.request_id:
            text = f"{text} (request_id={self.request_id})"
        hint = self.hint()
        return f"{text.rstrip('.')}. {hint}" if hint else text

    def summary(self) -> str:
        """What the gateway answered (status, error, message), without our advice."""
        parts = [f"HTTP {self.status_code}"]
        if self.error:
            parts.append(self.error)
        text = ": ".join(parts)
        if self.message and self.message != self.error:
            text = f"{text} - {self.message}"
        return text

    def hint(self) -> str | None:
        """What to do about it, in a few words (None when there is nothing to add)."""
        if self.status_code == 404 and self.request_id is None:
            return "The gateway has no such route: check the base URL (PIXAZO_BASE_URL)"
        return _STATUS_HINTS.get(self.status_code)


class BadRequestError(APIStatusError):
    """400: the gateway rejected the request; change the arguments."""


class AuthenticationError(APIStatusError, OperatorError):
    """401: the API key is missing or wrong."""


class InsufficientBalanceError(APIStatusError, OperatorError):
    """402: the wallet behind the key has no balance left."""


class PermissionDeniedError(APIStatusError, OperatorError):
    """403: the key may not use this model or operation."""


class NotFoundError(APIStatusError):
    """404: unknown path or request id."""


class RateLimitError(APIStatusError):
    """429: too many requests; `retry_after` says how long the gateway asked to wait."""


class QuotaExceededError(RateLimitError):
    """403 "Out of call volume quota": the key's call quota is used up until it is replenished;
    ``retry_after`` says when (parsed from the gateway's "replenished in hh:mm:ss")."""

    def hint(self) -> str | None:
        if self.retry_after is not None:
            return f"Retry after the quota is replenished (in {self.retry_after:.0f}s)"
        return "Retry after the quota is replenished"


class ServerError(APIStatusError):
    """5xx: the gateway or something behind it failed."""


_STATUS_HINTS: dict[int, str] = {
    401: "Check the API key (PIXAZO_API_KEY)",
    402: "Top up the Pixazo wallet of this key",
    403: "This key may not use this model",
    404: "Check the request id",
    429: "Slow down or retry later",
}

_STATUS_CLASSES: dict[int, type[APIStatusError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    402: InsufficientBalanceError,
    403: PermissionDeniedError,
    404: NotFoundError,
    422: BadRequestError,
    429: RateLimitError,
}


def status_error_class(status_code: int) -> type[APIStatusError]:
    if status_code >= 500:
        return ServerError
    return _STATUS_CLASSES.get(status_code, APIStatusError)


class JobFailedError(MAIImageError):
    """The job ended FAILED or ERROR.

    Attributes:
        request_id: the job's id.
        status: FAILED (the model refused or failed; whether that is charged is not documented:
            assume it may be) or ERROR (a system error; documented as not charged).
        error: the gateway's error text.
        job: the last status read.
    """

    def __init__(self, job: JobStatus) -> None:
        self.job = job
        self.request_id = job.request_id
        self.status: Status = job.status
        self.error = job.error
        reason = job.error or "no error text given"
        super().__init__(f"Job {job.request_id} ended {job.status.value}: {reason}")


class JobTimeoutError(MAIImageError, TimeoutError):
    """The wait deadline passed before the job finished.

    The job itself may still complete: call ``wait(request_id)`` again to resume.

    Attributes:
        request_id: the job's id.
        polling_url: its status URL.
        last_status: the last status read, if any.
        timeout: the call's timeout, in seconds.
        waited: how long the call actually waited, in seconds (less than ``timeout`` when the
            wait ended early, e.g. the gateway asked for a longer pause than was left).
        reason: why the wait ended early, if it did (what the gateway answered, without
            advice such as "retry later": the job runs on).
    """

    def __init__(
        self,
        *,
        request_id: str,
        polling_url: str | None,
        last_status: JobStatus | None,
        timeout: float,
        reason: str | None = None,
        waited: float | None = None,
    ) -> None:
        self.request_id = request_id
        self.polling_url = polling_url
        self.last_status = last_status
        self.timeout = timeout
        self.waited = timeout if waited is None else waited
        self.reason = reason
        state = last_status.status.value if last_status else "unknown"
        text = (
            f"Job {request_id} not finished after {self.waited_text()} (last status: {state}). "
            f"It may still complete: resume with wait({request_id!r})."
        )
        if reason:
            text = f"{text} {reason}"
        super().__init__(text)

    def waited_text(self, *, before: float = 0.0, allowed: float | None = None) -> str:
        """The time waited, as people read it ("1.5s"; "1.5s of the 300s allowed" when the
        wait ended well before its timeout).

        Args:
            before: seconds already spent on the job before this wait began (a batch line's
                time since its submit), added to the time waited.
            allowed: the whole allowance those seconds count against (default: this wait's
                ``timeout``), so a caller that waited out the rest of an allowance names the
                allowance ("300s"), not what was left of it ("299.999s").
        """
        spent = before + self.waited
        budget = self.timeout + before if allowed is None else allowed
        waited = f"{round(spent, 1):g}s"
        if budget - spent >= max(1.0, budget * 0.1):
            return f"{waited} of the {round(budget, 1):g}s allowed"
        return waited


class JobBookError(ConfigurationError):
    """The job book cannot be opened, read or written (a bad path or URL, a full disk, a
    database that went away). Raised before anything is sent when it happens before a submit."""


class JobUnknownError(MAIImageError):
    """An earlier call with the same key may have created a job whose request id nobody knows.

    Its submit was sent (or was being sent) when the process that made it stopped, or the
    gateway's answer was lost. The gateway has no job listing, so the job cannot be found; it
    is not sent again (that could pay twice).

    Attributes:
        idempotency_key: the key of the earlier call (None when it was matched by arguments).
        created_at: when the earlier submit was about to be sent (seconds since the epoch).
    """

    def __init__(self, message: str, *, idempotency_key: str | None, created_at: float) -> None:
        super().__init__(message)
        self.idempotency_key = idempotency_key
        self.created_at = created_at


class SpendingLimitError(MAIImageError):
    """The call would pass a spending limit the operator set (images per call, images or money
    per UTC day, per principal or for the whole server); nothing was sent.

    Never retryable as it is: the same call is refused until the limit resets (``resets_at``,
    the next UTC midnight; None for the per-call cap), or a smaller call fits what is left.

    Attributes:
        limit_name: which limit: ``max_images_per_call``, ``daily_images`` (per principal),
            ``server_daily_images`` or ``daily_spend`` (per principal).
        limit: the limit's value (images, or an amount of ``currency`` for ``daily_spend``).
        used: what today's earlier jobs used of it (0 for the per-call cap).
        remaining: what is left of it today (for the per-call cap: the cap itself).
        requested: what this call asked for (images, or its price for ``daily_spend``).
        resets_at: when the daily count starts again (a UTC datetime), None for the per-call cap.
        currency: the currency of a money limit (None for image limits).
    """

    retryable = False

    def __init__(
        self,
        message: str,
        *,
        limit_name: str,
        limit: int | Decimal,
        used: int | Decimal,
        remaining: int | Decimal,
        requested: int | Decimal,
        resets_at: datetime | None,
        currency: str | None = None,
    ) -> None:
        super().__init__(message)
        self.limit_name = limit_name
        self.limit = limit
        self.used = used
        self.remaining = remaining
        self.requested = requested
        self.resets_at = resets_at
        self.currency = currency


class DownloadError(MAIImageError):
    """A result image could not be downloaded or saved.

    Attributes:
        unavailable: the images that no later save can fetch, one text each ("image 2 of
            <request id> cannot be fetched: the gateway sent an empty URL"); empty when saving
            again (``mai-image wait``, a rerun) may succeed.
    """

    unavailable: tuple[str, ...] = ()


def transport_error(
    exc: httpx.TransportError, *, what: str, request_id: str | None = None
) -> APIConnectionError:
    """Wrap an httpx transport error without leaking request headers."""
    import httpx  # loaded already: a transport error came from it

    cls = APITimeoutError if isinstance(exc, httpx.TimeoutException) else APIConnectionError
    detail = type(exc).__name__
    text = str(exc)
    if text:
        detail = f"{detail}: {text}"
    return cls(f"{what} failed: {detail}", request_id=request_id)
