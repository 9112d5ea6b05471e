"""view_image over MCP: one small JPEG of an image a job made, and never a fetch of a URL the
caller's jobs did not return (an SSRF guard). In-process clients against the emulator."""

from __future__ import annotations

import base64
import io
import re
from collections.abc import Iterator
from typing import Any

import pytest
from mcp import Client
from mcp.types import CallToolResult, ImageContent, TextContent
from PIL import Image

from mai_tools import AsyncMAIImageClient, GenerateRequest
from mai_tools._previews import MAX_VIEW_BUDGET, VIEW_BUDGET
from mai_tools.emulator import EmulatorConfig, RunningEmulator, run_emulator
from mcp_server import Settings, create_server
from tests.support.fakes import KEY
from tests.support.sockets import QuietPort, quiet_port

BASE64_RUN = re.compile(r"[A-Za-z0-9+/=]{80,}")
"""A run of base64 long enough to be image data: never in any text a model reads."""


@pytest.fixture(scope="module")
def module_emu() -> Iterator[RunningEmulator]:
    with run_emulator(EmulatorConfig(api_keys=(KEY,), min_duration=0.1, max_duration=0.2)) as emu:
        yield emu


@pytest.fixture
def emu(module_emu: RunningEmulator) -> RunningEmulator:
    module_emu.control.reset()
    return module_emu


def _server(emu: RunningEmulator, **kw: Any) -> Any:
    return create_server(Settings(api_key=KEY, base_url=emu.base_url, preview="off", **kw))


def _text(result: CallToolResult) -> str:
    first = result.content[0]
    assert isinstance(first, TextContent)
    assert not BASE64_RUN.search(first.text), first.text
    return first.text


def _image(result: CallToolResult) -> tuple[str, Image.Image]:
    assert not result.is_error, _text(result)
    assert [c.type for c in result.content] == ["text", "image"]
    image = result.content[1]
    assert isinstance(image, ImageContent)
    assert image.mime_type == "image/jpeg"
    decoded = Image.open(io.BytesIO(base64.b64decode(image.data)))
    assert decoded.format == "JPEG"
    return image.data, decoded


@pytest.fixture
def listener() -> Iterator[QuietPort]:
    """A loopback port a refused URL names: it must never be reached."""
    with quiet_port() as port:
        yield port


async def test_view_image_shows_one_small_jpeg_and_a_line_of_text(emu: RunningEmulator) -> None:
    async with Client(_server(emu)) as client:
        made = await client.call_tool("generate_image", {"prompt": "a tiny robot", "num_images": 2})
        assert made.structured_content is not None
        request_id = made.structured_content["request_id"]
        first = await client.call_tool("view_image", {"request_id": request_id})
        second = await client.call_tool("view_image", {"request_id": request_id, "index": 2})
        large = await client.call_tool("view_image", {"request_id": request_id, "size": 1024})
    data, image = _image(first)
    assert max(image.size) <= 384
    assert len(data) <= VIEW_BUDGET  # a 1024 px source at the default size: <= 20 KB of base64
    text = _text(first)
    assert request_id in text
    assert "Image 1 of 2" in text
    assert "1024x1024" in text  # the original's size
    assert first.structured_content is None  # an image, not the job tools' answer
    assert "Image 2 of 2" in _text(second)
    assert _image(second)[0] != data
    large_data, large_image = _image(large)
    assert 384 < max(large_image.size) <= 1024
    assert len(large_data) <= MAX_VIEW_BUDGET


async def test_a_url_is_fetched_only_if_one_of_the_callers_jobs_returned_it(
    emu: RunningEmulator, listener: QuietPort
) -> None:
    async with Client(_server(emu)) as client:
        made = await client.call_tool("generate_image", {"prompt": "a tiny robot"})
        assert made.structured_content is not None
        url = made.structured_content["image_urls"][0]
        request_id = made.structured_content["request_id"]
        by_url = await client.call_tool("view_image", {"url": url})
        foreign = [
            await client.call_tool("view_image", {"url": target})
            for target in (
                listener.url("/latest/meta-data.png"),
                f"{url}?again",
                url.replace("/1.png", "/2.png"),
            )
        ]
        # With a request id, the URL must be one of that job's.
        paired = await client.call_tool(
            "view_image", {"request_id": request_id, "url": listener.url("/x.png")}
        )
    assert "Image 1 of 1" in _text(by_url)
    _image(by_url)
    for refused in [*foreign, paired]:
        assert refused.is_error
        assert "is not an image one of your jobs returned" in _text(refused)
    assert listener.untouched()


async def test_the_same_url_of_a_job_the_server_did_not_make_is_refused(
    emu: RunningEmulator,
) -> None:
    """A real image URL of the same gateway, from a job this server's book does not hold."""
    async with AsyncMAIImageClient(KEY, base_url=emu.base_url, job_book="off") as api:
        elsewhere = await api.run(GenerateRequest(prompt="made by someone else"))
    async with Client(_server(emu)) as client:
        refused = await client.call_tool("view_image", {"url": elsewhere.image_urls[0]})
        by_id = await client.call_tool("view_image", {"request_id": elsewhere.request_id})
    assert refused.is_error
    assert "not an image one of your jobs returned" in _text(refused)
    # By its request id the gateway vouches for it (one principal: as get_image_job reads it).
    _image(by_id)


async def test_a_running_job_is_said_in_text_not_as_an_error() -> None:
    config = EmulatorConfig(api_keys=(KEY,), min_duration=600, max_duration=600)
    with run_emulator(config) as slow:
        async with AsyncMAIImageClient(KEY, base_url=slow.base_url, job_book="off") as api:
            job = await api.submit(GenerateRequest(prompt="a slow one"))
        async with Client(_server(slow)) as client:
            result = await client.call_tool("view_image", {"request_id": job.request_id})
    assert not result.is_error
    assert len(result.content) == 1
    text = _text(result)
    assert job.request_id in text
    assert "still running" in text
    assert "get_image_job" in text


async def test_an_unknown_id_is_answered_as_get_image_job_answers_it(
    emu: RunningEmulator,
) -> None:
    unknown = "microsoft-mai-image-2-5_019d0000-0000-7000-8000-00000000dead"
    async with Client(_server(emu)) as client:
        viewed = await client.call_tool("view_image", {"request_id": unknown})
        waited = await client.call_tool("get_image_job", {"request_id": unknown})
    assert viewed.is_error
    assert waited.is_error
    assert _text(viewed) == _text(waited)


async def test_an_index_past_the_last_image_and_no_target_are_refused(
    emu: RunningEmulator,
) -> None:
    async with Client(_server(emu)) as client:
        made = await client.call_tool("generate_image", {"prompt": "a tiny robot"})
        assert made.structured_content is not None
        request_id = made.structured_content["request_id"]
        past = await client.call_tool("view_image", {"request_id": request_id, "index": 3})
        nothing = await client.call_tool("view_image", {})
        too_large = await client.call_tool("view_image", {"request_id": request_id, "size": 4096})
    assert past.is_error
    assert "has 1 image(s); index 3 does not exist" in _text(past)
    assert nothing.is_error
    assert "give request_id (and index), or url" in _text(nothing)
    assert too_large.is_error
    assert "size" in _text(too_large)
