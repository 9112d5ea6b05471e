"""``/healthz`` and ``/readyz`` on the HTTP server: for probes, load balancers and operators.

- ``GET /healthz``: 200 ``{"status": "ok"}`` while the process serves HTTP (liveness).
- ``GET /readyz``: 200 ``{"status": "ready"}`` when the server would do a job now: it has
  started (its lifespan ran), is not stopping, has a gateway client (its settings gave a usable
  key and base URL), its tokens file (``--tokens-file``) can be read (else every named token is
  refused), and its job book answers a read (one ``SELECT`` by primary key). Else
  503 ``{"status": "not ready", "reason": ...}``, the reason in a few fixed words.

Both answer before anything else sees the request: no bearer token (a probe has none), no
Host or Origin check (a kubelet probes ``POD_IP:PORT``, a name no operator lists), no MCP
session. That is safe because they do nothing and tell nothing: a fixed body, no path, URL,
host name, version, principal or error text (a database error can quote its URL; the version
would tell a scanner which known bugs to try: operators read it in the start line). A book
read costs one indexed ``SELECT``; probes share one read at a time, and its answer is reused
for :data:`READY_TTL` seconds, so a flood of ``/readyz`` cannot load the book.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Final

import anyio
from starlette.types import ASGIApp, Receive, Scope, Send

from mai_tools._exceptions import JobBookError

from ._state import STOPPING, running

if TYPE_CHECKING:
    from mcp.server.mcpserver import MCPServer

    from mai_tools.jobbook import JobBook

    from ._auth import Authenticator

logger = logging.getLogger("mcp_server")

HEALTH_PATH: Final = "/healthz"
READY_PATH: Final = "/readyz"
READY_TTL: Final = 1.0
"""Seconds a readiness answer is reused (probes come every few seconds; floods more often)."""
READ_TIMEOUT: Final = 5.0
"""A book read that takes longer than this counts as unreachable."""
_PROBE_ID: Final = "readyz-probe"


class Health:
    """ASGI middleware answering :data:`HEALTH_PATH` and :data:`READY_PATH` (GET or HEAD) in
    front of ``app``; every other request goes to ``app``."""

    def __init__(
        self,
        app: ASGIApp,
        server: MCPServer,
        *,
        authenticator: Authenticator | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.app = app
        self.server = server
        self.authenticator = authenticator
        self.clock = clock
        self._lock = anyio.Lock()
        self._answer: tuple[float, str | None] | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(app={self.app!r})"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path") if scope["type"] == "http" else None
        if path not in (HEALTH_PATH, READY_PATH):
            await self.app(scope, receive, send)
            return
        if scope["method"] not in ("GET", "HEAD"):
            await _send(send, scope, 405, {"status": "method not allowed"}, allow=True)
        elif path == HEALTH_PATH:
            await _send(send, scope, 200, {"status": "ok"})
        else:
            reason = await self.not_ready()
            if reason is None:
                await _send(send, scope, 200, {"status": "ready"})
            else:
                await _send(send, scope, 503, {"status": "not ready", "reason": reason})

    async def not_ready(self) -> str | None:
        """Why the server is not ready (a few fixed words), or None if it is."""
        async with self._lock:  # one book read at a time; the others take its answer
            now = self.clock()
            if self._answer is not None and now - self._answer[0] < READY_TTL:
                return self._answer[1]
            reason = await self._check()
            self._answer = (self.clock(), reason)
            return reason

    async def _check(self) -> str | None:
        if STOPPING.is_set():
            return "stopping"
        state = running(self.server)
        if state is None:
            return "starting"
        if state.client is None:
            return "no gateway client: the API key or base URL is missing or invalid"
        named = None if self.authenticator is None else self.authenticator.named
        if named is not None and not named.usable:
            return "the tokens file cannot be used"
        if state.book is None:
            return None  # a caller's client without a book: nothing to reach
        return await _book_reason(state.book)


async def _book_reason(book: JobBook) -> str | None:
    def read(b: JobBook = book) -> None:
        b.get(_PROBE_ID)

    try:
        with anyio.fail_after(READ_TIMEOUT):
            if book.offload:
                await anyio.to_thread.run_sync(read, abandon_on_cancel=True)
            else:
                read()
    except TimeoutError:
        logger.warning("readiness: the job book did not answer within %gs", READ_TIMEOUT)
        return "the job book does not answer"
    except JobBookError as exc:
        logger.warning("readiness: the job book cannot be read: %s", exc)
        return "the job book cannot be read"
    return None


async def _send(
    send: Send, scope: Scope, status: int, body: dict[str, str], *, allow: bool = False
) -> None:
    payload = json.dumps(body).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(payload)).encode()),
        (b"cache-control", b"no-store"),
    ]
    if allow:
        headers.append((b"allow", b"GET, HEAD"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send(
        {"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else payload}
    )
