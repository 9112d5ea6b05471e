"""What the docs promise the MCP tools accept, and what they refuse like the core does."""

from __future__ import annotations

import base64
import io
import os

import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from PIL import Image

from mai_tools.emulator import RunningEmulator
from mcp_server import Settings, create_server
from tests.mcp.test_http_security import TOKEN, _server
from tests.mcp.test_http_security import emu as emu  # fixture
from tests.mcp.test_http_security import module_emu as module_emu  # fixture
from tests.support.fakes import KEY


def _noise_png(megabytes: float) -> bytes:
    """A PNG of about ``megabytes`` (random pixels do not compress)."""
    side = int((megabytes * 1024 * 1024 / 3) ** 0.5)
    image = Image.frombytes("RGB", (side, side), os.urandom(side * side * 3))
    out = io.BytesIO()
    image.save(out, "PNG", compress_level=0)
    return out.getvalue()


async def test_an_edit_with_a_large_data_uri_fits_the_http_body_limit(
    emu: RunningEmulator,
) -> None:
    source = _noise_png(6)
    assert len(source) > 5 * 1024 * 1024  # the SDK's default limit refused 3.3 MiB
    uri = "data:image/png;base64," + base64.b64encode(source).decode()
    with _server(emu, auth_token=TOKEN) as origin:
        async with (
            httpx2.AsyncClient(headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60) as http,
            Client(streamable_http_client(f"{origin}/mcp", http_client=http)) as client,
        ):
            result = await client.call_tool("edit_image", {"prompt": "make it calm", "image": uri})
    assert not result.is_error, result.content
    assert emu.control.stats().jobs_created == 1


@pytest.mark.parametrize("count", ["2", True, 2.5])
async def test_the_tools_refuse_what_the_core_refuses_as_an_image_count(
    emu: RunningEmulator,
    count: object,
) -> None:
    settings = Settings(api_key=KEY, base_url=emu.base_url, preview="off")
    async with Client(create_server(settings)) as client:
        result = await client.call_tool(
            "generate_image", {"prompt": "a strict cat", "num_images": count}
        )
    assert result.is_error
    assert emu.control.stats().submissions == 0
