"""A team server for tests: the real HTTP app with named tokens (alice, bob, and carol the
operator) on a loopback port, in front of an emulator."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from mai_tools.emulator import RunningEmulator
from mcp_server import Settings, create_server
from mcp_server._http import http_app
from mcp_server._tokens import NamedToken, digest, write
from tests.support.fakes import KEY
from tests.support.serving import free_socket, serving

TOKENS = {
    "alice": "mai_token-of-alice-0123456789abcdef",
    "bob": "mai_token-of-bob-0123456789abcdef",
    "carol": "mai_token-of-carol-0123456789abcdef",  # the operator
}
OPERATOR = "carol"


@contextlib.contextmanager
def team_server(emu: RunningEmulator, **settings: Any) -> Iterator[str]:
    """Serve a server whose callers are told apart by named tokens (:data:`TOKENS`); yields its
    ``/mcp`` URL. ``settings`` are more :class:`Settings` fields."""
    with tempfile.TemporaryDirectory() as folder:
        tokens = Path(folder) / "tokens.json"
        made = "2026-12-07T08:00:00Z"
        write(tokens, {n: NamedToken(n, digest(t), made) for n, t in TOKENS.items()})
        config = Settings(
            api_key=KEY,
            base_url=emu.base_url,
            preview="off",
            operators=(OPERATOR,),
            tokens_file=tokens,
            **settings,
        )
        sock = free_socket()
        port = sock.getsockname()[1]
        with serving(http_app(create_server(config), config, port=port), sock) as origin:
            yield f"{origin}/mcp"


@contextlib.asynccontextmanager
async def as_principal(url: str, name: str) -> AsyncIterator[Client]:
    """The SDK's client at ``url`` (a :func:`team_server`), calling as ``name``."""
    headers = {"Authorization": f"Bearer {TOKENS[name]}"}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=30) as http,
        Client(streamable_http_client(url, http_client=http)) as client,
    ):
        yield client
