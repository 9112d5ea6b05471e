"""What a flood of connections may take from a server this project runs with uvicorn.

Anyone who can reach the port can connect. uvicorn itself bounds none of this:
``limit_concurrency`` answers 503 only once a request's headers are complete (a half-sent
request holds its connection and file descriptor for good), and ``timeout_keep_alive`` covers
only the idle time between requests. :func:`guarded_protocol` is uvicorn's h11 protocol with a
:class:`Guard`'s limits: open connections in all and per client address (one over a cap is
closed on arrival, its descriptor free again at once), the time a request may take to arrive
(a slower connection is closed), and the log lines a flood writes (:class:`RateLimit`).

Two servers use it, each with its own limits: a :class:`~mai_tools.WebhookReceiver`'s own
server (a request must be *answered* within the read timeout: callbacks are small and quick)
and ``mai-image-mcp`` over HTTP (a request must *arrive* within it; its answer, a tool call's
event stream, may take as long as the call).
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections.abc import Callable
from typing import Any, Literal

from ._exceptions import ConfigurationError

Until = Literal["answered", "received"]


class RateLimit(logging.Filter):
    """Lets at most ``burst`` records through per ``period`` seconds; the first record of the
    next period says how many were dropped. A flood of bad connections then costs a few log
    lines a minute, not megabytes. With ``only``, just the records whose message (its format
    string) starts with it are counted and limited; the others pass."""

    def __init__(
        self,
        burst: int = 10,
        period: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        *,
        only: str | None = None,
    ) -> None:
        super().__init__()
        self.only = only
        self.burst = burst
        self.period = period
        self._clock = clock
        self._lock = threading.Lock()
        self._since = -math.inf
        self._passed = 0
        self.dropped = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if self.only is not None and not str(record.msg).startswith(self.only):
            return True
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


def rate_limited_log(name: str) -> logging.Logger:
    """The logger ``name`` at WARNING with a :class:`RateLimit` (added once)."""
    log = logging.getLogger(name)
    log.setLevel(logging.WARNING)  # uvicorn checks .level before each TRACE line
    if not any(isinstance(f, RateLimit) for f in log.filters):
        log.addFilter(RateLimit())
    return log


def _check_limit(name: str, limit: object) -> int:
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
        raise ConfigurationError(f"{name} must be a whole number >= 1; got {limit!r:.20}.")
    return limit


class Guard:
    """What a guarded server admits: at most ``max_connections`` open connections,
    ``max_per_client`` from one address, each request read within ``read_timeout`` (until it
    is ``answered``, or until it is ``received``: headers and body).

    ``log`` gets the "closed on arrival" warnings and uvicorn's per-connection lines (rate
    limit it: :func:`rate_limited_log`); ``server`` names the server in them and
    ``turned_away`` says what a closed connection costs. Touched only on the server's event
    loop; :meth:`counts` reads its counters.
    """

    def __init__(
        self,
        max_connections: int,
        max_per_client: int,
        read_timeout: float,
        *,
        until: Until = "answered",
        log: logging.Logger | None = None,
        server: str = "server",
        turned_away: str = "the client may try again",
    ) -> None:
        self.max_connections = _check_limit("max_connections", max_connections)
        self.max_per_client = _check_limit("max_connections_per_client", max_per_client)
        if (
            not isinstance(read_timeout, int | float)
            or isinstance(read_timeout, bool)
            or not 0 < read_timeout < math.inf
        ):
            raise ConfigurationError(f"read_timeout must be seconds > 0; got {read_timeout!r:.20}.")
        self.read_timeout = float(read_timeout)
        self.until = until
        self.log = log or rate_limited_log("mai_tools.server")
        self._server = server
        self._turned_away = turned_away
        self.open = 0
        self.peak = 0
        self.per_client: dict[str, int] = {}
        self.admitted = 0
        self.turned_away = 0
        self.too_slow = 0

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
                "%s: a connection was closed on arrival (at most %d open, %d per client); %s",
                self._server,
                self.max_connections,
                self.max_per_client,
                self._turned_away,
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


def guarded_protocol(guard: Guard) -> type[Any]:
    """uvicorn's h11 protocol with ``guard``'s limits (pass it as ``uvicorn.Config(http=)``).

    A connection over the caps is closed on arrival; one whose request has not been answered
    (``until="answered"``) or fully received (``until="received"``) within ``read_timeout`` of
    its first byte (of the connection, for the first request) is closed.
    """
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    received = guard.until == "received"

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
            if self._deadline is None and not (received and self._receiving_done()):
                self._arm()  # a new request on a kept-alive connection
            super().data_received(data)
            if received and self._receiving_done():
                self._disarm()  # all of it is here: its answer may take as long as it takes

        def _receiving_done(self) -> bool:
            # h11's view of the client: DONE once a request's end has been read (until the
            # answer completes and the next cycle starts); MUST_CLOSE/CLOSED: nothing more.
            return self.conn.their_state in (h11.DONE, h11.MUST_CLOSE, h11.CLOSED)

        def on_response_complete(self) -> None:
            self._disarm()  # answered: from here uvicorn's keep-alive timeout applies
            super().on_response_complete()
            if self.cycle is not None and not self.cycle.response_complete:
                self._arm()  # a pipelined request started at once
                if received and self._receiving_done():
                    self._disarm()

        def _arm(self) -> None:
            self._disarm()
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


__all__ = ["Guard", "RateLimit", "Until", "guarded_protocol", "rate_limited_log"]
