"""Who the HTTP server thinks is calling: a test-only ``whoami`` tool on the real server, asked
by the MCP SDK's client over Streamable HTTP (in process, through httpx2's ASGI transport)."""

from __future__ import annotations

import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.server.mcpserver import Context, MCPServer
from starlette.requests import Request
from starlette.types import ASGIApp

from mcp_server import Settings, create_server


def whoami_server(settings: Settings) -> MCPServer:
    """The real server, plus a tool that answers the principal its request carries (the
    ``mai_principal`` claim of the ``AuthenticatedUser`` in ``scope["user"]``)."""
    server = create_server(settings)

    @server.tool()
    def whoami(ctx: Context) -> str:
        request = ctx.request_context.request
        assert isinstance(request, Request)
        claims = request.scope["user"].access_token.claims
        return str(claims["mai_principal"])

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
