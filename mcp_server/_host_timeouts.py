"""Answering before the host gives up: each client's tool-call timeout, learned as it shows it.

Some hosts cut a tool call off long before the server's ``max_wait`` (the OpenAI Agents SDK
after 5 s by default) and show the model a generic "an error occurred, try again". They tell
the server why in ``notifications/cancelled`` (reason ``"timed out after 5s"``). From then on,
every call from that client answers within its timeout: "still running, request_id …, usually
done in about N s, call get_image_job" arrives as an answer the model can act on, instead of a
cut-off call and a retry. (The cut-off call's job is not lost: its answer was never delivered,
so the identical retry continues it through the job book.)

Clients are told apart by their HTTP session, or, on sessionless HTTP (2026-07-28), by
principal and network address; a stdio server has one client. The client's name does not
help: most send ``mcp``. A 2026-07-28 client in the same process (``mcp.Client(server)``)
sends no cancellation at all: nothing is learned from it.
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from typing import Any, Final

from mcp.server.context import CallNext, HandlerResult, ServerRequestContext

from ._identity import principal

_TIMEOUT: Final = re.compile(
    r"time(?:d)?[\s_-]*out\D{0,24}?(\d+(?:\.\d+)?)\s*(ms|milliseconds?|s|secs?|seconds?)?\b",
    re.IGNORECASE,
)
MAX_CLIENTS: Final = 10_000
"""Clients remembered at once (the least recently seen are forgotten first)."""
MIN_ANSWER_TIME: Final = 1.0
"""The shortest wait a learned timeout brings a call down to (a submit must fit)."""


def timeout_of(reason: object) -> float | None:
    """The timeout, in seconds, a cancellation reason names ("timed out after 5s",
    "Request timed out after 30000ms"), or None."""
    if not isinstance(reason, str):
        return None
    found = _TIMEOUT.search(reason[:500])
    if found is None:
        return None
    value = float(found.group(1))
    unit = (found.group(2) or "s").lower()
    seconds = value / 1000 if unit.startswith("m") else value
    return seconds if 0 < seconds < 86_400 else None


def answer_within(timeout: float) -> float:
    """How long a call may wait for a client that gives up after ``timeout`` seconds: room
    for the answer to travel and for the host's own overhead (a fifth, at least 1.5 s)."""
    return max(min(timeout * 0.8, timeout - 1.5), MIN_ANSWER_TIME)


def _client_key(ctx: ServerRequestContext[Any, Any]) -> object:
    request = ctx.request
    headers = getattr(request, "headers", None)
    session_id = headers.get("mcp-session-id") if headers is not None else None
    if session_id:
        return ("http-session", session_id)
    if request is None:
        # stdio: a server serves the one client that started it (on 2026-07-28 every
        # request arrives as its own exchange, so there is no connection object to key by).
        return ("stdio",)
    client = getattr(request, "client", None)
    return ("http", principal(ctx), getattr(client, "host", None))


class HostTimeouts:
    """The server middleware that learns clients' timeouts, and what a call may wait."""

    def __init__(self) -> None:
        self._learned: OrderedDict[object, float] = OrderedDict()
        self._lock = threading.Lock()

    async def __call__(
        self, ctx: ServerRequestContext[Any, Any], call_next: CallNext
    ) -> HandlerResult:
        if ctx.method == "notifications/cancelled" and ctx.request_id is None:
            seconds = timeout_of((ctx.params or {}).get("reason"))
            if seconds is not None:
                self._learn(_client_key(ctx), seconds)
        return await call_next(ctx)

    def _learn(self, key: object, seconds: float) -> None:
        with self._lock:
            known = self._learned.pop(key, None)
            self._learned[key] = seconds if known is None else min(known, seconds)
            while len(self._learned) > MAX_CLIENTS:
                self._learned.popitem(last=False)

    def timeout(self, ctx: ServerRequestContext[Any, Any]) -> float | None:
        """The tool-call timeout the calling client has shown (None: none seen)."""
        with self._lock:
            return self._learned.get(_client_key(ctx))

    def max_wait(self, ctx: ServerRequestContext[Any, Any], configured: float) -> float:
        """How long this call may wait: ``configured``, or less for a client known to give up
        sooner."""
        timeout = self.timeout(ctx)
        return configured if timeout is None else min(configured, answer_within(timeout))
