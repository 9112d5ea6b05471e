"""Streamable HTTP: resumable answers, and no polling for a client that is gone.

- :class:`MemoryEventStore` keeps the recent messages of every response stream (bounded by
  count, bytes and age), so a client whose connection dropped reconnects with
  ``Last-Event-ID`` and still gets its answer. Events are tagged with the MCP session that
  produced them and replayed only to that session.
- :class:`ConnectionWatch` (ASGI middleware) notes when an HTTP client disconnects before its
  answer was written. A waiting tool asks :func:`client_gone`: on a session with an event
  store the client has :data:`RESUME_GRACE` seconds to reconnect, otherwise the wait stops at
  once (the job is remembered for an identical call: see ``_jobs``). The 2026-07-28 era's
  transport cancels the call by itself; this covers the 2025 (session) era.
"""

from __future__ import annotations

import contextvars
import logging
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from mcp.server.streamable_http import EventCallback, EventMessage, EventStore
from mcp.types import JSONRPCMessage
from starlette.types import ASGIApp, Message, Receive, Scope, Send

logger = logging.getLogger("mcp_server")

RESUME_GRACE = 15.0
"""Seconds a disconnected client of a resumable session has to reconnect."""
MAX_EVENTS = 2000
MAX_EVENT_BYTES = 64 * 1024 * 1024
MAX_EVENT_AGE = 900.0

_SESSION_HEADER = b"mcp-session-id"
_STATE_KEY = "mai_tools.mcp.connection"


@dataclass
class _Session:
    """The MCP session an HTTP request belongs to (learned from its response for the first)."""

    session_id: str | None


_SESSION: contextvars.ContextVar[_Session | None] = contextvars.ContextVar(
    "mai_mcp_session", default=None
)


def _current_session() -> str | None:
    box = _SESSION.get()
    return None if box is None else box.session_id


@dataclass
class _Event:
    session_id: str | None
    stream_id: str
    message: JSONRPCMessage | None
    size: int
    at: float


class MemoryEventStore(EventStore):
    """An in-memory, bounded event store (one per server process)."""

    def __init__(
        self,
        *,
        max_events: int = MAX_EVENTS,
        max_bytes: int = MAX_EVENT_BYTES,
        max_age: float = MAX_EVENT_AGE,
        grace: float = RESUME_GRACE,
    ) -> None:
        self.grace = grace
        """Seconds a disconnected client has to reconnect before its call stops waiting."""
        self._events: OrderedDict[str, _Event] = OrderedDict()
        self._bytes = 0
        self._max_events = max_events
        self._max_bytes = max_bytes
        self._max_age = max_age
        self._resumed: OrderedDict[tuple[str | None, str], float] = OrderedDict()

    # No __len__: the SDK tests the store for truth (``if self._event_store:``), and an
    # empty store must still count as one.
    @property
    def count(self) -> int:
        """How many events are stored."""
        return len(self._events)

    async def store_event(self, stream_id: str, message: JSONRPCMessage | None) -> str:
        event_id = uuid.uuid4().hex  # unguessable: an id is what a replay needs
        size = 0 if message is None else len(message.model_dump_json(by_alias=True))
        self._events[event_id] = _Event(
            _current_session(), stream_id, message, size, time.monotonic()
        )
        self._bytes += size
        self._trim()
        return event_id

    def _trim(self) -> None:
        oldest_allowed = time.monotonic() - self._max_age
        while self._events and (
            len(self._events) > self._max_events
            or self._bytes > self._max_bytes
            or next(iter(self._events.values())).at < oldest_allowed
        ):
            _, event = self._events.popitem(last=False)
            self._bytes -= event.size

    async def replay_events_after(
        self, last_event_id: str, send_callback: EventCallback
    ) -> str | None:
        start = self._events.get(last_event_id)
        session = _current_session()
        if start is None or start.session_id != session:
            logger.info("no stored events to replay after event %s", last_event_id[:12])
            return None
        found = False
        for event_id, event in list(self._events.items()):
            if not found:
                found = event_id == last_event_id
                continue
            same = event.stream_id == start.stream_id and event.session_id == session
            if same and event.message is not None:
                await send_callback(EventMessage(event.message, event_id))
        self._resumed[(session, start.stream_id)] = time.monotonic()
        while len(self._resumed) > self._max_events:
            self._resumed.popitem(last=False)
        return start.stream_id

    def resumed_after(self, session_id: str | None, stream_id: str, since: float) -> bool:
        """True if the stream was reconnected (replayed) after ``since`` (monotonic)."""
        at = self._resumed.get((session_id, stream_id))
        return at is not None and at >= since


class _Connection:
    """One HTTP request's fate: disconnected (when) before its answer was written?"""

    def __init__(self) -> None:
        self.disconnected_at: float | None = None
        self.answered = False


class ConnectionWatch:
    """ASGI middleware: marks requests whose client went away, and each request's session."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        header = dict(scope.get("headers", ())).get(_SESSION_HEADER)
        box = _Session(bytes(header).decode("latin-1") if header else None)
        token = _SESSION.set(box)
        connection = _Connection()
        scope[_STATE_KEY] = connection

        async def watched_receive() -> Message:
            message = await receive()
            first = connection.disconnected_at is None and not connection.answered
            if message["type"] == "http.disconnect" and first:
                connection.disconnected_at = time.monotonic()
            return message

        async def watched_send(message: Message) -> None:
            if message["type"] == "http.response.start" and box.session_id is None:
                for key, value in message.get("headers", ()):
                    if bytes(key).lower() == _SESSION_HEADER:
                        # The session created by this request (initialize): its tasks,
                        # started from here, tag their events with it.
                        box.session_id = bytes(value).decode("latin-1")
            elif message["type"] == "http.response.body" and not message.get("more_body"):
                connection.answered = True
            await send(message)

        try:
            await self.app(scope, watched_receive, watched_send)
        finally:
            _SESSION.reset(token)


def client_gone(request: Any, request_id: object, store: MemoryEventStore | None) -> bool:
    """True if the HTTP client of this tool call disconnected and will not get its answer.

    ``request`` is the call's Starlette request (None off HTTP: never gone). With an event
    store, a client that reconnects within its ``grace`` (:data:`RESUME_GRACE`) is not gone.
    """
    scope = getattr(request, "scope", None)
    connection = scope.get(_STATE_KEY) if isinstance(scope, dict) else None
    if not isinstance(connection, _Connection) or connection.disconnected_at is None:
        return False
    if store is None:
        return True
    headers = getattr(request, "headers", None)
    session = headers.get("mcp-session-id") if headers is not None else None
    if store.resumed_after(session, str(request_id), connection.disconnected_at):
        return False
    return time.monotonic() - connection.disconnected_at > store.grace
