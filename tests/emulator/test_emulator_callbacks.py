"""The emulator's webhook sender over a scripted loopback server: the request it writes, the
answers it reads (Content-Length, chunked, up to the connection's end), connections kept alive
and reused, a kept-alive connection the receiver closed, and every failure named."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import pytest

from mai_tools.emulator._callbacks import CallbackError, CallbackSender, callback_target

OK = b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{"ok":true}'


@dataclass
class Server:
    """Answers request number n (counted per connection) with ``answer(n)``; None closes the
    connection instead of answering."""

    answer: Callable[[int], bytes | None]
    requests: list[bytes] = field(default_factory=list)
    connections: int = 0
    port: int = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        n = 0
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    int(line.split(b":", 1)[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                self.requests.append(head + await reader.readexactly(length))
                answer = self.answer(n)
                n += 1
                if answer is None:
                    break
                writer.write(answer)
                await writer.drain()
                if b"Connection: close" in answer or b"HTTP/1.0" in answer:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    def url(self, path: str = "/hook/tok?x=1") -> str:
        return f"http://127.0.0.1:{self.port}{path}"


@pytest.fixture
async def servers() -> AsyncIterator[list[asyncio.Server]]:
    started: list[asyncio.Server] = []
    yield started
    for server in started:
        server.close()
        await server.wait_closed()


async def _server(started: list[asyncio.Server], answer: Callable[[int], bytes | None]) -> Server:
    server = Server(answer)
    listening = await asyncio.start_server(server.handle, "127.0.0.1", 0)
    server.port = listening.sockets[0].getsockname()[1]
    started.append(listening)
    return server


async def test_the_request_and_a_kept_alive_connection(servers: list[asyncio.Server]) -> None:
    server = await _server(servers, lambda n: OK)
    sender = CallbackSender()
    try:
        assert await sender.post_json(server.url(), b'{"request_id":"r"}') == 200
        assert await sender.post_json(server.url(), b'{"request_id":"s"}') == 200
    finally:
        await sender.aclose()
    assert server.connections == 1 == sender.connections_opened  # the second one reused it
    head, body = server.requests[0].split(b"\r\n\r\n", 1)
    lines = head.split(b"\r\n")
    assert lines[0] == b"POST /hook/tok?x=1 HTTP/1.1"
    assert f"Host: 127.0.0.1:{server.port}".encode() in lines
    assert b"Content-Type: application/json" in lines
    assert b"Content-Length: 18" in lines
    assert any(line.startswith(b"User-Agent: mai-tools-emulator/") for line in lines)
    assert body == b'{"request_id":"r"}'


@pytest.mark.parametrize(
    ("answer", "status", "reused"),
    [
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n0\r\nX: y\r\n\r\n",
            200,
            True,
        ),
        (b"HTTP/1.1 204 No Content\r\n\r\n", 204, True),
        (b"HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\nConnection: close\r\n\r\nno", 404, False),
        (b"HTTP/1.0 200 OK\r\n\r\nthe body ends with the connection", 200, False),
    ],
)
async def test_answers_are_read_to_their_end(
    servers: list[asyncio.Server], answer: bytes, status: int, reused: bool
) -> None:
    server = await _server(servers, lambda n: answer)
    sender = CallbackSender()
    try:
        assert await sender.post_json(server.url(), b"{}") == status
        assert await sender.post_json(server.url(), b"{}") == status
    finally:
        await sender.aclose()
    assert server.connections == (1 if reused else 2)


async def test_a_kept_alive_connection_the_receiver_closed_is_replaced(
    servers: list[asyncio.Server],
) -> None:
    # The server answers once per connection, then closes it without answering the next.
    server = await _server(servers, lambda n: OK if n == 0 else None)
    sender = CallbackSender()
    try:
        assert await sender.post_json(server.url(), b"{}") == 200
        await asyncio.sleep(0.05)
        assert await sender.post_json(server.url(), b"{}") == 200
    finally:
        await sender.aclose()
    assert server.connections == 2


async def test_a_fresh_connection_closed_without_an_answer_is_an_error(
    servers: list[asyncio.Server],
) -> None:
    server = await _server(servers, lambda n: None)
    sender = CallbackSender()
    with pytest.raises(CallbackError, match="RemoteProtocolError"):
        await sender.post_json(server.url(), b"{}")
    await sender.aclose()


@pytest.mark.parametrize(
    "answer",
    [
        b"SMTP ready\r\n\r\n",
        b"HTTP/1.1 2x0 OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 99999999\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: soon\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        # ambiguous: where the answer ends, or what it is, cannot be told
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nabc",
        b"HTTP/1.1 200 OK\r\nContent-Length: +2\r\n\r\nab",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1_0\r\n\r\n0123456789",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n-2\r\nab\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabcd0\r\n\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n",
        b"HTTP/2 200 OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
    ],
)
async def test_garbled_answers_are_protocol_errors(
    servers: list[asyncio.Server], answer: bytes
) -> None:
    server = await _server(servers, lambda n: answer)
    sender = CallbackSender()
    with pytest.raises(CallbackError, match="RemoteProtocolError"):
        await sender.post_json(server.url(), b"{}")
    await sender.aclose()


async def test_a_receiver_that_never_answers_times_out(servers: list[asyncio.Server]) -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1 << 16)  # the request, never answered
        await reader.read(1 << 16)  # until the sender gives up and closes the connection
        writer.close()

    listening = await asyncio.start_server(silent, "127.0.0.1", 0)
    servers.append(listening)
    port = listening.sockets[0].getsockname()[1]
    sender = CallbackSender(timeout=0.2)
    with pytest.raises(CallbackError, match="Timeout"):
        await sender.post_json(f"http://127.0.0.1:{port}/hook", b"{}")
    await sender.aclose()


async def test_nobody_listening_is_a_connect_error() -> None:
    s = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = s.sockets[0].getsockname()[1]
    s.close()
    await s.wait_closed()
    with pytest.raises(CallbackError, match="ConnectError"):
        await CallbackSender().post_json(f"http://127.0.0.1:{port}/hook", b"{}")


@pytest.mark.parametrize(
    "url", ["ftp://127.0.0.1/hook", "http:///hook", "http://127.0.0.1:99999/hook", "http://é.x/"]
)
async def test_unusable_urls(url: str) -> None:
    with pytest.raises(CallbackError, match="InvalidURL"):
        await CallbackSender().post_json(url, b"{}")


async def test_https_is_verified_tls(servers: list[asyncio.Server]) -> None:
    # A plain-HTTP server behind an https URL: the TLS handshake fails, nothing is sent.
    async def plain(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(OK)  # not a TLS ServerHello
        await writer.drain()
        writer.close()

    listening = await asyncio.start_server(plain, "127.0.0.1", 0)
    servers.append(listening)
    port = listening.sockets[0].getsockname()[1]
    with pytest.raises(CallbackError, match="ConnectError"):
        await CallbackSender(timeout=5).post_json(f"https://127.0.0.1:{port}/h", b"{}")


ENDLESS = [
    # (what the receiver sends first, what it then repeats until the sender hangs up)
    (b"HTTP/1.0 200 OK\r\n\r\n", b"x" * 4096),  # a body that ends with the connection
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", b"x" * 4096),  # the same (RFC 9112)
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n", b"X-Trailer: y\r\n"),
    (b"", b"HTTP/1.1 100 Continue\r\n\r\n"),  # informational answers, never the final one
]


@pytest.mark.parametrize(("start", "unit"), ENDLESS)
async def test_an_endless_answer_is_cut_off_at_the_cap(
    servers: list[asyncio.Server], start: bytes, unit: bytes
) -> None:
    sent = 0

    async def endless(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal sent
        await reader.readuntil(b"\r\n\r\n")
        writer.write(start)
        try:
            while True:  # as fast as the sender reads, until it gives up
                writer.write(unit * 16)
                sent += len(unit) * 16
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    listening = await asyncio.start_server(endless, "127.0.0.1", 0)
    servers.append(listening)
    port = listening.sockets[0].getsockname()[1]
    # The timeout is far off: the cap, not the clock, must end the read (no timing here).
    sender = CallbackSender(timeout=60)
    with pytest.raises(CallbackError, match=r"RemoteProtocolError: the answer is longer than"):
        await sender.post_json(f"http://127.0.0.1:{port}/hook", b"{}")
    await sender.aclose()
    assert sender.connections_opened == 1


@pytest.mark.parametrize(
    ("path", "target"),
    [
        ("/hooks/a b?x=1 2", b"/hooks/a%20b?x=1%202"),
        ('/hooks/"quoted"<>', b"/hooks/%22quoted%22%3C%3E"),
        ("/hooks/caf\u00e9", b"/hooks/caf%C3%A9"),  # UTF-8, as browsers and httpx send it
        ("/hooks/a%2Fb;p=1?q=%20&r=s/t?u", b"/hooks/a%2Fb;p=1?q=%20&r=s/t?u"),  # kept as given
        ("", b"/"),
    ],
)
async def test_the_request_target_is_always_well_formed(
    servers: list[asyncio.Server], path: str, target: bytes
) -> None:
    server = await _server(servers, lambda n: OK)
    sender = CallbackSender()
    try:
        assert await sender.post_json(server.url(path), b"{}") == 200
    finally:
        await sender.aclose()
    request_line = server.requests[0].split(b"\r\n", 1)[0]
    assert request_line == b"POST " + target + b" HTTP/1.1"


@pytest.mark.parametrize(
    ("answer", "status"),
    [
        (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n", 201),
        (b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n" + OK, 200),
    ],
)
async def test_informational_answers_are_skipped(
    servers: list[asyncio.Server], answer: bytes, status: int
) -> None:
    # Read as the final answer, the real one would be taken for the next callback's.
    server = await _server(servers, lambda n: answer if n == 0 else OK)
    sender = CallbackSender()
    try:
        assert await sender.post_json(server.url(), b"{}") == status
        assert await sender.post_json(server.url(), b"{}") == 200
    finally:
        await sender.aclose()
    assert server.connections == 1


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://\u00e9.example/hook", "not an ASCII name"),
        ("http://a b/hook", "not an ASCII name"),
        ("http://127.0.0.1:99999/hook", "valid host and port"),
        ("mailto:someone@example.com", r"not an http\(s\) URL"),
    ],
)
def test_callback_target_names_what_is_wrong(url: str, reason: str) -> None:
    with pytest.raises(CallbackError, match=f"InvalidURL: .*{reason}"):
        callback_target(url)
