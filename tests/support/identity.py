"""Who the HTTP server thinks is calling: a test-only ``whoami`` tool on the real server, asked
by the MCP SDK's client over Streamable HTTP (in process, through httpx2's ASGI transport); and
the raw requests and served command the identity tests share."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.server.mcpserver import Context, MCPServer
from starlette.requests import Request
from starlette.types import ASGIApp

from mcp_server import Settings, create_server
from mcp_server._identity import principal


def whoami_server(settings: Settings) -> MCPServer:
    """The real server, plus a tool that answers the principal its request carries: the
    ``mai_principal`` claim of the ``AuthenticatedUser`` in ``scope["user"]``, which must be
    what the server's own ``_identity.principal()`` reads (the tools' view of the caller)."""
    server = create_server(settings)

    @server.tool()
    def whoami(ctx: Context) -> str:
        request = ctx.request_context.request
        assert isinstance(request, Request)
        claimed = str(request.scope["user"].access_token.claims["mai_principal"])
        assert principal(ctx.request_context) == claimed
        return claimed

    return server


async def whoami(app: ASGIApp, bearer: str) -> str:
    """The principal the server sees for ``bearer``, asked through the SDK's client (the app's
    session manager must be running)."""
    async with (
        httpx2.AsyncClient(
            transport=httpx2.ASGITransport(app=app),
            base_url="http://127.0.0.1:8000",
            headers={"Authorization": f"Bearer {bearer}"},
        ) as http,
        Client(streamable_http_client("http://127.0.0.1:8000/mcp", http_client=http)) as client,
    ):
        result = await client.call_tool("whoami", {})
    assert not result.is_error, result.content
    text = result.content[0]
    assert text.type == "text"
    return text.text


MCP_HEADERS = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-11-25",
        "capabilities": {},
        "clientInfo": {"name": "raw", "version": "1"},
    },
}


def _port_of_a_closed_socket() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Served:
    """A server process: its origin, and its stderr once it has stopped."""

    origin: str
    stderr: str = ""


@contextlib.contextmanager
def served_command(command: list[str], env: dict[str, str]) -> Iterator[Served]:
    """``command --port PORT`` (an HTTP server) in a subprocess, until the block ends."""
    port = _port_of_a_closed_socket()
    proc = subprocess.Popen(
        [*command, "--port", str(port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    served = Served(f"http://127.0.0.1:{port}")
    deadline = time.monotonic() + 30
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            time.sleep(0.1)
        assert proc.poll() is None, "the server stopped at start"
        assert time.monotonic() < deadline, "the server did not start in time"
        yield served
    finally:
        proc.terminate()
        served.stderr = proc.communicate(timeout=10)[1].decode()


def http_command() -> list[str]:
    """``mai-image-mcp --transport streamable-http``, the one installed beside this Python."""
    found = shutil.which("mai-image-mcp", path=os.path.dirname(sys.executable))
    assert found is not None, "mai-image-mcp is not installed beside this Python"
    return [found, "--transport", "streamable-http"]


def server_env(**more: str) -> dict[str, str]:
    """This process's environment without the server's settings (and OpenTelemetry's), with
    previews off and ``more``."""
    prefixes = ("MAI_MCP_", "PIXAZO_", "OTEL_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
    return {**env, "MAI_MCP_PREVIEW": "off", **more}


ROOT = Path(__file__).resolve().parents[2]


def find_inspector() -> str | None:
    """The MCP Inspector CLI, if installed (``MCP_INSPECTOR``, ``.ci/node``, ``node_modules``
    or PATH)."""
    for candidate in (
        os.environ.get("MCP_INSPECTOR"),
        str(ROOT / ".ci" / "node" / "node_modules" / ".bin" / "mcp-inspector"),
        str(ROOT / "node_modules" / ".bin" / "mcp-inspector"),
        shutil.which("mcp-inspector"),
    ):
        if candidate and Path(candidate).exists():
            return candidate
    return None


def inspector_or_skip() -> str:
    """:func:`find_inspector`, or skip the test saying how to install it."""
    inspector = find_inspector()
    if inspector is None:
        pytest.skip(
            "MCP Inspector not installed: npm install --prefix .ci/node "
            "@modelcontextprotocol/inspector@2.12.0 (the README's test command does)"
        )
    return inspector
