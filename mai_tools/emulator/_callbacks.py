"""The emulator's webhook sender: HTTP/1.1 POSTs over kept-alive connections.

httpx spends about 2 ms of CPU per request in its connection pool once a few dozen requests
are in flight (1,000 callbacks, 32 at a time: 1.8-2.9 s of CPU, measured on the 2-core
benchmark machine). A thousand jobs finishing within a second then kept the emulator's one
core busy sending for two seconds, and the callbacks arrived late. This sender writes the
request itself and reads the answer's status line, headers and body (Content-Length, chunked,
or up to the connection's end). ``python benchmarks/callbacks.py`` (2026-12-07, a busy 2-core
VM, the sending process's CPU with its event loop and socket calls): 150-190 us per callback;
the same connections with h11 doing the framing 270-320 us (1.7-2x); httpx.AsyncClient
3.1-3.8 ms. The exchange is narrow enough to frame by hand without h11: one POST written
here (its target always percent-encoded), one answer read and thrown away, every byte of it
counted against :data:`MAX_ANSWER_BYTES`, 1xx answers skipped, ambiguous lengths refused.

Like the httpx client before it: no proxies (a callback goes where its URL says), no redirects
(a receiver cannot send a callback on to another host), TLS verified against the system's
default certificates for https URLs.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import re
import ssl
from collections.abc import AsyncIterator
from urllib.parse import quote, urlsplit

from .._urls import split_url
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


class _Turns:
    """The callbacks one receiver (origin) may have in flight, and how many want one."""

    __slots__ = ("slots", "users")

    def __init__(self, size: int) -> None:
        self.slots = asyncio.Semaphore(size)
        self.users = 0


class CallbackSender:
    """POSTs JSON callbacks, keeping up to ``max_idle`` idle connections per receiver.

    Slow receivers are isolated: each receiver (scheme, host, port) gets at most
    ``per_receiver`` of the ``max_in_flight`` callbacks in flight, and ``timeout`` bounds a
    callback's whole life, its wait for a turn included. A receiver that never answers thus
    holds only its own few slots, and delays only its own callbacks (each by ``timeout`` at
    most); every other receiver's callbacks go out as if it were not there.
    """

    def __init__(
        self,
        *,
        timeout: float = 10.0,
        max_idle: int = 32,
        per_receiver: int = 8,
        max_in_flight: int = 32,
    ) -> None:
        self.timeout = timeout
        self.max_idle = max_idle
        self.per_receiver = per_receiver
        self._in_flight = asyncio.Semaphore(max_in_flight)
        self._turns: dict[_Origin, _Turns] = {}
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
            async with asyncio.timeout(self.timeout), self._turn(origin), self._in_flight:
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

    @contextlib.asynccontextmanager
    async def _turn(self, origin: _Origin) -> AsyncIterator[None]:
        """One of ``origin``'s slots (taken before a global one: a receiver's backlog waits
        here, never in the shared queue)."""
        turns = self._turns.get(origin)
        if turns is None:
            turns = self._turns[origin] = _Turns(self.per_receiver)
        turns.users += 1
        try:
            async with turns.slots:
                yield
        finally:
            turns.users -= 1
            if not turns.users:  # memory follows the receivers in use, not all ever seen
                del self._turns[origin]

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


# RFC 3986 pchar and query characters, plus "%" (an escape already in the URL is kept as it
# is): anything else (a space, a quote, a non-ASCII letter as UTF-8) is percent-encoded, as
# httpx and browsers do, so the request line is always well formed.
_PATH_SAFE = "/%!$&'()*+,;=:@-._~"
_QUERY_SAFE = _PATH_SAFE + "?"
# A host as it may stand in the Host header: an ASCII name or IPv4 address, or an IPv6 literal.
_HOST = re.compile(r"[A-Za-z0-9._-]+|[0-9A-Fa-f:.]+")


def callback_target(url: str) -> tuple[_Origin, str, str]:
    """Where a callback to ``url`` goes: (origin, Host header, request target).

    Raises:
        CallbackError: ``InvalidURL: ...``, naming what makes ``url`` unusable (the emulator
            refuses such an X-Webhook-URL at submit time with this message).
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise CallbackError("InvalidURL: not an http(s) URL with a valid host and port") from None
    scheme = parts.scheme.lower()
    host = parts.hostname
    if scheme not in ("http", "https") or not host:
        raise CallbackError("InvalidURL: not an http(s) URL with a host")
    if not _HOST.fullmatch(host):
        raise CallbackError(
            f"InvalidURL: the host {host[:100]!r} is not an ASCII name or address "
            "(write an international name in its IDNA form, xn--...)"
        )
    authority = f"[{host}]" if ":" in host else host
    if port is not None:
        authority += f":{port}"
    target = quote(parts.path or "/", safe=_PATH_SAFE)
    if parts.query:
        target += "?" + quote(parts.query, safe=_QUERY_SAFE)
    origin = (scheme, host, port or (443 if scheme == "https" else 80))
    return origin, authority, target


