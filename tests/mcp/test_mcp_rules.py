"""Rules of the MCP answers that a deliberate break must trip: no whole ``data:`` URI in
``structuredContent`` (the text answer has its own guard), and the previews' size budget."""

from __future__ import annotations

import base64
import io
import json
import os
from pathlib import Path

import httpx
from mcp import Client
from PIL import Image

from mai_tools import AsyncMAIImageClient, PollPolicy
from mai_tools._previews import model_preview
from mcp_server import Settings, create_server
from mcp_server._previews import previews
from tests.support.fakes import BASE, KEY, ok, queued

PREVIEW_LIMIT = 600 * 1024
"""Base64 bytes of previews one result may carry: far under the 1 MiB some clients allow.
Written out here on purpose: raising the server's constant must fail this test."""


VIEW_LIMIT = 20 * 1024
"""Base64 characters of one view_image preview at the default size (issue 24's number).
Written out here on purpose, as PREVIEW_LIMIT is."""


def _png(side: int = 512) -> bytes:
    """Incompressible pixels: a preview of it is as large as a preview gets."""
    out = io.BytesIO()
    Image.frombytes("RGB", (side, side), os.urandom(side * side * 3)).save(out, "PNG")
    return out.getvalue()


async def test_structured_content_never_carries_a_whole_data_uri() -> None:
    payload = base64.b64encode(_png(side=64)).decode("ascii")
    uri = f"data:image/png;base64,{payload}"

    def gateway(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            return queued()
        return ok("COMPLETED", urls=[uri, uri])

    api = AsyncMAIImageClient(
        KEY,
        base_url=BASE,
        http_client=httpx.AsyncClient(transport=httpx.MockTransport(gateway)),
        poll_policy=PollPolicy.immediate(),
    )
    async with Client(create_server(Settings(api_key=KEY), client=api)) as client:
        result = await client.call_tool("generate_image", {"prompt": "inline images"})
    assert not result.is_error
    assert result.structured_content is not None
    structured = json.dumps(result.structured_content)
    assert payload[:64] not in structured  # not even its start: a model reads this part
    assert len(structured) < 2_000
    urls = result.structured_content["image_urls"]
    assert len(urls) == 2
    assert all(u.startswith("data:image/png;base64,...<") for u in urls)  # said, not sent


async def test_view_image_never_puts_image_data_in_text_or_structured_content() -> None:
    """The rule above, for view_image: its image is the one image block, nowhere else (even
    when the job's images are inline data URIs, the book keeping only their digests)."""
    payload = base64.b64encode(_png(side=64)).decode("ascii")
    uri = f"data:image/png;base64,{payload}"

    def gateway(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            return queued()
        return ok("COMPLETED", urls=[uri])

    api = AsyncMAIImageClient(
        KEY,
        base_url=BASE,
        http_client=httpx.AsyncClient(transport=httpx.MockTransport(gateway)),
        poll_policy=PollPolicy.immediate(),
    )
    async with Client(create_server(Settings(api_key=KEY, preview="off"), client=api)) as client:
        made = await client.call_tool("generate_image", {"prompt": "inline images"})
        assert made.structured_content is not None
        viewed = await client.call_tool(
            "view_image", {"request_id": made.structured_content["request_id"]}
        )
    assert not viewed.is_error
    assert [c.type for c in viewed.content] == ["text", "image"]
    text = json.dumps([c.model_dump() for c in viewed.content if c.type == "text"])
    assert payload[:64] not in text
    assert "base64" not in text
    assert viewed.structured_content is None
    image = viewed.content[1]
    assert image.type == "image"
    assert image.data not in text
    assert image.data[:64] not in text


def _write(folder: Path, count: int) -> list[Path]:
    paths = []
    for index in range(count):
        path = folder / f"image-{index}.png"
        path.write_bytes(_png())
        paths.append(path)
    return paths


async def test_previews_stay_within_their_size_budget(tmp_path: Path) -> None:
    import anyio

    count = 12
    saved = await anyio.to_thread.run_sync(_write, tmp_path, count)
    contents = await previews(
        [f"https://cdn.example.com/{n}.png" for n in range(count)],  # read from disk, not here
        side=384,
        budget=60,
        request_id="r",
        saved=saved,
    )
    sizes = [len(c.data) for c in contents]
    assert sizes, "no preview at all: the budget test proves nothing"
    assert sum(sizes) <= PREVIEW_LIMIT
    assert len(contents) < count  # the images would have gone past the budget: some dropped


def test_a_view_preview_fits_its_budget_even_for_incompressible_pixels() -> None:
    """Noise is the worst case (the emulator never draws it): quality, then size, give way."""
    raw = _png(side=1024)
    default = model_preview(raw, 384)
    assert len(base64.b64encode(default.jpeg)) <= VIEW_LIMIT
    assert max(default.width, default.height) <= 384
    assert default.original == (1024, 1024)
    largest = model_preview(raw, 1024)
    assert len(base64.b64encode(largest.jpeg)) <= 150 * 1024
    assert max(largest.width, largest.height) <= 1024
