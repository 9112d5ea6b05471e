"""Serving an ASGI app on a loopback port for a test: a real uvicorn server in a thread; and
one tool call on a stdio server process, with what it wrote on stderr."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import uvicorn
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.types import CallToolResult
from starlette.types import ASGIApp


@contextlib.contextmanager
def serving(app: ASGIApp, sock: socket.socket | None = None, **config: Any) -> Iterator[str]:
    """Serve ``app`` (its lifespan run, unless ``config`` says otherwise) on ``sock`` (default:
    a new loopback socket) until the block ends; yields the origin, ``http://127.0.0.1:PORT``.
    ``config``: more ``uvicorn.Config`` options (``log_level``, ``access_log``, ...)."""
    if sock is None:
        sock = free_socket()
    port = sock.getsockname()[1]
    options: dict[str, Any] = {"log_level": "warning", "lifespan": "on", **config}
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, **options))
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


async def stdio_call(
    params: StdioServerParameters, tool: str, arguments: dict[str, Any], errlog: Path
) -> tuple[CallToolResult, str]:
    """Call ``tool`` on the stdio server ``params`` starts: its result, and everything the
    server wrote on stderr (kept in ``errlog``) by the time it stopped."""
    with errlog.open("w+") as err:
        async with Client(stdio_client(params, errlog=err)) as client:
            result = await client.call_tool(tool, arguments)
        err.seek(0)
        return result, err.read()
