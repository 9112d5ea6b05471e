"""A loopback webhook receiver: a Starlette app under uvicorn in a thread that keeps every
callback it gets (path, body, arrival time)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from mai_tools.emulator._server import uvicorn_config


@dataclass
class Callback:
    path: str
    body: dict[str, Any]
    at: float  # time.time() on arrival


@dataclass
class Receiver:
    base_url: str
    port: int
    callbacks: list[Callback] = field(default_factory=list)
    _arrived: threading.Condition = field(default_factory=threading.Condition)

    def url(self, path: str = "/hook") -> str:
        return f"{self.base_url}{path}"

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Callback]:
        """Wait until ``count`` callbacks arrived (or the timeout passed); return them all."""
        with self._arrived:
            self._arrived.wait_for(lambda: len(self.callbacks) >= count, timeout)
            return list(self.callbacks)

    def record(self, callback: Callback) -> None:
        with self._arrived:
            self.callbacks.append(callback)
            self._arrived.notify_all()


@pytest.fixture(scope="module")
def receiver_server() -> Iterator[Receiver]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    receiver = Receiver(base_url=f"http://127.0.0.1:{port}", port=port)

    async def hook(request: Request) -> JSONResponse:
        receiver.record(Callback(request.url.path, await request.json(), time.time()))
        return JSONResponse({"ok": True})

    app = Starlette(routes=[Route("/{path:path}", hook, methods=["POST"])])
    server = uvicorn.Server(uvicorn_config(app, "127.0.0.1", port))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        assert thread.is_alive(), "receiver did not start"
        assert time.monotonic() < deadline, "receiver did not start"
        time.sleep(0.01)
    try:
        yield receiver
    finally:
        server.should_exit = True
        thread.join(5)
        sock.close()


@pytest.fixture
def receiver(receiver_server: Receiver) -> Receiver:
    with receiver_server._arrived:
        receiver_server.callbacks.clear()
    return receiver_server