def is_loopback_host(host: str | None) -> bool:
    """True for 127.0.0.0/8, ::1 and ``localhost`` names: where callbacks may go by default."""
    if not host:
        return False
    name = host.lower().rstrip(".")
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def under(url: str, prefixes: tuple[str, ...]) -> bool:
    """Whether ``url`` has the scheme, host and port of one prefix, and a path under it."""
    parts = split_url(url)
    if parts is None:
        return False
    for prefix in prefixes:
        allowed = split_url(prefix)
        if allowed is None:
            continue
        same_origin = (parts.scheme.lower(), (parts.hostname or "").lower(), parts.port) == (
            allowed.scheme.lower(),
            (allowed.hostname or "").lower(),
            allowed.port,
        )
        if same_origin and parts.path.startswith(allowed.path):
            return True
    return False


def _request(url: str, body: bytes) -> tuple[_Origin, bytes]:
    origin, authority, target = callback_target(url)
    head = (
        f"POST {target} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: {_USER_AGENT}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return origin, head.encode("ascii") + body


class _Budget:
    """Reads one answer from ``reader``, every byte of it (status lines, headers, chunk
    sizes, trailers, body) counted against :data:`MAX_ANSWER_BYTES`: a receiver that answers
    without end costs the emulator at most that much reading, never memory or a busy core."""

    def __init__(self, reader: asyncio.StreamReader) -> None:
        self.reader = reader
        self.left = MAX_ANSWER_BYTES

    def _spend(self, data: bytes) -> bytes:
        self.left -= len(data)
        if self.left < 0:
            raise CallbackError("RemoteProtocolError: the answer is longer than 64 KiB")
        return data

    async def line(self, end: bytes = b"\r\n") -> bytes:
        # The reader's own limit is MAX_ANSWER_BYTES: a longer line fails before it is kept.
        return self._spend(await self.reader.readuntil(end))

    async def exactly(self, size: int) -> bytes:
        if size > self.left:
            raise CallbackError("RemoteProtocolError: the answer is longer than 64 KiB")
        return self._spend(await self.reader.readexactly(size))

    async def to_the_end(self) -> None:
        while self._spend(await self.reader.read(self.left + 1)):
            pass


async def _exchange(conn: _Conn, request: bytes) -> tuple[int, bool]:
    """Send ``request``, read the answer: (status code, whether the connection may be reused)."""
    reader, writer = conn
    answer = _Budget(reader)
    try:
        writer.write(request)
        await writer.drain()
        head = await answer.line(b"\r\n\r\n")
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
    try:
        # 1xx answers (100 Continue, 103 Early Hints) come before the real one: skip them,
        # or the real answer would be read as the next callback's.
        while True:
            version, status, headers = _parse_head(head)
            if not 100 <= status < 200:
                break
            if status == 101:  # a protocol switch nobody asked for
                raise CallbackError("RemoteProtocolError")
            head = await answer.line(b"\r\n\r\n")
        keep = version == "HTTP/1.1" and "close" not in headers.get("connection", "")
        coding = headers.get("transfer-encoding")
        if status in (204, 304):
            pass  # no body
        elif coding is not None:
            if coding.rsplit(",", 1)[-1].strip() == "chunked":
                await _skip_chunked(answer)
            else:  # not chunked last: the body ends with the connection (RFC 9112 6.3)
                keep = False
                await answer.to_the_end()
        elif "content-length" in headers:
            length = headers["content-length"]
            if not length.isdigit():
                raise CallbackError("RemoteProtocolError")
            await answer.exactly(int(length))
        else:  # the body ends with the connection
            keep = False
            await answer.to_the_end()
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
        raise CallbackError("RemoteProtocolError") from None
    except OSError:
        raise CallbackError("ReadError") from None
    return status, keep


def _parse_head(head: bytes) -> tuple[str, int, dict[str, str]]:
    """(version, status code, headers lower-cased) of an answer's head."""
    lines = head[:-4].decode("latin-1").split("\r\n")
    version, _, rest = lines[0].partition(" ")
    code = rest[:3]
    if version not in ("HTTP/1.1", "HTTP/1.0") or len(code) != 3 or not code.isdigit():
        raise CallbackError("RemoteProtocolError")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if not colon:
            raise CallbackError("RemoteProtocolError")
        name = name.lower()
        value = value.strip().lower()
        if name in ("content-length", "transfer-encoding") and headers.get(name, value) != value:
            raise CallbackError("RemoteProtocolError")  # two framings: where does it end?
        headers[name] = value
    return version, int(code), headers


_HEX = re.compile(rb"[0-9A-Fa-f]{1,8}")


async def _skip_chunked(answer: _Budget) -> None:
    while True:
        size_line = (await answer.line()).split(b";", 1)[0].strip()
        if not _HEX.fullmatch(size_line):
            raise CallbackError("RemoteProtocolError")
        size = int(size_line, 16)
        if size == 0:
            while await answer.line() != b"\r\n":  # trailers, counted like the rest
                pass
            return
        if (await answer.exactly(size + 2))[-2:] != b"\r\n":
            raise CallbackError("RemoteProtocolError")


def _close(conn: _Conn) -> None:
    with contextlib.suppress(Exception):
        conn[1].close()
