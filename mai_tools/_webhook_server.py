"""The server side of a :class:`~mai_tools.WebhookReceiver`: its own server's guard, its logs,
and the ASGI plumbing of the callback endpoint.

Anyone who can reach the receiver's port can connect without a token. What they can take is
bounded here: open connections in all and per client address, the time a request may take to
arrive, and the log lines a flood writes. And the tokens (capabilities) in callback paths are
kept out of the access log of whatever server hosts the receiver.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ._exceptions import ConfigurationError

if TYPE_CHECKING:
    from starlette.types import Receive, Send


class HideTokens(logging.Filter):
    """Writes the placeholder ``<token>`` for the token of ``<path>/<token>`` in a record.

    uvicorn's access log (INFO) writes every request's path, and a callback's path ends with
    its capability token. Installed on the ``uvicorn.access`` logger (a logger's filters see
    every record logged to it, whichever handler writes it), so whatever serves the receiver,
    its own server, the MCP server's app or a user's, logs no token.
    """

    def __init__(self) -> None:
        super().__init__()
        self.paths: set[str] = set()
        self._pattern: re.Pattern[str] | None = None

    def add(self, path: str) -> None:
        self.paths.add(path)
        prefixes = "|".join(re.escape(p) for p in sorted(self.paths, key=len, reverse=True))
        self._pattern = re.compile(f'((?:{prefixes})/)[^/?#\\s"]+')

    def _hide(self, value: object) -> object:
        if isinstance(value, str) and self._pattern is not None:
            return self._pattern.sub(r"\1<token>", value)
        return value

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = self._hide(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(self._hide(arg) for arg in record.args)
        return True


_HIDE_TOKENS = HideTokens()
_HIDE_LOCK = threading.Lock()
_LOGS_WITH_PATHS = ("uvicorn.access",)


def hide_tokens_in_logs(path: str) -> None:
    """Keep callback tokens under ``path`` out of the access logs (once per path)."""
    with _HIDE_LOCK:
        if path in _HIDE_TOKENS.paths:
            return
        _HIDE_TOKENS.add(path)
        for name in _LOGS_WITH_PATHS:
            named = logging.getLogger(name)
            if _HIDE_TOKENS not in named.filters:
                named.addFilter(_HIDE_TOKENS)


class RateLimit(logging.Filter):
    """Lets at most ``burst`` records through per ``period`` seconds; the first record of the
    next period says how many were dropped. A flood of bad connections then costs a few log
    lines a minute, not megabytes."""

    def __init__(
        self, burst: int = 10, period: float = 60.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__()
        self.burst = burst
        self.period = period
        self._clock = clock
        self._lock = threading.Lock()
        self._since = -math.inf
        self._passed = 0
        self.dropped = 0

    def filter(self, record: logging.LogRecord) -> bool:
        with self._lock:
            now = self._clock()
            if now - self._since >= self.period:
                self._since, self._passed = now, 0
                if self.dropped:
                    record.msg = f"{record.msg} (and {self.dropped} more like it were not logged)"
                    self.dropped = 0
            if self._passed >= self.burst:
                self.dropped += 1
                return False
            self._passed += 1
            return True


class Guard:
    """What the receiver's own server admits: at most ``max_connections`` open connections,
    ``max_per_client`` from one address, each request read within ``read_timeout``.

    Touched only on the server's event loop; :meth:`WebhookReceiver.stats` reads its counters.
    """

    def __init__(self, max_connections: int, max_per_client: int, read_timeout: float) -> None:
        for name, limit in (
            ("max_connections", max_connections),
            ("max_connections_per_client", max_per_client),
        ):
            if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
                raise ConfigurationError(f"{name} must be a whole number >= 1; got {limit!r:.20}.")
        if (
            not isinstance(read_timeout, int | float)
            or isinstance(read_timeout, bool)
            or not 0 < read_timeout < math.inf
        ):
            raise ConfigurationError(f"read_timeout must be seconds > 0; got {read_timeout!r:.20}.")
        self.max_connections = max_connections
        self.max_per_client = max_per_client
        self.read_timeout = float(read_timeout)
        self.open = 0
        self.peak = 0
        self.per_client: dict[str, int] = {}
        self.admitted = 0
        self.turned_away = 0
        self.too_slow = 0
        self.log = _SERVER_LOG

    def counts(self) -> dict[str, int]:
        return {
            "connections": self.open,
            "connections_peak": self.peak,
            "connections_turned_away": self.turned_away,
            "connections_too_slow": self.too_slow,
        }

    def admit(self, client: str) -> bool:
        count = self.per_client.get(client, 0)
        if self.open >= self.max_connections or count >= self.max_per_client:
            self.turned_away += 1
            self.log.warning(
                "webhook receiver: a connection was closed on arrival (at most %d open, %d "
                "per client); callbacks it would have carried fall back to polling",
                self.max_connections,
                self.max_per_client,
            )
            return False
        self.per_client[client] = count + 1
        self.open += 1
        self.admitted += 1
        self.peak = max(self.peak, self.open)
        return True

    def leave(self, client: str) -> None:
        self.open -= 1
        left = self.per_client[client] - 1
        if left:
            self.per_client[client] = left
        else:
            del self.per_client[client]


_SERVER_LOG = logging.getLogger("mai_tools.webhooks.server")
_SERVER_LOG.setLevel(logging.WARNING)  # uvicorn checks .level before each TRACE line
_SERVER_LOG.addFilter(RateLimit())


def guarded_protocol(guard: Guard) -> type[Any]:
    """uvicorn's h11 protocol with ``guard``'s limits.

    uvicorn itself bounds none of this: ``limit_concurrency`` answers 503 only once a request's
    headers are complete (a half-sent request holds its connection and file descriptor for
    good), and ``timeout_keep_alive`` covers only the idle time between requests. Here a
    connection over the caps is closed on arrival (its descriptor is free again at once), and
    one whose request has not been answered within ``read_timeout`` is closed.
    """
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class GuardedH11(H11Protocol):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.logger = guard.log  # uvicorn's per-connection warnings, rate limited
            self._peer: str | None = None
            self._deadline: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            peer = self.client[0] if self.client else ""
            if not guard.admit(peer):
                transport.abort()  # no answer: a flood gets nothing to read
                return
            self._peer = peer
            self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            if self._peer is not None:
                guard.leave(self._peer)
                self._peer = None
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            if self._deadline is None:  # a new request on a kept-alive connection
                self._arm()
            super().data_received(data)

        def on_response_complete(self) -> None:
            self._disarm()  # answered: from here uvicorn's keep-alive timeout applies
            super().on_response_complete()
            if self.cycle is not None and not self.cycle.response_complete:
                self._arm()  # a pipelined request started at once

        def _arm(self) -> None:
            self._deadline = self.loop.call_later(guard.read_timeout, self._too_slow)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _too_slow(self) -> None:
            self._deadline = None
            guard.too_slow += 1
            self.transport.abort()

    return GuardedH11


async def read_body(receive: Receive, limit: int) -> bytes | None:
    """The request body, or None past ``limit`` bytes (or a disconnect): never buffered past."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def answer(
    send: Send, status: int, message: str, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    payload = json.dumps({"ok": status == 200, "message": message}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


async def lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


__all__ = [
    "Guard",
    "HideTokens",
    "RateLimit",
    "answer",
    "guarded_protocol",
    "hide_tokens_in_logs",
    "lifespan",
    "read_body",
]
