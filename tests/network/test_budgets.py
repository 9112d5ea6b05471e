"""Every tool call ends within its budget, saving included: the save gets what the wait left,
and a save that cannot finish in time (or a malformed media URL) is "not saved", with the URLs,
never a failure."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import ToolMessage
from mcp import Client
from pydantic import SecretStr

from mai_tools import AsyncMAIImageClient, ImageResult, MAIImageClient
from mai_tools._agent import Done, arun, run
from mai_tools._download import asave_images
from mai_tools.emulator import EmulatorConfig, RunningEmulator, run_emulator
from mai_tools.langchain import MAIImageGenerateTool
from mcp_server import Settings, create_server
from tests.network.servers import HostileHost, hostile_host
from tests.support.fakes import KEY

# Seconds past the budget a call may take. The CDN here stalls for an hour, and the answer says
# the save timeout ended it: the bound only has to tell "ended by the budget" from "waited for
# the CDN", so it is generous enough that no busy machine breaks it.
MARGIN = 10.0


@pytest.fixture(scope="module")
def cdn() -> Iterator[HostileHost]:
    with hostile_host() as host:
        yield host


@pytest.fixture(scope="module")
def gateway(cdn: HostileHost) -> Iterator[RunningEmulator]:
    """The emulator, with every media_url on the hostile host."""
    config = EmulatorConfig(
        api_keys=(KEY,), min_duration=0.3, max_duration=0.3, public_url=cdn.origin
    )
    with run_emulator(config) as emu:
        yield emu


@pytest.fixture
def media(cdn: HostileHost) -> HostileHost:
    cdn.mode, cdn.failures = "ok", 0
    return cdn


def _tool(gateway: RunningEmulator, out: Path, wait: float) -> MAIImageGenerateTool:
    return MAIImageGenerateTool(
        api_key=SecretStr(KEY), base_url=gateway.base_url, output_dir=out, wait_timeout=wait
    )


def _call(args: dict[str, Any], tool: MAIImageGenerateTool) -> dict[str, Any]:
    return {"type": "tool_call", "id": "c1", "name": tool.name, "args": args}


def _check_not_saved(message: object, media: HostileHost, out: Path) -> None:
    assert isinstance(message, ToolMessage)
    assert message.status == "success"  # the job finished: never an error
    text = str(message.content)
    assert f"{media.origin}/files/" in text.splitlines()[0]  # the URL comes first
    assert "not saved to disk" in text
    assert message.artifact.save_error is not None
    assert message.artifact.saved_paths == []
    assert not list(out.glob("*.png"))


@pytest.mark.parametrize("behaviour", ["stall", "drip"])
def test_the_sync_tool_returns_within_its_wait_timeout(
    behaviour: str, gateway: RunningEmulator, media: HostileHost, tmp_path: Path
) -> None:
    media.mode = behaviour
    tool = _tool(gateway, tmp_path, wait=2.0)
    started = time.monotonic()
    message = tool.invoke(_call({"prompt": "a slow cdn"}, tool))
    assert time.monotonic() - started < 2.0 + MARGIN
    _check_not_saved(message, media, tmp_path)
    assert "save timeout" in str(message.content)


@pytest.mark.parametrize("behaviour", ["stall", "drip"])
async def test_the_async_tool_returns_within_its_wait_timeout(
    behaviour: str, gateway: RunningEmulator, media: HostileHost, tmp_path: Path
) -> None:
    media.mode = behaviour
    tool = _tool(gateway, tmp_path, wait=2.0)
    started = time.monotonic()
    message = await tool.ainvoke(_call({"prompt": "a slow cdn", "num_images": 2}, tool))
    assert time.monotonic() - started < 2.0 + MARGIN
    _check_not_saved(message, media, tmp_path)


def test_a_rate_limited_cdn_is_waited_out_inside_the_tool(
    gateway: RunningEmulator, media: HostileHost, tmp_path: Path
) -> None:
    media.mode, media.failures, media.retry_after = "429", 1, "0.2"
    tool = _tool(gateway, tmp_path, wait=10.0)
    message = tool.invoke(_call({"prompt": "a throttled cdn"}, tool))
    assert isinstance(message, ToolMessage)
    assert "saved: " in str(message.content)
    assert len(message.artifact.saved_paths) == 1


async def test_the_mcp_server_gives_the_save_what_is_left_of_max_wait(
    gateway: RunningEmulator, media: HostileHost, tmp_path: Path
) -> None:
    media.mode = "stall"
    settings = Settings(
        api_key=KEY, base_url=gateway.base_url, max_wait=2.0, output_dir=tmp_path, preview="off"
    )
    started = time.monotonic()
    async with Client(create_server(settings)) as client:
        result = await client.call_tool("generate_image", {"prompt": "a stalled cdn"})
    assert time.monotonic() - started < 2.0 + MARGIN
    assert not result.is_error
    assert result.structured_content is not None
    assert result.structured_content["done"] is True
    assert "save timeout" in result.structured_content["save_error"]
    assert result.structured_content["image_urls"][0].startswith(media.origin)


def _check_nothing_written(out: Path) -> None:
    assert not list(out.glob("*.png"))
    assert not list(out.glob("*.part"))


@pytest.mark.parametrize("behaviour", ["404", "429"])
async def test_a_failed_save_in_the_mcp_server_is_not_saved_never_a_crash(
    behaviour: str, gateway: RunningEmulator, media: HostileHost, tmp_path: Path
) -> None:
    """A download that fails (rather than times out) inside anyio's task groups: on Python
    3.11/3.12 asyncio.TaskGroup turned it into a bare CancelledError that crashed the call."""
    media.mode, media.failures, media.retry_after = behaviour, 100, "0.3"
    settings = Settings(
        api_key=KEY, base_url=gateway.base_url, max_wait=3.0, output_dir=tmp_path, preview="off"
    )
    async with Client(create_server(settings)) as client:
        result = await client.call_tool(
            "generate_image", {"prompt": "a refusing cdn", "num_images": 2}
        )
    assert not result.is_error
    assert result.structured_content is not None
    assert result.structured_content["done"] is True
    assert f"answered HTTP {behaviour}" in result.structured_content["save_error"]
    assert "not saved to disk" in str(result.content[0])
    _check_nothing_written(tmp_path)


async def test_asave_inside_an_anyio_task_group_raises_download_error(
    gateway: RunningEmulator, media: HostileHost, tmp_path: Path
) -> None:
    import anyio

    from mai_tools import DownloadError

    media.mode, media.failures = "404", 100
    result = ImageResult(request_id="r", image_urls=[media.url("a.png"), media.url("b.png")])
    async with anyio.create_task_group() as group:
        group.start_soon(anyio.sleep_forever)  # like the MCP server's heartbeat
        with pytest.raises(DownloadError, match="404"):
            await asave_images(result.request_id, result.image_urls, tmp_path, timeout=5)
        group.cancel_scope.cancel()


def _slow_result() -> ImageResult:
    time.sleep(0.3)
    return ImageResult(request_id="r", image_urls=["https://cdn.example/never-fetched.png"])


def test_a_wait_that_used_the_budget_leaves_the_save_no_time(tmp_path: Path) -> None:
    with MAIImageClient(KEY) as client:
        outcome = run(client, lambda _client: _slow_result(), save_to=tmp_path, budget=0.2)
    assert isinstance(outcome, Done)
    assert outcome.saved == []
    assert outcome.save_error is not None
    assert "no time was left" in outcome.save_error


async def test_an_async_wait_that_used_the_budget_leaves_the_save_no_time(
    tmp_path: Path,
) -> None:
    async def slow(_client: AsyncMAIImageClient) -> ImageResult:
        return _slow_result()

    async with AsyncMAIImageClient(KEY) as client:
        outcome = await arun(client, slow, save_to=tmp_path, budget=0.2)
    assert isinstance(outcome, Done)
    assert outcome.save_error is not None
    assert "no time was left" in outcome.save_error


@pytest.mark.parametrize("public_url", ["https://exa mple.com", "https://xn--", "http://[::1"])
async def test_a_malformed_media_url_is_reported_as_not_saved(
    public_url: str, tmp_path: Path
) -> None:
    config = EmulatorConfig(api_keys=(KEY,), min_duration=0, max_duration=0, public_url=public_url)
    with run_emulator(config) as emu:
        tool = MAIImageGenerateTool(
            api_key=SecretStr(KEY), base_url=emu.base_url, output_dir=tmp_path, wait_timeout=5
        )
        sync_message = tool.invoke(_call({"prompt": "a bad media url"}, tool))
        async_message = await tool.ainvoke(_call({"prompt": "a bad media url"}, tool))
    for message in (sync_message, async_message):
        assert isinstance(message, ToolMessage)
        assert message.status == "success"
        assert "not saved to disk" in str(message.content)
        assert message.artifact.image_urls[0].startswith(public_url)
