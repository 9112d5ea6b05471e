"""The submit -> wait -> result logic, written once as sans-I/O generators.

A flow is a generator that yields actions (:class:`HTTPRequest`, :class:`Sleep`,
:class:`Notify`) and receives what the driver got back: an ``httpx.Response`` or the
``httpx.TransportError`` raised while sending, for a request; ``None`` otherwise. The sync and
the async clients each run a flow with a ~20-line driver, so every decision (retries,
deadlines, polling schedule, error mapping) lives here and is shared.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import random
import re
import ssl
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, TypeGuard, TypeVar
from urllib.parse import SplitResult, quote, urlsplit

import httpx
import pydantic

from ._exceptions import (
    APIResponseError,
    APIStatusError,
    ConfigurationError,
    InvalidArgumentError,
    JobFailedError,
    JobTimeoutError,
    RateLimitError,
    status_error_class,
    transport_error,
)
from ._images import DEFAULT_MAX_INPUT_BYTES, ImageInput, image_to_url
from ._models import (
    EDIT_MODEL_ID,
    EDIT_PATH,
    GENERATE_MODEL_ID,
    GENERATE_PATH,
    STATUS_PATH,
    EditRequest,
    GenerateRequest,
    ImageResult,
    Job,
    JobStatus,
    Status,
)
from ._policies import Clock, DurationStats, PollPolicy, RetryPolicy, SystemClock, parse_retry_after
from ._version import __version__

logger = logging.getLogger("mai_tools")

T = TypeVar("T")

DEFAULT_BASE_URL: Final = "https://gateway.pixazo.ai"
API_KEY_ENV: Final = "PIXAZO_API_KEY"
BASE_URL_ENV: Final = "PIXAZO_BASE_URL"
DEFAULT_TIMEOUT: Final = httpx.Timeout(60.0, connect=10.0)
DEFAULT_MAX_RETRIES: Final = 3
DEFAULT_WAIT_TIMEOUT: Final = 300.0
# Poll gaps can be longer than httpx's default 5 s keep-alive expiry; keep connections warm.
KEEPALIVE_EXPIRY: Final = 75.0
USER_AGENT: Final = f"mai-tools/{__version__} (+https://github.com/mai-tools/mai-tools)"
_REQUEST_ID: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:~-]{0,255}$")

OnStatus = Callable[[JobStatus, float], object]
"""Called on every status change with the new status and seconds elapsed since submission."""


# --------------------------------------------------------------------------- actions


@dataclass(frozen=True)
class HTTPRequest:
    """Send this request; the reply is an ``httpx.Response`` or an ``httpx.TransportError``."""

    method: str
    url: str
    headers: Mapping[str, str] = field(repr=False)
    json: Mapping[str, Any] | None = field(repr=False)
    timeout: httpx.Timeout


@dataclass(frozen=True)
class Sleep:
    """Sleep this many seconds."""

    seconds: float


@dataclass(frozen=True)
class Notify:
    """Report a status change to the caller's ``on_status``."""

    status: JobStatus
    elapsed: float


Action = HTTPRequest | Sleep | Notify
Reply = httpx.Response | httpx.TransportError | None
Flow = Generator[Action, Reply, T]


@functools.cache
def ssl_context() -> ssl.SSLContext:
    """One TLS context for every client this process makes.

    Building one loads the CA bundle (~100 ms); clients made per call (CLI commands, tool
    calls, downloads) would otherwise pay that each time. SSLContext is safe to share.
    """
    return httpx.create_ssl_context()


