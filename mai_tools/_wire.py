"""The gateway's HTTP API as data: headers, request bodies, JSON decoding, answers -> errors.

No I/O and no decisions about retrying or waiting (those are the flow's); this layer only
knows how the gateway spells things.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Any

import httpx
import pydantic

from ._config import Secret
from ._constants import (
    API_KEY_HEADER,
    TOO_LARGE_EXTENSION,
    USER_AGENT,
    WEBHOOK_HEADER,
)
from ._exceptions import (
    APIResponseError,
    APIStatusError,
    QuotaExceededError,
    status_error_class,
)
from ._models import Job, JobRequest, JobStatus
from ._policies import parse_retry_after
from ._urls import origin, same_origin, split_url, status_path

logger = logging.getLogger("mai_tools")

_QUOTA = re.compile(r"out of call volume quota.*?replenished in (\d+):(\d{2}):(\d{2})", re.I | re.S)


def quota_wait(message: str) -> float | None:
    """Seconds until an API Management call quota is replenished ("... in hh:mm:ss.")."""
    match = _QUOTA.search(message)
    if match is None:
        return None
    hours, minutes, seconds = (int(g) for g in match.groups())
    return float(hours * 3600 + minutes * 60 + seconds)


def is_quota_error(code: int, message: str) -> bool:
    return code == 403 and "out of call volume quota" in message.lower()


def scrub_json(value: Any, scrub: Callable[[str], str], depth: int = 0) -> Any:
    """``value`` with ``scrub`` applied to every string in it (keys included)."""
    if isinstance(value, str):
        return scrub(value)
    if depth > _MAX_DEPTH:
        raise RecursionError("JSON nested too deeply")
    if isinstance(value, dict):
        return {scrub(str(k)): scrub_json(v, scrub, depth + 1) for k, v in value.items()}
    if isinstance(value, list):
        return [scrub_json(v, scrub, depth + 1) for v in value]
    return value


_MAX_DEPTH = 64
"""Gateway answers nest three levels; anything past this is refused, never recursed into."""


def read_json(response: httpx.Response, scrub: Callable[[str], str]) -> Any:
    """The body as JSON with the API key scrubbed from every string.

    Raises:
        ValueError: not JSON, nested too deeply, or not read because it was too large.
    """
    cap = response.extensions.get(TOO_LARGE_EXTENSION)
    if cap is not None:
        raise ValueError(f"answer larger than {cap} bytes (not read)")
    try:
        return scrub_json(response.json(), scrub)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


def error_details(
    response: httpx.Response, scrub: Callable[[str], str] = str
) -> tuple[str | None, str, Any]:
    """(error, message, body) from an error response, tolerating any body.

    Two shapes exist: Pixazo's own ``{"error", "message"}``, and the API Management gateway's
    ``{"statusCode", "message"}`` in front of it (bad key, unknown route, rate limit, quota).
    """
    content_type = response.headers.get("content-type", "")
    try:
        body = read_json(response, scrub)
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


class Wire:
    """How one client talks to its gateway: its key, its origin, and the gateway's formats."""

    def __init__(self, api_key: Secret, base_url: str) -> None:
        self._api_key = api_key
        self.base_url = base_url

    def headers(self, webhook_url: str | None = None) -> dict[str, str]:
        headers = {
            API_KEY_HEADER: self._api_key.get(),
            "Content-Type": "application/json",
            "Cache-Control": "no-cache",
            "Accept": "application/json",
            "User-Agent": USER_AGENT,
        }
        if webhook_url is not None:
            headers[WEBHOOK_HEADER] = webhook_url
        return headers

    def scrub(self, text: str) -> str:
        """Remove the API key from server-provided text."""
        return self._api_key.scrub(text)

    def submit_url(self, body: JobRequest) -> str:
        return self.base_url + body.path

    def status_url(self, request_id: str, polling_url: str | None) -> str:
        """The status URL: the gateway's ``polling_url`` only on ``base_url``'s origin.

        A relative ``polling_url`` is resolved against ``base_url``. One on another origin is
        not used, so that the API key is only ever sent to ``base_url``.
        """
        if polling_url:
            parts = split_url(polling_url)
            if (
                parts is not None
                and not parts.scheme
                and not parts.netloc
                and polling_url[:1] == "/"
            ):
                return self.base_url + polling_url
            if same_origin(polling_url, self.base_url):
                return polling_url
            logger.warning(
                "polling_url for %s is on another origin (%s); polling %s instead so the API "
                "key is only sent to base_url",
                request_id,
                origin(polling_url)[1] or "?",
                self.base_url,
            )
        return self.base_url + status_path(request_id)

    def status_error(self, response: httpx.Response, request_id: str | None) -> APIStatusError:
        error, message, body = error_details(response, self.scrub)
        code = response.status_code
        if 300 <= code < 400:
            location = response.headers.get("location", "")
            message = (
                f"the gateway redirected to {origin(location)[1] or location[:60]!r}; "
                "redirects are not followed so the API key stays with base_url"
            )
        retry_after = parse_retry_after(response.headers.get("retry-after"))
        cls = status_error_class(code)
        if is_quota_error(code, message):
            cls = QuotaExceededError
            retry_after = retry_after if retry_after is not None else quota_wait(message)
        return cls(
            self.scrub(message),
            status_code=code,
            error=None if error is None else self.scrub(error),
            request_id=request_id,
            retry_after=retry_after,
            body=body,
        )

    def decode_json(self, response: httpx.Response, what: str, request_id: str | None) -> Any:
        try:
            return read_json(response, self.scrub)
        except (ValueError, UnicodeDecodeError) as exc:
            kind = response.headers.get("content-type", "no content type").split(";", 1)[0]
            detail = str(exc) if response.extensions.get(TOO_LARGE_EXTENSION) else "not JSON"
            raise APIResponseError(
                f"{what}: expected JSON, got {kind} ({detail}, {len(response.content)} bytes "
                f"read, HTTP {response.status_code})",
                request_id=request_id,
            ) from None

    def job_status(self, response: httpx.Response, request_id: str | None, what: str) -> JobStatus:
        """The one way an answer becomes a :class:`JobStatus` (submit and status reads alike).

        ``request_id`` is None for a submit answer. A 2xx submit answer that cannot be read
        may stand for a job that was made: those errors have ``may_have_arrived`` set.

        Raises:
            APIResponseError: not JSON, not an object, no request id, or fields not understood.
        """
        submit = request_id is None
        try:
            body = self.decode_json(response, what, request_id)
        except APIResponseError as exc:
            exc.may_have_arrived = submit
            raise
        if not isinstance(body, dict):
            raise APIResponseError(
                f"{what}: expected a JSON object, got a {type(body).__name__}",
                request_id=request_id,
                may_have_arrived=submit,
            )
        if submit:
            # A submit answer: it names the new job, and a job just made is QUEUED.
            if not body.get("request_id"):
                said = " - ".join(str(body[k])[:500] for k in ("error", "message") if body.get(k))
                raise APIResponseError(
                    f"{what} has no request_id"
                    + (f"; the gateway said: {said}" if said else " and no explanation"),
                    # The gateway said why it made no job; without words, it may have made one.
                    may_have_arrived=not said,
                )
            body.setdefault("status", "QUEUED")
        else:
            answered = body.setdefault("request_id", request_id)
            if answered != request_id:
                raise APIResponseError(
                    f"{what}: the gateway answered for another job ({str(answered)[:80]!r})",
                    request_id=request_id,
                )
        try:
            return JobStatus.from_body(body)
        except (RecursionError, pydantic.ValidationError) as exc:
            problem = (
                "nested too deeply"
                if isinstance(exc, RecursionError)
                else f"{exc.error_count()} invalid field(s)"
            )
            raise APIResponseError(
                f"{what} not understood: {problem}",
                request_id=str(body.get("request_id"))[:256] if submit else request_id,
                may_have_arrived=submit,
            ) from None

    def parse_submit(self, response: httpx.Response) -> Job | JobStatus:
        """A :class:`Job` to wait for, or the finished :class:`JobStatus` (sync mode)."""
        status = self.job_status(response, None, "Submit response")
        if status.output is not None or status.status.is_terminal:
            return status
        return Job(
            request_id=status.request_id,
            status=status.status,
            polling_url=status.polling_url,
            raw_status=status.raw_status,
        )
