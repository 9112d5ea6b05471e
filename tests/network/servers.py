"""Loopback servers for network tests: a hostile media host and a forward HTTP proxy.

Both are plain asyncio servers in a background thread, so sync and async tests use them alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from urllib.parse import urlsplit

from tests.support.fakes import PNG_1PX

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _read_head(reader: asyncio.StreamReader) -> tuple[str, dict[str, str]] | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    return lines[0], headers


@contextlib.contextmanager
def _serve(handler: Handler) -> Iterator[int]:
    """Run ``handler`` for each connection on a loopback port, in a thread; yields the port."""
    loop = asyncio.new_event_loop()
    started = threading.Event()
    holder: list[asyncio.Server] = []

    async def start() -> None:
        holder.append(await asyncio.start_server(handler, "127.0.0.1", 0))
        started.set()

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(start(), loop).result(5)
    started.wait(5)
    server = holder[0]
    try:
        yield server.sockets[0].getsockname()[1]
    finally:

        async def stop() -> None:
            server.close()
            # Let handlers of just-accepted connections start (so their finally closes the
            # connection), then cancel the stalled ones, which never end on their own.
            await asyncio.sleep(0.01)
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await server.wait_closed()

        asyncio.run_coroutine_threadsafe(stop(), loop).result(5)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()


def _response(code: int, body: bytes = b"", headers: dict[str, str] | None = None) -> bytes:
    reason = {200: "OK", 404: "Not Found", 429: "Too Many Requests", 500: "Server Error"}
    lines = [f"HTTP/1.1 {code} {reason.get(code, 'X')}", f"Content-Length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


@dataclass
class HostileHost:
    """A media host that misbehaves as told, for every path it is asked for.

    Modes: ``ok``; ``stall`` (reads the request, never answers); ``drip`` (headers for a big
    image, then one byte per ``drip_every`` seconds); ``half`` (headers and a few bytes, then
    silence); ``429`` (``failures`` times with ``Retry-After: retry_after``, then ok); ``500``
    (``failures`` times, then ok); ``drop`` (closes ``failures`` connections unanswered, then
    ok); ``404``. ``hold`` seconds delay every ok answer (to see how many run at once).
    """

    mode: str = "ok"
    failures: int = 0
    retry_after: str = "0"
    drip_every: float = 0.2
    hold: float = 0.0
    port: int = 0
    hits: Counter[str] = field(default_factory=Counter)
    in_flight: int = 0
    most_at_once: int = 0
    _failed: Counter[str] = field(default_factory=Counter)

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, name: str = "img.png") -> str:
        return f"{self.origin}/{name}"

    def retry_after_date(self, seconds: float) -> str:
        return format_datetime(datetime.now(UTC) + timedelta(seconds=seconds), usegmt=True)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            got = await _read_head(reader)
            if got is None:
                return
            path = got[0].split(" ")[1]
            self.hits[path] += 1
            await self._answer(path, writer)
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def _answer(self, path: str, writer: asyncio.StreamWriter) -> None:
        mode = self.mode
        if mode in ("429", "500", "drop") and self._failed[path] < self.failures:
            self._failed[path] += 1
            if mode == "429":
                writer.write(_response(429, b"error code: 1015", {"Retry-After": self.retry_after}))
            elif mode == "500":
                writer.write(_response(500, b"oops"))
            await writer.drain()
            return
        if path.startswith("/stall/"):  # whatever the mode: this path never answers
            await asyncio.sleep(3600)
        if mode == "404":
            writer.write(_response(404, b"no"))
        elif mode == "stall":
            await asyncio.sleep(3600)
        elif mode in ("drip", "half"):
            body = PNG_1PX + b"\0" * 10_000
            head = _response(200, b"", {"Content-Type": "image/png"})
            size = f"Content-Length: {len(body)}".encode()
            writer.write(head.replace(b"Content-Length: 0", size))
            writer.write(body[:8])
            await writer.drain()
            for byte in body[8:]:
                await asyncio.sleep(self.drip_every if mode == "drip" else 3600)
                writer.write(bytes([byte]))
                await writer.drain()
        else:
            self.in_flight += 1
            self.most_at_once = max(self.most_at_once, self.in_flight)
            try:
                await asyncio.sleep(self.hold)
            finally:
                self.in_flight -= 1
            writer.write(_response(200, PNG_1PX, {"Content-Type": "image/png"}))
        await writer.drain()


@contextlib.contextmanager
def hostile_host(**settings: object) -> Iterator[HostileHost]:
    host = HostileHost(**settings)  # type: ignore[arg-type]
    with _serve(host.handle) as port:
        host.port = port
        yield host


@dataclass
class ForwardProxy:
    """An HTTP forward proxy for absolute-form requests (``GET http://host:port/path``).

    Each request goes upstream on a new connection with ``Connection: close``; the answer is
    relayed as it comes, and the client connection is closed after it. ``seen`` lists the
    absolute URLs it forwarded (CONNECT is refused: plain-HTTP targets are enough here).
    """

    port: int = 0
    seen: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def paths(self) -> list[str]:
        return [urlsplit(u).path for u in self.seen]

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            got = await _read_head(reader)
            if got is None:
                return
            request_line, headers = got
            method, target, version = request_line.split(" ")
            parts = urlsplit(target)
            if method == "CONNECT" or parts.scheme != "http" or not parts.hostname:
                writer.write(_response(405, b"absolute-form http:// only"))
                await writer.drain()
                return
            self.seen.append(target)
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            upstream_reader, upstream = await asyncio.open_connection(
                parts.hostname, parts.port or 80
            )
            origin_form = parts.path + (f"?{parts.query}" if parts.query else "")
            headers["connection"] = "close"
            headers.pop("proxy-connection", None)
            head = [f"{method} {origin_form or '/'} {version}"]
            head += [f"{name}: {value}" for name, value in headers.items()]
            try:
                upstream.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)
                await upstream.drain()
                while chunk := await upstream_reader.read(65536):
                    writer.write(chunk)
                    await writer.drain()
            finally:
                upstream.close()
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass
        finally:
            writer.close()


@contextlib.contextmanager
def forward_proxy() -> Iterator[ForwardProxy]:
    proxy = ForwardProxy()
    with _serve(proxy.handle) as port:
        proxy.port = port
        yield proxy