class _Secret:
    """Holds the API key; its repr never shows it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def get(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "_Secret('***')"


class _OutOfTime(Exception):
    def __init__(self, last_error: Exception | None) -> None:
        super().__init__()
        self.last_error = last_error


# Failures where the request certainly never reached the gateway: safe to retry a POST.
_NEVER_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


def split_url(url: str) -> SplitResult | None:
    """``urlsplit`` that returns None for malformed URLs (bad IPv6 brackets, bad ports)."""
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises ValueError for a non-numeric or out-of-range port
    except ValueError:
        return None
    return parts


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = split_url(url)
    if parts is None:
        return "", "", None
    scheme = parts.scheme.lower()
    port = parts.port or {"http": 80, "https": 443}.get(scheme)
    return scheme, (parts.hostname or "").lower(), port


def _is_number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def require_whole(value: object, name: str, *, minimum: int) -> int:
    """``value`` if it is an int (not a bool) of at least ``minimum``, else ConfigurationError."""
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ConfigurationError(f"{name} must be a whole number, at least {minimum}.")
    return value


def _http_timeout(timeout: object) -> httpx.Timeout:
    """The per-request timeout: an ``httpx.Timeout``, or positive finite seconds."""
    if isinstance(timeout, httpx.Timeout):
        return timeout
    if not (_is_number(timeout) and 0 < timeout < math.inf):
        raise ConfigurationError(
            "timeout (per HTTP request) must be a positive number of seconds or an "
            f"httpx.Timeout; got {timeout!r:.40}."
        )
    return httpx.Timeout(float(timeout))


def resolve_base_url(base_url: str | None) -> str:
    if base_url is not None and not isinstance(base_url, str):
        raise ConfigurationError(f"base_url must be a string; got {type(base_url).__name__}.")
    value = base_url or os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL
    value = value.strip().rstrip("/")
    parts = split_url(value)
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigurationError(
            f"base_url must be an http(s) URL such as {DEFAULT_BASE_URL!r}; got {value[:100]!r} "
            f"(from {'the argument' if base_url else BASE_URL_ENV})."
        )
    if parts.query or parts.fragment:
        raise ConfigurationError("base_url must not contain a query string or fragment.")
    return value


def resolve_api_key(api_key: str | None) -> _Secret:
    if api_key is not None and not isinstance(api_key, str):
        # Never echo the value: it may be a key in the wrong type.
        raise ConfigurationError(f"api_key must be a string; got {type(api_key).__name__}.")
    value = api_key if api_key is not None else os.environ.get(API_KEY_ENV)
    if value is None or not value.strip():
        raise ConfigurationError(
            f"No API key: pass api_key=... or set the {API_KEY_ENV} environment variable. "
            "To try mai-tools without a key, run against the offline emulator: "
            "`mai-image generate '...' --emulator`, or in Python "
            "`with mai_tools.emulator.run_emulator() as emu: MAIImageClient(emu.api_key, "
            "base_url=emu.base_url)`."
        )
    value = value.strip()
    if any(ord(c) < 0x21 or ord(c) > 0x7E for c in value):
        raise ConfigurationError(
            f"The API key (from {'api_key' if api_key is not None else API_KEY_ENV}) contains "
            "spaces, control or non-ASCII characters; copy it again from the Pixazo dashboard."
        )
    return _Secret(value)


def check_request_id(request_id: str) -> str:
    if not isinstance(request_id, str) or not _REQUEST_ID.match(request_id):
        shown = request_id[:80] if isinstance(request_id, str) else type(request_id).__name__
        raise InvalidArgumentError(
            f"Invalid request id {shown!r}: expected the id returned at submission, e.g. "
            "'microsoft-mai-image-2-5_019d...' (letters, digits, '.', '_', ':', '-')."
        )
    return request_id


def operation_of(request_id: str) -> str | None:
    """Which operation a request id belongs to, from its model prefix."""
    if request_id.startswith(EDIT_MODEL_ID + "_"):
        return "edit"
    if request_id.startswith(GENERATE_MODEL_ID + "_"):
        return "generate"
    return None


def _error_details(response: httpx.Response) -> tuple[str | None, str, Any]:
    """(error, message, body) from an error response, tolerating any body."""
    content_type = response.headers.get("content-type", "")
    try:
        body = response.json()
    except (ValueError, UnicodeDecodeError):
        body = None
    if isinstance(body, dict):
        error = body.get("error")
        message = body.get("message") or body.get("detail") or error
        return (
            None if error is None else str(error)[:500],
            str(message or response.reason_phrase)[:2000],
            body,
        )
    kind = content_type.split(";", 1)[0] or "no content type"
    return (
        None,
        (
            f"{response.reason_phrase or 'error'} (non-JSON body: {kind}, {len(response.content)} "
            "bytes)"
        ),
        None,
    )


class FlowCore:
    """Configuration and every decision of the client, shared by the sync and async drivers."""

    def __init__(
        self,
        api_key: str | None,
        *,
        base_url: str | None,
        timeout: float | httpx.Timeout,
        max_retries: int,
        wait_timeout: float,
        poll_policy: PollPolicy | None,
        retry_policy: RetryPolicy | None,
        clock: Clock | None,
        max_input_image_bytes: int,
        durations: DurationStats | None = None,
        seed: int | None = None,
    ) -> None:
        self._api_key = resolve_api_key(api_key)
        self.base_url = resolve_base_url(base_url)
        self.timeout = _http_timeout(timeout)
        require_whole(max_retries, "max_retries", minimum=0)
        if not (_is_number(wait_timeout) and wait_timeout > 0 and math.isfinite(wait_timeout)):
            raise ConfigurationError("wait_timeout must be a positive number of seconds.")
        if not _is_number(max_input_image_bytes) or max_input_image_bytes < 1:
            raise ConfigurationError("max_input_image_bytes must be a positive number of bytes.")
        self.max_retries = max_retries
        self.wait_timeout = float(wait_timeout)
        self.poll_policy = poll_policy or PollPolicy()
        self.retry_policy = retry_policy or RetryPolicy()
        self.clock: Clock = clock or SystemClock()
        self.max_input_image_bytes = max_input_image_bytes
        self.durations = (
            durations if durations is not None else DurationStats(history=self.poll_policy.history)
        )
        self._rng = random.Random(seed)

    # ------------------------------------------------------------------ helpers

    def headers(self, webhook_url: str | None = None) -> dict[str, str]:
        headers = {
            "Ocp-Apim-Subscription-Key": self._api_key.get(),
            "Content-Type": "application/json",
            "Cache-Control": "no-cache",
            "Accept": "application/json",
            "User-Agent": USER_AGENT,
        }
        if webhook_url is not None:
            headers["X-Webhook-URL"] = webhook_url
        return headers

    def scrub(self, text: str) -> str:
        """Remove the API key from server-provided text."""
        key = self._api_key.get()
        return text.replace(key, "***") if key and key in text else text

    def status_url(self, request_id: str, polling_url: str | None) -> str:
        """The status URL: the gateway's `polling_url` only when it is on `base_url`'s origin."""
        if polling_url:
            if _origin(polling_url) == _origin(self.base_url) and _origin(polling_url)[1]:
                return polling_url
            logger.warning(
                "polling_url for %s is on another origin (%s); polling %s instead so the API "
                "key is only sent to base_url",
                request_id,
                _origin(polling_url)[1] or "?",
                self.base_url,
            )
        return self.base_url + STATUS_PATH.format(request_id=quote(request_id, safe=""))

    def _timeout_within(self, deadline: float) -> httpx.Timeout:
        remaining = deadline - self.clock.monotonic()
        if not math.isfinite(remaining):
            return self.timeout
        remaining = max(remaining, 0.05)

        def cap(value: float | None) -> float:
            return remaining if value is None else min(value, remaining)

        t = self.timeout
        return httpx.Timeout(
            connect=cap(t.connect), read=cap(t.read), write=cap(t.write), pool=cap(t.pool)
        )

    def status_error(self, response: httpx.Response, request_id: str | None) -> APIStatusError:
        error, message, body = _error_details(response)
        code = response.status_code
        if 300 <= code < 400:
            location = response.headers.get("location", "")
            message = (
                f"the gateway redirected to {_origin(location)[1] or location[:60]!r}; "
                "redirects are not followed so the API key stays with base_url"
            )
        return status_error_class(code)(
            self.scrub(message),
            status_code=code,
            error=None if error is None else self.scrub(error),
            request_id=request_id,
            retry_after=parse_retry_after(response.headers.get("retry-after")),
            body=body,
        )

    def decode_json(self, response: httpx.Response, what: str, request_id: str | None) -> Any:
        try:
            return response.json()
        except (ValueError, UnicodeDecodeError):
            kind = response.headers.get("content-type", "no content type").split(";", 1)[0]
            raise APIResponseError(
                f"{what}: expected JSON, got {kind} ({len(response.content)} bytes, HTTP "
                f"{response.status_code})",
                request_id=request_id,
            ) from None

    # ------------------------------------------------------------------ request building

    def generate_request(
        self, prompt: str, num_images: int, aspect_ratio: str, output_format: str, sync_mode: bool
    ) -> GenerateRequest:
        return GenerateRequest.model_validate(
            {
                "prompt": prompt,
                "num_images": num_images,
                "aspect_ratio": aspect_ratio,
                "output_format": output_format,
                "sync_mode": sync_mode,
            }
        )

    def edit_request(
        self,
        prompt: str,
        image: ImageInput,
        num_images: int,
        aspect_ratio: str,
        output_format: str,
        sync_mode: bool,
    ) -> EditRequest:
        # Validate the cheap fields first so a bad prompt is reported before a file is read.
        EditRequest.model_validate(
            {
                "prompt": prompt,
                "image_urls": ["data:,"],
                "num_images": num_images,
                "aspect_ratio": aspect_ratio,
                "output_format": output_format,
                "sync_mode": sync_mode,
            }
        )
        url = image_to_url(image, max_bytes=self.max_input_image_bytes)
        return EditRequest.model_validate(
            {
                "prompt": prompt,
                "image_urls": [url],
                "num_images": num_images,
                "aspect_ratio": aspect_ratio,
                "output_format": output_format,
                "sync_mode": sync_mode,
            }
        )

    @staticmethod
    def check_webhook(webhook_url: str | None) -> str | None:
        if webhook_url is None:
            return None
        if not isinstance(webhook_url, str):
            raise InvalidArgumentError(
                f"webhook_url must be a string URL; got {type(webhook_url).__name__}."
            )
        parts = split_url(webhook_url)
        if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
            raise InvalidArgumentError(
                f"webhook_url must be an http(s) URL; got {webhook_url[:100]!r}."
            )
        # It travels as an HTTP header: printable ASCII only (percent-encode anything else).
        if any(ord(c) < 0x21 or ord(c) > 0x7E for c in webhook_url):
            raise InvalidArgumentError(
                "webhook_url must be printable ASCII without spaces or line breaks; "
                "percent-encode other characters (e.g. %C3%A9 for é)."
            )
        return webhook_url

    def deadline_for(self, timeout: float | None) -> tuple[float, float]:
        """(timeout, absolute deadline) for a call."""
        if timeout is None:
            value = self.wait_timeout
        elif _is_number(timeout):
            value = float(timeout)
        else:
            raise InvalidArgumentError(
                f"timeout must be a number of seconds; got {type(timeout).__name__}."
            )
        if not (value > 0) or math.isnan(value):
            raise InvalidArgumentError("timeout must be a positive number of seconds.")
        return value, self.clock.monotonic() + value

    # ------------------------------------------------------------------ flows

    def submit_flow(
        self,
        operation: str,
        body: GenerateRequest | EditRequest,
        webhook_url: str | None,
        deadline: float,
    ) -> Flow[Job | JobStatus]:
        """POST the job. Retried only when the gateway certainly did nothing (429, no connect).

        Returns a :class:`Job`, or a :class:`JobStatus` when the gateway answered inline
        (sync mode).
        """
        path = EDIT_PATH if operation == "edit" else GENERATE_PATH
        url = self.base_url + path
        headers = self.headers(self.check_webhook(webhook_url))
        payload = body.model_dump(mode="json")
        attempt = 0
        while True:
            reply = yield HTTPRequest("POST", url, headers, payload, self._timeout_within(deadline))
            retry_after: float | None = None
            if isinstance(reply, httpx.TransportError):
                if not isinstance(reply, _NEVER_SENT) or attempt >= self.max_retries:
                    err = transport_error(reply, what=f"Submitting the {operation} request")
                    if not isinstance(reply, _NEVER_SENT):
                        err.message += (
                            " The gateway may have received it: a job may exist; it was not "
                            "re-sent to avoid a duplicate (charged) job."
                        )
                        err.args = (err.message,)
                    raise err from reply
                failure: Exception = reply
            elif reply is None:  # pragma: no cover - drivers always answer a request
                raise RuntimeError("driver returned no reply to a request")
            elif reply.status_code == 429 and attempt < self.max_retries:
                failure = self.status_error(reply, None)
                retry_after = parse_retry_after(reply.headers.get("retry-after"))
            elif not reply.is_success:
                raise self.status_error(reply, None)
            else:
                return self._parse_submit(reply)
            attempt += 1
            delay = self.retry_policy.backoff(attempt, retry_after, self._rng)
            if (
                retry_after is not None and retry_after > self.retry_policy.max_retry_after
            ) or self.clock.monotonic() + delay > deadline:
                if isinstance(failure, httpx.TransportError):
                    raise transport_error(failure, what="Submitting the request") from failure
                raise failure
            logger.info(
                "submit attempt %d failed (%s); retrying in %.2fs",
                attempt,
                type(failure).__name__,
                delay,
            )
            yield Sleep(delay)

    def _parse_submit(self, response: httpx.Response) -> Job | JobStatus:
        body = self.decode_json(response, "Submit response", None)
        if not isinstance(body, dict) or not body.get("request_id"):
            raise APIResponseError(
                f"Submit response has no request_id; the gateway answered a {type(body).__name__}"
            )
        try:
            if (
                body.get("output") is not None
                or Status(str(body.get("status", "QUEUED")).upper()).is_terminal
            ):
                return JobStatus.from_body(body)
        except ValueError:
            pass
        try:
            return Job.model_validate(body)
        except pydantic.ValidationError as exc:
            raise APIResponseError(f"Submit response not understood: {exc}") from None

    def status_flow(
        self,
        request_id: str,
        polling_url: str | None,
        deadline: float,
        *,
        max_failures: int | None,
    ) -> Flow[JobStatus]:
        """One status read, retried on transient failures within the deadline.

        Transport errors, 408, 429, 5xx and unparseable bodies are retried with backoff (and
        ``Retry-After``); other statuses raise. With ``max_failures=None`` the deadline alone
        bounds the retries; when the next retry would pass it, :class:`_OutOfTime` is raised.
        """
        url = self.status_url(request_id, polling_url)
        headers = self.headers()
        failures = 0
        while True:
            reply = yield HTTPRequest("GET", url, headers, None, self._timeout_within(deadline))
            retry_after: float | None = None
            failure: Exception
            if isinstance(reply, httpx.TransportError):
                failure = transport_error(
                    reply, what=f"Reading the status of {request_id}", request_id=request_id
                )
                failure.__cause__ = reply
            elif reply is None:  # pragma: no cover
                raise RuntimeError("driver returned no reply to a request")
            elif reply.is_success:
                try:
                    body = self.decode_json(reply, f"Status of {request_id}", request_id)
                    if not isinstance(body, dict):
                        raise APIResponseError(
                            f"Status of {request_id}: expected a JSON object", request_id=request_id
                        )
                    body.setdefault("request_id", request_id)
                    return JobStatus.from_body(body)
                except pydantic.ValidationError as exc:
                    failure = APIResponseError(
                        f"Status of {request_id} not understood: {exc.error_count()} invalid "
                        "field(s)",
                        request_id=request_id,
                    )
                except APIResponseError as exc:
                    failure = exc
            else:
                status_error = self.status_error(reply, request_id)
                if not (reply.status_code in (408, 429) or reply.status_code >= 500):
                    raise status_error
                failure = status_error
                retry_after = status_error.retry_after
            failures += 1
            if max_failures is not None and failures > max_failures:
                raise failure
            if retry_after is not None and retry_after > self.retry_policy.max_retry_after:
                raise failure
            delay = self.retry_policy.backoff(failures, retry_after, self._rng)
            if self.clock.monotonic() + delay >= deadline:
                if max_failures is None:
                    raise _OutOfTime(failure)
                raise failure
            logger.info(
                "status read for %s failed (%s); retrying in %.2fs",
                request_id,
                failure,
                delay,
            )
            yield Sleep(delay)

    def wait_flow(
        self,
        request_id: str,
        polling_url: str | None,
        *,
        timeout: float,
        deadline: float,
        started_at: float | None,
        initial: JobStatus | None,
    ) -> Flow[ImageResult]:
        """Poll until the job is terminal or the deadline passes.

        Args:
            started_at: monotonic time of submission, when this client submitted the job; it
                drives the learned schedule. ``None`` for resumed waits: poll at once.
            initial: the status known at submission, reported first.
        """
        check_request_id(request_id)
        operation = operation_of(request_id)
        window = (
            self.durations.window(operation, self.poll_policy)
            if operation is not None and started_at is not None
            else None
        )
        # Decide once per wait whether the gateway's polling_url may carry the key.
        status_url = self.status_url(request_id, polling_url)
        origin = started_at if started_at is not None else self.clock.monotonic()
        last = initial
        reported: Status | None = None
        if initial is not None:
            reported = initial.status
            yield Notify(initial, self.clock.monotonic() - origin)
        gap: float | None = None
        polls = 0
        while True:
            now = self.clock.monotonic()
            if polls == 0 and started_at is None:
                delay = 0.0
            else:
                delay = self.poll_policy.next_delay(
                    elapsed=now - origin, last_gap=gap, window=window
                )
            final = now + delay >= deadline
            if final:
                delay = max(deadline - now, 0.0)
            if delay > 0:
                yield Sleep(delay)
            gap = delay if polls else max(delay, self.poll_policy.first_delay)
            try:
                status = yield from self.status_flow(
                    request_id, status_url, deadline, max_failures=None
                )
            except _OutOfTime as exc:
                raise JobTimeoutError(
                    request_id=request_id,
                    polling_url=polling_url,
                    last_status=last,
                    timeout=timeout,
                    reason=f"The last status read failed: {exc.last_error}",
                ) from exc.last_error
            polls += 1
            last = status
            elapsed = self.clock.monotonic() - origin
            if status.status is not reported:
                reported = status.status
                yield Notify(status, elapsed)
            logger.debug("poll %d of %s: %s after %.2fs", polls, request_id, status.status, elapsed)
            if status.status is Status.COMPLETED:
                self._learn(operation, status, elapsed if started_at is not None else None)
                result = ImageResult.from_status(status)
                if not result.image_urls:
                    raise APIResponseError(
                        f"Job {request_id} COMPLETED without output.media_url",
                        request_id=request_id,
                    )
                return result
            if status.status.is_failure:
                raise JobFailedError(status)
            if final or self.clock.monotonic() >= deadline:
                raise JobTimeoutError(
                    request_id=request_id,
                    polling_url=polling_url,
                    last_status=status,
                    timeout=timeout,
                )

    def _learn(self, operation: str | None, status: JobStatus, observed: float | None) -> None:
        if operation is None:
            return
        duration: float | None = None
        if status.created_at is not None and status.completed_at is not None:
            server = (status.completed_at - status.created_at).total_seconds()
            if server >= 0 and (observed is None or server <= observed + 1.0):
                duration = server
        if duration is None:
            duration = observed
        if duration is not None:
            self.durations.record(operation, duration)

    def run_flow(
        self,
        operation: str,
        body: GenerateRequest | EditRequest,
        *,
        webhook_url: str | None,
        timeout: float | None,
    ) -> Flow[ImageResult]:
        """Submit, then wait: the whole of ``generate`` / ``edit``."""
        timeout_value, deadline = self.deadline_for(timeout)
        call_started = self.clock.monotonic()
        submitted = yield from self.submit_flow(operation, body, webhook_url, deadline)
        started_at = self.clock.monotonic()
        if isinstance(submitted, JobStatus):
            # Answered inline (sync_mode): the whole job ran inside the POST.
            if submitted.status is Status.COMPLETED and submitted.image_urls:
                yield Notify(submitted, started_at - call_started)
                return ImageResult.from_status(submitted)
            if submitted.status.is_failure:
                yield Notify(submitted, started_at - call_started)
                raise JobFailedError(submitted)
            initial = submitted
        else:
            initial = JobStatus(
                request_id=submitted.request_id,
                status=submitted.status,
                raw_status=submitted.status.value,
                polling_url=submitted.polling_url,
            )
        return (
            yield from self.wait_flow(
                initial.request_id,
                initial.polling_url,
                timeout=timeout_value,
                deadline=deadline,
                started_at=started_at,
                initial=initial,
            )
        )

    def submit_only_flow(
        self, operation: str, body: GenerateRequest | EditRequest, webhook_url: str | None
    ) -> Flow[Job]:
        _, deadline = self.deadline_for(None)
        submitted = yield from self.submit_flow(operation, body, webhook_url, deadline)
        if isinstance(submitted, JobStatus):
            return Job(
                request_id=submitted.request_id,
                status=submitted.status,
                polling_url=submitted.polling_url,
            )
        return submitted

    def get_status_flow(self, request_id: str) -> Flow[JobStatus]:
        check_request_id(request_id)
        _, deadline = self.deadline_for(None)
        return (
            yield from self.status_flow(request_id, None, deadline, max_failures=self.max_retries)
        )


def job_ref(job_or_request_id: Job | JobStatus | str) -> tuple[str, str | None]:
    """(request_id, polling_url) from a Job, a JobStatus or a bare id."""
    if isinstance(job_or_request_id, Job | JobStatus):
        return job_or_request_id.request_id, job_or_request_id.polling_url
    if isinstance(job_or_request_id, str):
        return check_request_id(job_or_request_id.strip()), None
    raise InvalidArgumentError(
        f"Expected a Job or a request id string, got {type(job_or_request_id).__name__}."
    )


__all__ = [
    "API_KEY_ENV",
    "BASE_URL_ENV",
    "DEFAULT_BASE_URL",
    "DEFAULT_MAX_INPUT_BYTES",
    "FlowCore",
    "HTTPRequest",
    "Notify",
    "OnStatus",
    "RateLimitError",
    "Sleep",
]
