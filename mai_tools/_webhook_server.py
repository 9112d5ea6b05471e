"""The server side of a :class:`~mai_tools.WebhookReceiver`: its own server's guard, its logs,
and the ASGI plumbing of the callback endpoint.

Anyone who can reach the receiver's port can connect without a token. What they can take is
bounded by :mod:`mai_tools._server_guard` (shared with the MCP server's HTTP transport): open
connections in all and per client address, the time a request may take to arrive, and the log
lines a flood writes. And the tokens (capabilities) in callback paths are kept out of the
access log of whatever server hosts the receiver.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from typing import TYPE_CHECKING

from ._server_guard import Guard, RateLimit, guarded_protocol, rate_limited_log

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


_SERVER_LOG = rate_limited_log("mai_tools.webhooks.server")


def receiver_guard(max_connections: int, max_per_client: int, read_timeout: float) -> Guard:
    """The receiver's own server's :class:`Guard`: a callback must be answered within
    ``read_timeout``; a connection turned away costs a callback (its wait polls)."""
    return Guard(
        max_connections,
        max_per_client,
        read_timeout,
        until="answered",
        log=_SERVER_LOG,
        server="webhook receiver",
        turned_away="callbacks it would have carried fall back to polling",
    )


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
    "receiver_guard",
]
