"""Push waiting: receive the gateway's webhook callbacks and wake the jobs waiting for them.

A client made with ``webhooks=receiver`` sends every job with
``X-Webhook-URL: <receiver url>/<token>``, where the token is fresh, random (256 bits) and
names nothing else: not the key, not the request id. The wait then sleeps until the callback
for that token arrives, or until a sparse fallback read is due.

The safety model: **a callback is a hint, never the result.** The receiver takes no image URL
or status from a callback; it only wakes the wait, which reads the job's status once with the
client's key and returns that. So a forged or replayed callback can cost at most one status
read: it can neither inject URLs nor end a wait early. Unknown tokens get 404 and touch
nothing; duplicates are idempotent; callbacks after a wait ended are acknowledged and ignored.
Bodies are size-capped and must be a JSON object; tokens are dropped when their wait ends.

The receiver is an ASGI app (:attr:`WebhookReceiver.asgi_app`, mount it in FastAPI /
Starlette / the MCP server's HTTP app), or runs its own small uvicorn server in a background
thread (``with receiver:`` / ``async with receiver:``). Starlette and uvicorn are imported only
when used: ``import mai_tools`` stays light.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import secrets
import socket
import threading
import time
from collections import OrderedDict
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from ._constants import (
    MAX_CALLBACK_BYTES,
    WEBHOOK_MAX_CONNECTIONS,
    WEBHOOK_MAX_PARKED,
    WEBHOOK_MAX_PER_CLIENT,
    WEBHOOK_MAX_WAITING,
    WEBHOOK_PARKED_TTL,
    WEBHOOK_PATH,
    WEBHOOK_READ_TIMEOUT,
    WEBHOOK_RECENT,
)
from ._exceptions import ConfigurationError
from ._urls import has_unsafe_chars, split_url
from ._webhook_server import (
    answer,
    guarded_protocol,
    hide_tokens_in_logs,
    lifespan,
    read_body,
    receiver_guard,
)

if TYPE_CHECKING:
    from starlette.routing import Mount
    from starlette.types import ASGIApp, Receive, Scope, Send

logger = logging.getLogger("mai_tools")

_TOKEN_BYTES = 32
_TOKEN_LENGTH = 43  # token_urlsafe(32)
_TOKEN_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
_KEEP_ALIVE = 120  # the gateway may reuse its connection for the next callback


class Ticket:
    """One job's callback token and the wake-up of its wait (used by the clients' drivers)."""

    __slots__ = ("_fired", "_lock", "_waker", "request_id", "token", "url")

    def __init__(self, token: str, url: str) -> None:
        self.token = token
        self.url = url
        self.request_id: str | None = None
        self._fired = False
        self._waker: Any = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:  # the token is a capability: never shown
        return f"Ticket(request_id={self.request_id!r})"

    def bind(self, request_id: str) -> None:
        """The job this token belongs to (known once the submit is answered)."""
        if self.request_id is None:
            self.request_id = request_id

    def signal(self) -> None:
        """A callback arrived: wake the wait (from any thread)."""
        with self._lock:
            self._fired = True
            waker = self._waker
        if waker is not None:
            waker()

    def _arm(self, waker: Any) -> bool:
        with self._lock:
            self._waker = waker
            fired, self._fired = self._fired, False
        return fired

    def _disarm(self) -> bool:
        with self._lock:
            self._waker = None
            fired, self._fired = self._fired, False
        return fired

    def wait(self, seconds: float) -> bool:
        """Block up to ``seconds``; True if a callback came (also one that came before)."""
        event = threading.Event()
        if self._arm(event.set):
            self._disarm()
            return True
        event.wait(max(seconds, 0.0))
        return self._disarm()

    async def await_signal(self, seconds: float) -> bool:
        """Sleep up to ``seconds`` on the running loop; True if a callback came."""
        loop = asyncio.get_running_loop()
        event = asyncio.Event()

        def wake() -> None:  # runs on the receiver's thread, or on this loop
            with contextlib.suppress(RuntimeError):  # the loop has closed meanwhile
                loop.call_soon_threadsafe(event.set)

        if self._arm(wake):
            self._disarm()
            return True
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(seconds, 0.0)):
                    await event.wait()
        finally:
            fired = self._disarm()
        return fired


def _check_path(path: object) -> str:
    if not isinstance(path, str) or not path.startswith("/") or has_unsafe_chars(path):
        raise ConfigurationError(
            f"WebhookReceiver path must start with '/' and be printable ASCII, e.g. "
            f"{WEBHOOK_PATH!r}; got {str(path)[:80]!r}."
        )
    if "?" in path or "#" in path or "//" in path:
        raise ConfigurationError("WebhookReceiver path must not contain '?', '#' or '//'.")
    return path.rstrip("/") or ""


def check_public_url(public_url: object) -> str | None:
    """``public_url`` without a trailing slash, if it is an http(s) URL a gateway can call."""
    if public_url is None:
        return None
    if not isinstance(public_url, str):
        raise ConfigurationError(
            f"public_url must be a string URL; got {type(public_url).__name__}."
        )
    value = public_url.strip()
    parts = split_url(value)
    if parts is None or parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise ConfigurationError(
            "public_url must be an http(s) URL the gateway can reach, such as "
            f"'https://hooks.example.com'; got {value[:100]!r}."
        )
    if parts.query or parts.fragment or has_unsafe_chars(value):
        raise ConfigurationError(
            "public_url must be printable ASCII without a query string or fragment (it is "
            "sent in the X-Webhook-URL header)."
        )
    if parts.username or parts.password:
        raise ConfigurationError("public_url must not contain credentials (user:password@).")
    return value.rstrip("/")


def _is_wildcard(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_unspecified
    except ValueError:
        return False


def _route_path(scope: Scope) -> str:
    """The request path below the mount point (as Starlette's routing computes it)."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and path.startswith(root) and (len(path) == len(root) or path[len(root)] == "/"):
        return path[len(root) :]
    return path


class WebhookReceiver:
    """Receives the gateway's callbacks and wakes the waiting jobs.

    Give it to a client (``MAIImageClient(webhooks=receiver)``, or the async client): every
    submit then carries ``X-Webhook-URL: <url>/<token>`` (a fresh unguessable token per job),
    and waiting sleeps until that job's callback arrives, then reads its status once. Sparse
    fallback reads bound what a lost callback costs.

    Either run its own server in a background thread (``with receiver:`` or
    ``async with receiver:``), or mount :attr:`asgi_app` in your ASGI app at :attr:`path`
    (``app.mount(receiver.path, receiver.asgi_app)``) and pass ``public_url``.

    Args:
        public_url: the externally reachable base URL, when the gateway cannot reach
            ``host:port`` directly (a tunnel, a load balancer, the app you mount it in), e.g.
            ``https://hooks.example.com``; ``path`` is appended unless it already ends with
            it. Default: ``http://host:port``.
        host: the address the receiver's own server listens on.
        port: the port it listens on (``0``: a free port).
        path: the path callbacks arrive under (``<path>/<token>``).
        max_connections: how many connections the receiver's own server holds open at once.
            A connection over this (or over ``max_connections_per_client``) is closed on
            arrival: a flood costs callbacks (their waits fall back to polling), never the
            process's file descriptors.
        max_connections_per_client: how many of them may come from one client address (a
            tunnel or proxy in front of it is one client).
        read_timeout: seconds a request may take to arrive, headers and body; a connection
            whose request is slower is closed.

    The limits apply to the receiver's own server; an app that mounts :attr:`asgi_app` sets
    its own (its server's connection limits and timeouts).

    Raises:
        ConfigurationError: a ``public_url`` that is not http(s), a bad path or port, or a
            wildcard ``host`` (``0.0.0.0``) without ``public_url`` (no gateway can call that).
    """

    def __init__(
        self,
        public_url: str | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        path: str = WEBHOOK_PATH,
        max_connections: int = WEBHOOK_MAX_CONNECTIONS,
        max_connections_per_client: int = WEBHOOK_MAX_PER_CLIENT,
        read_timeout: float = WEBHOOK_READ_TIMEOUT,
    ) -> None:
        self._public = check_public_url(public_url)
        self._guard = receiver_guard(max_connections, max_connections_per_client, read_timeout)
        self.path = _check_path(path)
        if not isinstance(host, str) or not host.strip() or has_unsafe_chars(host):
            raise ConfigurationError(f"host must be a host name or address; got {host!r:.60}.")
        if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535:
            raise ConfigurationError(f"port must be a whole number 0-65535; got {port!r:.20}.")
        self.host = host.strip().strip("[]")
        self.port = port
        if self._public is None and _is_wildcard(self.host):
            raise ConfigurationError(
                f"WebhookReceiver listens on {self.host} (every interface) but no gateway can "
                "call that address: pass public_url=, the URL the gateway should call."
            )
        hide_tokens_in_logs(self.path)
        self._lock = threading.Lock()
        self._tickets: dict[str, Ticket] = {}
        self._parked: OrderedDict[str, float] = OrderedDict()  # token -> when parked
        self._by_request: dict[str, str] = {}  # request id -> parked token
        self._ended: OrderedDict[str, None] = OrderedDict()
        self._counts = {"accepted": 0, "ignored": 0, "unknown": 0, "refused": 0}
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None
        self._bound_port: int | None = None
        self.asgi_app: ASGIApp = _CallbackApp(self, prefix=None)
        """The callback endpoint as an ASGI app, to mount at :attr:`path`."""

    # ------------------------------------------------------------------ addresses

    @property
    def url(self) -> str:
        """The base URL in use; each job's callback URL is ``<url>/<token>``.

        Raises:
            ConfigurationError: no ``public_url`` and the receiver's server is not running.
        """
        if self._public is not None:
            return self._public if self._public.endswith(self.path) else self._public + self.path
        if self._bound_port is None:
            raise ConfigurationError(
                "The WebhookReceiver has no URL yet: start it (`with receiver:` or "
                "`async with receiver:`), or mount receiver.asgi_app in your app and pass "
                "public_url=..."
            )
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self._bound_port}{self.path}"

    @property
    def running(self) -> bool:
        """True while the receiver's own server is serving."""
        return self._thread is not None and self._thread.is_alive()

    def __repr__(self) -> str:
        try:
            where = repr(self.url)
        except ConfigurationError:
            where = f"'{self.host}:{self.port}' (not running)"
        return f"WebhookReceiver(url={where})"

    def mount(self) -> Mount:
        """A Starlette ``Mount`` of :attr:`asgi_app` at :attr:`path` (for ``routes=[...]``)."""
        from starlette.routing import Mount

        return Mount(self.path, app=self.asgi_app)

    def wrap(self, app: ASGIApp) -> ASGIApp:
        """An ASGI app serving callbacks under :attr:`path` and everything else with ``app``.

        Callbacks bypass ``app``'s middleware (the gateway sends no credentials: the token in
        the path is the capability, and a callback can only wake a wait).
        """
        return _CallbackApp(self, prefix=self.path, inner=app)

    def stats(self) -> dict[str, int]:
        """Counters: callbacks accepted / ignored (late) / unknown / refused; jobs waiting
        and parked; the own server's connections open, their peak, those closed on arrival
        (over a limit) and those closed for a request too slow to arrive."""
        guard = self._guard
        with self._lock:
            return {
                **self._counts,
                "waiting": len(self._tickets) - len(self._parked),
                "parked": len(self._parked),
                **guard.counts(),
            }

    # ------------------------------------------------------------------ own server

    def start(self) -> Self:
        """Start the receiver's own server in a background thread (once)."""
        if self.running:
            return self
        import uvicorn

        try:
            sock = socket.socket(
                socket.AF_INET6 if ":" in self.host else socket.AF_INET, socket.SOCK_STREAM
            )
        except OSError as exc:  # e.g. out of file descriptors
            raise ConfigurationError(
                f"The WebhookReceiver cannot open a socket: {exc.strerror or exc}."
            ) from None
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # answer in one go
            sock.bind((self.host, self.port))
        except OSError as exc:
            sock.close()
            raise ConfigurationError(
                f"The WebhookReceiver cannot listen on {self.host}:{self.port}: "
                f"{exc.strerror or exc}. Pick another port (port=0 takes a free one) or host."
            ) from None
        config = uvicorn.Config(
            _CallbackApp(self, prefix=self.path),
            log_config=None,  # leave the application's logging alone
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_keep_alive=_KEEP_ALIVE,
            backlog=2048,
            http=guarded_protocol(self._guard),
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, name="mai-webhooks", daemon=True
        )
        thread.start()
        deadline = time.monotonic() + 15
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                server.should_exit = True
                sock.close()
                raise ConfigurationError(
                    f"The WebhookReceiver's server on {self.host}:{self.port} did not start."
                )
            time.sleep(0.005)
        self._server, self._thread, self._sock = server, thread, sock
        self._bound_port = int(sock.getsockname()[1])
        return self

    def stop(self) -> None:
        """Stop the receiver's own server (waits already running fall back to polling)."""
        server, thread, sock = self._server, self._thread, self._sock
        self._server = self._thread = self._sock = None
        self._bound_port = None
        if server is not None:
            server.should_exit = True
        if thread is not None:
            thread.join(timeout=10)
        if sock is not None:
            sock.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    async def __aenter__(self) -> Self:
        return await asyncio.to_thread(self.start)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await asyncio.to_thread(self.stop)

    # ------------------------------------------------------------------ tokens (drivers)

    def issue(self) -> Ticket | None:
        """A fresh token for one job, or None when the receiver is full (then: polling)."""
        base = self.url  # raises before anything is sent when there is no URL
        now = time.monotonic()
        with self._lock:
            self._prune(now)
            if len(self._tickets) - len(self._parked) >= WEBHOOK_MAX_WAITING:
                logger.warning(
                    "webhook receiver is waiting for %d jobs already; this one polls",
                    WEBHOOK_MAX_WAITING,
                )
                return None
            token = secrets.token_urlsafe(_TOKEN_BYTES)
            ticket = Ticket(token, f"{base}/{token}")
            self._tickets[token] = ticket
        return ticket

    def release(self, ticket: Ticket, *, keep: bool = False) -> None:
        """The wait for ``ticket`` ended. ``keep`` (the job still runs, its id known): park
        the token for a later ``wait``; else drop it."""
        with self._lock:
            if self._tickets.get(ticket.token) is not ticket:
                return
            if keep and ticket.request_id is not None:
                self._parked[ticket.token] = time.monotonic()
                self._parked.move_to_end(ticket.token)
                self._by_request[ticket.request_id] = ticket.token
                while len(self._parked) > WEBHOOK_MAX_PARKED:
                    self._drop(next(iter(self._parked)))
                return
            self._drop(ticket.token)

    def claim(self, request_id: str) -> Ticket | None:
        """The parked token of ``request_id`` (a job this process submitted), for its wait."""
        with self._lock:
            self._prune(time.monotonic())
            token = self._by_request.pop(request_id, None)
            if token is None:
                return None
            self._parked.pop(token, None)
            ticket = self._tickets[token]
        ticket._disarm()  # the wait's first read covers any callback that came before
        return ticket

    def _drop(self, token: str) -> None:
        """Forget ``token`` (with the lock held); late callbacks for it are ignored."""
        ticket = self._tickets.pop(token, None)
        if self._parked.pop(token, None) is not None and ticket and ticket.request_id:
            self._by_request.pop(ticket.request_id, None)
        self._ended[token] = None
        while len(self._ended) > WEBHOOK_RECENT:
            self._ended.popitem(last=False)

    def _prune(self, now: float) -> None:
        while self._parked:
            token, since = next(iter(self._parked.items()))
            if now - since < WEBHOOK_PARKED_TTL:
                break
            self._drop(token)

    # ------------------------------------------------------------------ callbacks

    def _known(self, token: str) -> int:
        """200 for a live token, 204 for one whose wait ended, 404 otherwise."""
        if len(token) != _TOKEN_LENGTH or not _TOKEN_CHARS.issuperset(token):
            return 404
        with self._lock:
            if token in self._tickets:
                return 200
            if token in self._ended:
                return 204
        return 404

    def _deliver(self, token: str, body: bytes) -> tuple[int, str]:
        """Check one callback body and wake its wait. (status code, explanation)."""
        try:
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            return self._refuse("the body is not JSON")
        except RecursionError:  # nested deeper than the parser goes: a 400, not a traceback
            return self._refuse("the body is nested too deeply")
        if not isinstance(data, dict):
            return self._refuse("the body is not a JSON object")
        with self._lock:
            ticket = self._tickets.get(token)
            if ticket is None:  # the wait ended while the body was read
                self._counts["ignored"] += 1
                return 200, "the wait already ended"
            said = data.get("request_id")
            if said is not None and (
                not isinstance(said, str)
                or (ticket.request_id is not None and said != ticket.request_id)
            ):
                self._counts["refused"] += 1
                return 400, "request_id is not this token's job"
            self._counts["accepted"] += 1
        logger.debug("webhook callback for %s", ticket.request_id or "a job being submitted")
        ticket.signal()
        return 200, "ok"

    def _refuse(self, why: str) -> tuple[int, str]:
        with self._lock:
            self._counts["refused"] += 1
        return 400, why

    def _count(self, what: str) -> None:
        with self._lock:
            self._counts[what] += 1


