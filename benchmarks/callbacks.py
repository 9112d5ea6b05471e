"""CPU per webhook callback of the emulator's sender, against a uvicorn receiver in its own process.

    python benchmarks/callbacks.py                 # 5,000 callbacks x 3 rounds per sender
    python benchmarks/callbacks.py --quick         # 1,000 x 1, for a smoke test
    PYTHONPATH=/path/to/other/checkout python benchmarks/callbacks.py   # that checkout's sender

Senders, each posting the same ~500-byte JSON body, 32 callbacks in flight (the emulator's
``_SENDERS``) over kept-alive connections: the emulator's ``CallbackSender``; the same
connection handling with h11 doing the framing (the alternative issue 20 names); and an
``httpx.AsyncClient`` (what the emulator used before its own sender). CPU = this process's
``time.process_time()`` over the round divided by the callbacks sent: the receiver's CPU is
in the other process and not counted. Figures are medians of the rounds; a busy machine
makes every sender slower, so compare senders within one run.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

import h11
import httpx

from mai_tools.emulator import _callbacks
from mai_tools.emulator._callbacks import CallbackSender

RECEIVER = """
import socket, sys, uvicorn
from mai_tools.emulator._server import uvicorn_config

async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    more = True
    while more:
        more = (await receive()).get("more_body", False)
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": b'{"ok":true}'})

sock = socket.socket()
sock.bind(("127.0.0.1", 0))
print(sock.getsockname()[1], flush=True)
uvicorn.Server(uvicorn_config(app, "127.0.0.1", sock.getsockname()[1])).run(sockets=[sock])
"""

BODY = b'{"request_id":"microsoft-mai-image-2-5_019d","status":"COMPLETED",' + b" " * 420 + b"}"
IN_FLIGHT = 32


class H11Sender:
    """The emulator sender's connection handling, with h11 writing and reading the messages."""

    def __init__(self) -> None:
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter, h11.Connection]] = []

    async def post_json(self, url: str, body: bytes) -> int:
        parts = urlsplit(url)
        host, port, authority = parts.hostname or "", parts.port or 80, parts.netloc
        target = f"{parts.path}?{parts.query}"
        if self._idle:
            reader, writer, conn = self._idle.pop()
        else:
            reader, writer = await asyncio.open_connection(host, port)
            conn = h11.Connection(h11.CLIENT, max_incomplete_event_size=_callbacks.MAX_ANSWER_BYTES)
        headers = [
            ("Host", authority),
            ("User-Agent", "bench"),
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(body))),
        ]
        data = conn.send(h11.Request(method="POST", target=target, headers=headers))
        data += conn.send(h11.Data(data=body)) + conn.send(h11.EndOfMessage())
        writer.write(data)
        await writer.drain()
        status = 0
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await reader.read(_callbacks.MAX_ANSWER_BYTES))
            elif isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.EndOfMessage):
                break
        conn.start_next_cycle()
        self._idle.append((reader, writer, conn))
        return status

    async def aclose(self) -> None:
        for _, writer, _ in self._idle:
            writer.close()


class HttpxSender:
    def __init__(self) -> None:
        self._client = httpx.AsyncClient(
            trust_env=False, limits=httpx.Limits(max_keepalive_connections=IN_FLIGHT)
        )

    async def post_json(self, url: str, body: bytes) -> int:
        response = await self._client.post(
            url, content=body, headers={"Content-Type": "application/json"}
        )
        return response.status_code

    async def aclose(self) -> None:
        await self._client.aclose()


async def _round(post: Callable[[str, bytes], Awaitable[int]], url: str, count: int) -> float:
    """CPU seconds per callback for ``count`` callbacks, ``IN_FLIGHT`` at a time."""
    slots = asyncio.Semaphore(IN_FLIGHT)

    async def one() -> None:
        async with slots:
            assert await post(url, BODY) == 200

    start = time.process_time()
    await asyncio.gather(*(one() for _ in range(count)))
    return (time.process_time() - start) / count


async def _measure(name: str, sender: object, url: str, count: int, rounds: int) -> float:
    post = sender.post_json  # type: ignore[attr-defined]
    await _round(post, url, min(count, 500))  # warm-up: connections opened, code paths hot
    figures = [await _round(post, url, count) for _ in range(rounds)]
    await sender.aclose()  # type: ignore[attr-defined]
    per = statistics.median(figures)
    shown = ", ".join(f"{f * 1e6:.0f}" for f in figures)
    print(f"{name:<34} {per * 1e6:7.1f} us CPU per callback  (rounds: {shown})", flush=True)
    return per


async def _run(url: str, count: int, rounds: int) -> None:
    for _ in range(100):  # until uvicorn accepts
        try:
            await CallbackSender().post_json(url, BODY)
            break
        except _callbacks.CallbackError:
            await asyncio.sleep(0.1)
    print(f"mai_tools from {_callbacks.__file__}; {count} callbacks x {rounds} rounds")
    await _measure("emulator CallbackSender", CallbackSender(), url, count, rounds)
    await _measure("same, h11 framing", H11Sender(), url, count, rounds)
    # httpx costs ~30x as much per callback: a tenth of the callbacks measures it as well.
    await _measure("httpx.AsyncClient", HttpxSender(), url, max(count // 10, 100), rounds)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    count, rounds = (1000, 1) if args.quick else (5000, 3)
    receiver = subprocess.Popen([sys.executable, "-c", RECEIVER], stdout=subprocess.PIPE, text=True)
    try:
        assert receiver.stdout is not None
        port = int(receiver.stdout.readline())
        asyncio.run(_run(f"http://127.0.0.1:{port}/hooks/job?token=abc", count, rounds))
    finally:
        receiver.terminate()
        receiver.wait(10)


if __name__ == "__main__":
    main()
