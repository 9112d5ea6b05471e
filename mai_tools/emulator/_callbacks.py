"""The emulator's webhook sender: HTTP/1.1 POSTs over kept-alive connections.

httpx spends about 2 ms of CPU per request in its connection pool once a few dozen requests
are in flight (1,000 callbacks, 32 at a time: 1.8-2.9 s of CPU, measured on the 2-core
benchmark machine). A thousand jobs finishing within a second then kept the emulator's one
core busy sending for two seconds, and the callbacks arrived late. This sender writes the
request itself and reads the answer's status line, headers and body (Content-Length, chunked,
or up to the connection's end): about 40 us of CPU per callback.

Like the httpx client before it: no proxies (a callback goes where its URL says), no redirects
(a receiver cannot send a callback on to another host), TLS verified against the system's
default certificates for https URLs.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from urllib.parse import urlsplit

from .._version import __version__

MAX_ANSWER_BYTES = 64 * 1024
"""A receiver's answer is read (and thrown away) up to this size; a longer one is an error."""

_USER_AGENT = f"mai-tools-emulator/{__version__}"
_Conn = tuple[asyncio.StreamReader, asyncio.StreamWriter]
_Origin = tuple[str, str, int]


class CallbackError(Exception):
    """A callback was not delivered; the message names the kind (``ConnectError``,
    ``Timeout``, ``ReadError``, ``RemoteProtocolError``, ``InvalidURL``)."""


class _Stale(Exception):
    """A kept-alive connection was closed by the receiver before it answered."""


class CallbackSender:
    """POSTs JSON callbacks, keeping up to ``max_idle`` idle connections per receiver."""

    def __init__(self, *, timeout: float = 10.0, max_idle: int = 32) -> None:
        self.timeout = timeout
        self.max_idle = max_idle
        self._idle: dict[_Origin, list[_Conn]] = {}
        self._tls: ssl.SSLContext | None = None
        self.connections_opened = 0
        """How many connections were opened (the rest of the callbacks reused one)."""

    async def post_json(self, url: str, body: bytes) -> int:
        """Send ``body`` (JSON) to ``url``; the answer's status code.

        Raises:
            CallbackError: the callback could not be delivered (nothing is retried, except a
                request that found its kept-alive connection closed by the receiver: that one
                goes again on a new connection).
        """
        origin, request = _request(url, body)
        try:
            async with asyncio.timeout(self.timeout):
                while True:
                    conn, reused = await self._connection(origin)
                    try:
                        status, keep = await _exchange(conn, request)
                    except _Stale:
                        _close(conn)
                        if reused:
                            continue
                        raise CallbackError("RemoteProtocolError") from None
                    except BaseException:
                        _close(conn)
                        raise
                    if keep:
                        self._release(origin, conn)
                    else:
                        _close(conn)
                    return status
        except TimeoutError:
            raise CallbackError("Timeout") from None

    async def aclose(self) -> None:
        """Close the idle connections."""
        idle, self._idle = self._idle, {}
        for conns in idle.values():
            for conn in conns:
                _close(conn)

    async def _connection(self, origin: _Origin) -> tuple[_Conn, bool]:
        idle = self._idle.get(origin)
        while idle:
            conn = idle.pop()
            if not conn[0].at_eof() and not conn[1].is_closing():
                return conn, True
            _close(conn)
        scheme, host, port = origin
        tls: ssl.SSLContext | None = None
        if scheme == "https":
            if self._tls is None:
                self._tls = ssl.create_default_context()
            tls = self._tls
        try:
            conn = await asyncio.open_connection(host, port, ssl=tls, limit=MAX_ANSWER_BYTES)
        except OSError:  # refused, unreachable, a name that does not resolve, a TLS failure
            raise CallbackError("ConnectError") from None
        self.connections_opened += 1
        return conn, False

    def _release(self, origin: _Origin, conn: _Conn) -> None:
        idle = self._idle.setdefault(origin, [])
        if len(idle) < self.max_idle:
            idle.append(conn)
        else:
            _close(conn)


def _request(url: str, body: bytes) -> tuple[_Origin, bytes]:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise CallbackError("InvalidURL") from None
    scheme = parts.scheme.lower()
    host = parts.hostname
    if scheme not in ("http", "https") or not host:
        raise CallbackError("InvalidURL")
    authority = f"[{host}]" if ":" in host else host
    if port is not None:
        authority += f":{port}"
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    head = (
        f"POST {target} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: {_USER_AGENT}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    try:
        request = head.encode("ascii") + body
    except UnicodeEncodeError:
        raise CallbackError("InvalidURL") from None
    return (scheme, host, port or (443 if scheme == "https" else 80)), request


async def _exchange(conn: _Conn, request: bytes) -> tuple[int, bool]:
    """Send ``request``, read the answer: (status code, whether the connection may be reused)."""
    reader, writer = conn
    try:
        writer.write(request)
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if not exc.partial:
            raise _Stale from None
        raise CallbackError("RemoteProtocolError") from None
    except asyncio.LimitOverrunError:
        raise CallbackError("RemoteProtocolError") from None
    except (ConnectionResetError, BrokenPipeError):
        raise _Stale from None
    except OSError:
        raise CallbackError("ReadError") from None
    lines = head[:-4].decode("latin-1").split("\r\n")
    version, _, rest = lines[0].partition(" ")
    code = rest[:3]
    if not version.startswith("HTTP/1.") or len(code) != 3 or not code.isdigit():
        raise CallbackError("RemoteProtocolError")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if colon:
            headers[name.strip().lower()] = value.strip().lower()
    status = int(code)
    keep = version == "HTTP/1.1" and "close" not in headers.get("connection", "")
    try:
        if status < 200 or status in (204, 304):
            pass  # no body
        elif "chunked" in headers.get("transfer-encoding", ""):
            await _skip_chunked(reader)
        elif "content-length" in headers:
            length = int(headers["content-length"])
            if not 0 <= length <= MAX_ANSWER_BYTES:
                raise CallbackError("RemoteProtocolError")
            await reader.readexactly(length)
        else:  # the body ends with the connection
            keep = False
            rest_of_body = await reader.read(MAX_ANSWER_BYTES + 1)
            while rest_of_body:
                rest_of_body = await reader.read(MAX_ANSWER_BYTES + 1)
    except (ValueError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
        raise CallbackError("RemoteProtocolError") from None
    except OSError:
        raise CallbackError("ReadError") from None
    return status, keep


async def _skip_chunked(reader: asyncio.StreamReader) -> None:
    total = 0
    while True:
        size_line = await reader.readuntil(b"\r\n")
        size = int(size_line.split(b";", 1)[0].strip(), 16)
        total += size
        if total > MAX_ANSWER_BYTES:
            raise ValueError("answer too long")
        if size == 0:
            while await reader.readuntil(b"\r\n") != b"\r\n":  # trailers
                pass
            return
        await reader.readexactly(size + 2)


def _close(conn: _Conn) -> None:
    with contextlib.suppress(Exception):
        conn[1].close()