class _CallbackApp:
    """The ASGI endpoint: ``POST [prefix]/<token>`` with a JSON object body."""

    def __init__(
        self, receiver: WebhookReceiver, prefix: str | None, inner: ASGIApp | None = None
    ) -> None:
        self.receiver = receiver
        self.prefix = prefix
        self.inner = inner

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path = _route_path(scope)
            if self.prefix is not None:
                if not path.startswith(self.prefix + "/"):
                    if self.inner is not None:
                        await self.inner(scope, receive, send)
                    else:
                        await answer(send, 404, "not found")
                    return
                path = path[len(self.prefix) :]
            await self._callback(path, scope, receive, send)
        elif self.inner is not None:
            await self.inner(scope, receive, send)
        elif scope["type"] == "lifespan":
            await lifespan(receive, send)

    async def _callback(self, path: str, scope: Scope, receive: Receive, send: Send) -> None:
        token = path[1:]
        known = self.receiver._known(token)
        if known == 404:
            self.receiver._count("unknown")
            await answer(send, 404, "unknown token")
            return
        if scope["method"] != "POST":
            await answer(send, 405, "POST only", [(b"allow", b"POST")])
            return
        if known == 204:
            self.receiver._count("ignored")
            await answer(send, 200, "the wait already ended")
            return
        for name, value in scope.get("headers", ()):
            if name.lower() == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1
                if not 0 <= declared <= MAX_CALLBACK_BYTES:
                    self.receiver._count("refused")
                    await answer(send, 413, f"at most {MAX_CALLBACK_BYTES} bytes")
                    return
        body = await read_body(receive, MAX_CALLBACK_BYTES)
        if body is None:
            self.receiver._count("refused")
            await answer(send, 413, f"at most {MAX_CALLBACK_BYTES} bytes")
            return
        status, why = self.receiver._deliver(token, body)
        await answer(send, status, why)


__all__ = ["Ticket", "WebhookReceiver"]
