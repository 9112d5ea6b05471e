"""What a flow asks its driver to do, and the hook that paces what a driver sends.

A flow (:mod:`mai_tools._flow`) yields these actions; a driver (the sync or the async client)
does them and sends back what came of them. :class:`RequestGate` / :class:`AsyncRequestGate`
are how a caller paces a driver's requests (a run-wide token bucket, a 429 pause) and learns
the moment a submit POST leaves (to journal it just before).
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, TypeVar

import httpx

from ._constants import MAX_ANSWER_BYTES
from ._status import JobStatus
from .jobbook import JobBook

T = TypeVar("T")

OnStatus = Callable[[JobStatus, float], object]
"""Called on every status change with the new status and seconds elapsed since submission."""


RequestKind = Literal["submit", "status"]
Exchange = httpx.Response | httpx.TransportError
"""What came of one request: the answer, or the transport failure."""

NEVER_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
"""Failures where the request certainly never reached the gateway: the only transport failures
after which a submit POST may be tried again (with a 429, which also created nothing)."""


@dataclass(frozen=True)
class HTTPRequest:
    """Send this request; the reply is an ``httpx.Response`` or an ``httpx.TransportError``.

    What a :class:`RequestGate` is shown before the request is sent: ``kind`` says whether it
    is a job's submit POST (which may create a charged job) or a status read.
    """

    method: str
    """``GET`` or ``POST``."""
    url: str
    """The full URL."""
    headers: Mapping[str, str] = field(repr=False)
    """The headers to send (they carry the API key: never log them)."""
    json: Mapping[str, Any] | None = field(repr=False)
    """The JSON body of a submit; ``None`` for a status read."""
    timeout: httpx.Timeout
    """httpx's timeouts for this request, capped by the call's remaining time."""
    max_body: int = MAX_ANSWER_BYTES
    """Read at most this many bytes of the answer; a longer one is not read (and flagged)."""
    kind: RequestKind = "status"
    """``"submit"`` for a job's submit POST (which may create a charged job), else
    ``"status"``."""


class RequestGate(Protocol):
    """Admits each HTTP request of one call of the sync client (``gate=`` on its methods).

    The client first takes one of its own request slots (``max_concurrent_requests``), then
    calls :meth:`admit`, then sends at once: a gate that records "about to send" in
    :meth:`admit` records it only for a request that leaves right after (a batch journals a
    line's intent there). :meth:`admit` may wait (a token bucket, a run-wide pause) or raise
    to refuse; the exception ends the call and nothing is sent. :meth:`observe` sees every
    answer (or transport failure), e.g. a 429 that should pause every request of a run.
    """

    def admit(self, request: HTTPRequest) -> None:
        """Called right before ``request`` is sent: return to send it, raise to refuse it."""

    def observe(self, request: HTTPRequest, reply: httpx.Response | httpx.TransportError) -> None:
        """Called with each answer to an admitted request, or the transport error it met."""


class AsyncRequestGate(Protocol):
    """:class:`RequestGate` for the async client: :meth:`admit` is awaited."""

    async def admit(self, request: HTTPRequest) -> None:
        """Awaited right before ``request`` is sent: return to send it, raise to refuse it."""

    def observe(self, request: HTTPRequest, reply: httpx.Response | httpx.TransportError) -> None:
        """Called with each answer to an admitted request, or the transport error it met."""


@dataclass(frozen=True)
class Sleep:
    """Sleep this many seconds."""

    seconds: float


@dataclass(frozen=True)
class WaitForSignal:
    """Sleep up to this many seconds, or less if the job's webhook callback arrives first.

    Reply True when the callback ended the sleep (the flow then reads the status once: a
    callback is a hint, never the result), anything else when the time ran out. A driver
    with no webhook receiver for the job just sleeps.
    """

    request_id: str
    seconds: float


@dataclass(frozen=True)
class Notify:
    """Report a status change to the caller's ``on_status``."""

    status: JobStatus
    elapsed: float


@dataclass(frozen=True)
class BookIO:
    """Run ``op`` on the client's job book and send back what it returns.

    An exception it raises is thrown into the flow at this point. The book is never None
    when a flow yields this (a flow without a book never asks).
    """

    op: Callable[[JobBook], Any]


class Abandoned(BaseException):
    """Thrown into a flow when its driver gives up on it (cancelled, interrupted, a gate's
    refusal), so the flow can settle what it wrote in the job book before it is closed.

    ``sent``: the flow was at a request the driver had already started to send (a submit
    that may have arrived).
    """

    def __init__(self, sent: bool) -> None:
        super().__init__("the driver gave up on this flow")
        self.sent = sent


Action = HTTPRequest | Sleep | WaitForSignal | Notify | BookIO
Reply = httpx.Response | httpx.TransportError | bool | None | Any
Flow = Generator[Action, Reply, T]
