"""Both clients, their downloads, the MCP server and the LangChain tools honour the
environment's proxies (HTTP_PROXY, HTTPS_PROXY, ALL_PROXY, NO_PROXY) exactly as httpx does."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from langchain_core.messages import ToolMessage
from mcp import Client
from pydantic import SecretStr

from mai_tools import AsyncMAIImageClient, ConfigurationError, ImageResult, MAIImageClient
from mai_tools._constants import GENERATE_PATH
from mai_tools.emulator import RunningEmulator
from mai_tools.langchain import MAIImageGenerateTool
from mcp_server import Settings, create_server
from tests.network.servers import ForwardProxy
from tests.support.fakes import FAST_RETRY, KEY


def _went_through(proxy: ForwardProxy) -> set[str]:
    """What kinds of request the proxy forwarded: submit, status, file."""
    kinds = set()
    for path in proxy.paths():
        if path == GENERATE_PATH:
            kinds.add("submit")
        elif path.startswith("/v2/requests/status/"):
            kinds.add("status")
        elif path.startswith("/files/"):
            kinds.add("file")
    return kinds


def _sync_job(emu: RunningEmulator, out: Path) -> list[Path]:
    with MAIImageClient(KEY, base_url=emu.base_url, retry_policy=FAST_RETRY) as client:
        return client.save(client.generate("a cat behind a proxy"), out)


async def _async_job(emu: RunningEmulator, out: Path) -> list[Path]:
    async with AsyncMAIImageClient(KEY, base_url=emu.base_url, retry_policy=FAST_RETRY) as client:
        result = await client.generate("a cat behind a proxy")
        return await client.save(result, out)


def _job(mode: str, emu: RunningEmulator, out: Path) -> list[Path]:
    if mode == "sync":
        return _sync_job(emu, out)
    return asyncio.run(_async_job(emu, out))


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("variable", ["HTTP_PROXY", "http_proxy", "ALL_PROXY"])
def test_calls_and_downloads_go_through_the_proxy(
    mode: str,
    variable: str,
    emu: RunningEmulator,
    proxy: ForwardProxy,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.setenv(variable, proxy.url)
    (path,) = _job(mode, emu, tmp_path)
    assert path.stat().st_size > 0
    assert _went_through(proxy) == {"submit", "status", "file"}


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("no_proxy", ["127.0.0.1", "localhost,127.0.0.1", "*"])
def test_no_proxy_connects_directly(
    mode: str,
    no_proxy: str,
    emu: RunningEmulator,
    proxy: ForwardProxy,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    monkeypatch.setenv("NO_PROXY", no_proxy)
    assert len(_job(mode, emu, tmp_path)) == 1
    assert proxy.seen == []


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_an_https_only_proxy_leaves_http_direct(
    mode: str,
    emu: RunningEmulator,
    proxy: ForwardProxy,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", proxy.url)  # the emulator is plain http: not proxied
    assert len(_job(mode, emu, tmp_path)) == 1
    assert proxy.seen == []


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_fresh_download_clients_use_the_proxy(
    mode: str,
    emu: RunningEmulator,
    proxy: ForwardProxy,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    with MAIImageClient(KEY, base_url=emu.base_url) as client:
        urls = client.generate("saved later, elsewhere").image_urls
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    result = ImageResult(request_id="r1", image_urls=urls)
    if mode == "sync":  # a client made after the proxy was set
        with MAIImageClient(KEY, base_url=emu.base_url) as client:
            client.save(result, tmp_path)
    else:

        async def save() -> None:
            async with AsyncMAIImageClient(KEY, base_url=emu.base_url) as client:
                await client.save(result, tmp_path)

        asyncio.run(save())
    assert _went_through(proxy) == {"file"}


@pytest.mark.parametrize("client_type", [MAIImageClient, AsyncMAIImageClient])
async def test_an_unusable_proxy_setting_is_a_configuration_error(
    client_type: type[MAIImageClient] | type[AsyncMAIImageClient],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "ftp://someone:pr0xy-s3cret@proxy.example:21")
    with pytest.raises(ConfigurationError, match="HTTPS_PROXY") as caught:
        client_type(KEY)
    assert "pr0xy-s3cret" not in str(caught.value)


async def test_mcp_server_goes_through_the_proxy(
    emu: RunningEmulator, proxy: ForwardProxy, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    settings = Settings(api_key=KEY, base_url=emu.base_url, preview="off", output_dir=tmp_path)
    async with Client(create_server(settings)) as client:
        result = await client.call_tool("generate_image", {"prompt": "a proxied server"})
    assert not result.is_error
    assert result.structured_content is not None
    assert len(result.structured_content["saved_paths"]) == 1
    assert _went_through(proxy) == {"submit", "status", "file"}


async def test_langchain_async_tool_goes_through_the_proxy(
    emu: RunningEmulator, proxy: ForwardProxy, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    tool = MAIImageGenerateTool(api_key=SecretStr(KEY), base_url=emu.base_url, output_dir=tmp_path)
    message = await tool.ainvoke(
        {"type": "tool_call", "id": "c1", "name": tool.name, "args": {"prompt": "proxied tool"}}
    )
    assert isinstance(message, ToolMessage)
    assert message.status == "success"
    assert "saved: " in str(message.content)
    assert _went_through(proxy) == {"submit", "status", "file"}
