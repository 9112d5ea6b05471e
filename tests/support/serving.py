"""Serving an ASGI app on a loopback port for a test: a real uvicorn server in a thread."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator

import uvicorn
from starlette.types import ASGIApp


@contextlib.contextmanager
def serving(app: ASGIApp, sock: socket.socket | None = None) -> Iterator[str]:
    """Serve ``app`` (its lifespan run) on ``sock`` (default: a new loopback socket) until the
    block ends; yields the origin, ``http://127.0.0.1:PORT``."""
    if sock is None:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 15
        while not server.started:
            assert thread.is_alive(), "the server did not start"
            assert time.monotonic() < deadline, "the server did not start in time"
            time.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def free_socket() -> socket.socket:
    """A loopback socket bound to a free port (its port is known before the server starts)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    return sock
