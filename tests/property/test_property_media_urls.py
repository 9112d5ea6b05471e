"""Property: whatever URL a finished job's ``media_url`` holds, every path that finishes the job
(client save sync and async, the agent answer of LangChain and MCP, the MCP tool, the CLI, a
batch line) reports it done, with its URLs, and the save of that image "not saved" (a
DownloadError), never a crash, never a failure and never "try again" (which would pay for a
second job).

The gateway is scripted (no network). A URL whose port no socket can take is handed to httpx's
real transport, so the socket layer's own error (``OverflowError`` under asyncio) is what a
missing check meets; only loopback literals go there, and the connection is never made.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from mai_tools import AsyncMAIImageClient, DownloadError, FakeClock, MAIImageClient, PollPolicy
from mai_tools._agent import Done, answer_text, arun, run
from mai_tools.batch import BatchRun, LineStatus
from mai_tools.cli import CliState, ExitCode
from tests.cli.cli_support import invoke
from tests.support.fakes import BASE, FAST_RETRY, KEY, PNG_1PX, RID, Gateway, ok, queued

SETTINGS = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
_LOOPBACK = frozenset({"127.0.0.1", "::1"})

hosts = st.sampled_from(
    [
        "127.0.0.1",
        "[::1]",
        "[::1",  # an unclosed IPv6 bracket
        "::1]",
        "[fe80::1%eth0]",
        "cdn.example.com",
        "xn--",  # an A-label with no content
        "xn--zz-xxx.com",  # decodes to a code point IDNA refuses
        "ex\u00e4mple.com",  # a valid IDNA host
        "\u2488.com",  # a host IDNA refuses
        "a..b",
        "",
        "a" * 300,
    ]
)
ports = st.one_of(
    st.just(""),
    st.sampled_from([":0", ":-1", ":65536", ":99999999", f":{10**30}", ":+80", ":", ":x"]),
    st.integers(min_value=1, max_value=65535).map(lambda p: f":{p}"),
)
controls = st.text(alphabet=st.characters(max_codepoint=0x20), max_size=3)
media_urls = st.one_of(
    st.just(""),
    st.builds(
        lambda scheme, host, port, junk, path: f"{scheme}{host}{port}{junk}/{path}",
        st.sampled_from(["http://", "https://", "HTTP://", "ftp://", "//", ""]),
        hosts,
        ports,
        controls,
        st.sampled_from(["x.png", "", "a" * 70_000, "%zz", "?q=\u00e9#f"]),
    ),
    st.text(max_size=40),
)


def _reported(test: Callable[..., None]) -> Callable[..., None]:
    """The URLs of the review, always tried first (random draws seldom combine them)."""
    for url in (
        "http://127.0.0.1:99999999/x.png",
        "http://[::1]:65536/x.png",
        "http://[::1/x.png",
        "",
    ):
        test = example(url=url)(test)
    return test


class _Routes(httpx.BaseTransport, httpx.AsyncBaseTransport):
    """The scripted gateway on its host; a PNG for any other host; httpx's real transport for a
    loopback URL whose port no socket accepts (it fails before connecting)."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.real = httpx.HTTPTransport()
        self.areal = httpx.AsyncHTTPTransport()

    def _unsendable(self, request: httpx.Request) -> bool:
        port = request.url.port
        return request.url.host in _LOOPBACK and port is not None and not 0 < port < 65536

    def _scripted(self, request: httpx.Request) -> httpx.Response:
        if request.url.host == "gateway.pixazo.ai":
            return self.gateway.handler(request)
        return httpx.Response(200, content=PNG_1PX, headers={"content-type": "image/png"})

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if self._unsendable(request):
            return self.real.handle_request(request)
        return self._scripted(request)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self._unsendable(request):
            return await self.areal.handle_async_request(request)
        return self._scripted(request)


def _gateway(url: str) -> Gateway:
    return Gateway(submits=[queued()], polls=[ok("COMPLETED", urls=[url])])


def _options(routes: _Routes, http: type[httpx.Client | httpx.AsyncClient]) -> dict[str, Any]:
    return {
        "base_url": BASE,
        "poll_policy": PollPolicy.immediate(),
        "retry_policy": FAST_RETRY,
        "http_client": http(transport=routes),
    }


def _sync_client(url: str) -> MAIImageClient:
    return MAIImageClient(KEY, **_options(_Routes(_gateway(url)), httpx.Client))


def _async_client(url: str) -> AsyncMAIImageClient:
    return AsyncMAIImageClient(KEY, **_options(_Routes(_gateway(url)), httpx.AsyncClient))


def _check_done(outcome: object, url: str) -> None:
    assert isinstance(outcome, Done), outcome
    assert outcome.result.request_id == RID
    assert "" not in outcome.result.image_urls
    if url.strip():
        assert outcome.result.image_urls == [url]
    assert bool(outcome.saved) != (outcome.save_error is not None)
    text = answer_text(outcome)
    assert f"request_id: {RID}" in text
    assert "try again" not in text.lower()
    if outcome.save_error is not None:
        assert "not saved" in text


@SETTINGS
@given(url=media_urls)
@_reported
def test_client_save_sync_and_async_give_paths_or_download_error(url: str) -> None:
    with tempfile.TemporaryDirectory() as folder:
        with _sync_client(url) as client:
            result = client.generate("a lighthouse", timeout=30)
            try:
                paths = client.save(result, folder, timeout=5)
            except DownloadError:
                paths = []
            assert all(Path(p).is_file() for p in paths)

        async def asave() -> None:
            async with _async_client(url) as client:
                result = await client.generate("a lighthouse", timeout=30)
                with contextlib.suppress(DownloadError):
                    await client.save(result, folder, timeout=5)

        asyncio.run(asave())


@SETTINGS
@given(url=media_urls)
@_reported
def test_agent_answer_is_done_with_the_urls_whatever_the_url(url: str) -> None:
    """The answer the LangChain tools and the MCP server give (sync and async runs)."""
    with tempfile.TemporaryDirectory() as folder:
        with _sync_client(url) as client:
            outcome = run(client, lambda c: c.generate("a lighthouse"), save_to=folder, budget=30)
        _check_done(outcome, url)

        async def arun_once() -> None:
            async with _async_client(url) as client:
                outcome = await arun(
                    client, lambda c: c.generate("a lighthouse"), save_to=folder, budget=30
                )
            _check_done(outcome, url)

        asyncio.run(arun_once())


@settings(SETTINGS, max_examples=20)
@given(url=media_urls)
@_reported
def test_batch_line_stays_completed_with_its_urls_whatever_the_url(url: str) -> None:
    async def one_run(out: Path) -> None:
        routes = _Routes(_gateway(url))
        async with (
            AsyncMAIImageClient(KEY, **_options(routes, httpx.AsyncClient)) as client,
            httpx.AsyncClient(transport=routes) as downloads,
            BatchRun(
                client,
                [{"id": "one", "prompt": "a lighthouse"}],
                out,
                download_client=downloads,
                retry_policy=FAST_RETRY,
            ) as batch,
        ):
            outcomes = [o async for o in batch]
        assert len(outcomes) == 1
        line = outcomes[0]
        assert line.status is LineStatus.COMPLETED, line
        assert line.request_id == RID
        assert "" not in line.image_urls
        if url.strip():
            assert line.image_urls == (url,)
        assert line.saved != (line.error is not None)

    with tempfile.TemporaryDirectory() as folder:
        asyncio.run(one_run(Path(folder) / "out"))
        asyncio.run(one_run(Path(folder) / "out"))  # a rerun: same line, same outcome


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_port_past_65535_is_a_download_error_not_an_overflow(mode: str, tmp_path: Path) -> None:
    url = "http://127.0.0.1:99999999/x.png"
    if mode == "sync":
        with _sync_client(url) as client:
            outcome = run(client, lambda c: c.generate("a lighthouse"), save_to=tmp_path)
    else:

        async def go() -> Done:
            async with _async_client(url) as client:
                done = await arun(client, lambda c: c.generate("a lighthouse"), save_to=tmp_path)
            assert isinstance(done, Done)
            return done

        outcome = asyncio.run(go())
    _check_done(outcome, url)
    assert isinstance(outcome, Done)
    assert outcome.save_error is not None
    assert "port 99999999" in outcome.save_error


class _RedirectsToBadPort(_Routes):
    def _scripted(self, request: httpx.Request) -> httpx.Response:
        if request.url.host == "cdn.example.com":
            return httpx.Response(302, headers={"location": "http://127.0.0.1:99999999/x.png"})
        return super()._scripted(request)


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_redirect_to_a_port_past_65535_is_a_download_error(mode: str, tmp_path: Path) -> None:
    routes = _RedirectsToBadPort(_gateway("https://cdn.example.com/x.png"))
    if mode == "sync":
        with MAIImageClient(KEY, **_options(routes, httpx.Client)) as client:
            outcome = run(client, lambda c: c.generate("a lighthouse"), save_to=tmp_path)
    else:

        async def go() -> Done:
            async with AsyncMAIImageClient(KEY, **_options(routes, httpx.AsyncClient)) as client:
                done = await arun(client, lambda c: c.generate("a lighthouse"), save_to=tmp_path)
            assert isinstance(done, Done)
            return done

        outcome = asyncio.run(go())
    assert isinstance(outcome, Done)
    assert outcome.save_error is not None
    assert "not saved" in answer_text(outcome)


@settings(SETTINGS, max_examples=25)
@given(url=media_urls)
@_reported
def test_cli_generate_and_wait_exit_ok_or_save_failed_whatever_the_url(url: str) -> None:
    def factory(**kwargs: Any) -> MAIImageClient:
        options = _options(_Routes(_gateway(url)), httpx.Client)
        return MAIImageClient(clock=FakeClock(), **options | kwargs)

    env = {"PIXAZO_API_KEY": KEY, "PIXAZO_BASE_URL": BASE, "MAI_JOB_BOOK": "off"}
    with tempfile.TemporaryDirectory() as folder:
        for args in (["generate", "a lighthouse"], ["wait", RID]):
            got = invoke(*args, "-o", folder, env=env, obj=CliState(client_factory=factory))
            assert got.code in (ExitCode.OK, ExitCode.SAVE_FAILED), got
            if got.code == ExitCode.SAVE_FAILED:
                (line,) = got.error_lines
                if url.strip():
                    assert f"mai-image wait {RID}" in line  # the job is done: save it again
                else:  # saving again cannot help: say what happened
                    assert f"job {RID} finished" in line
                    assert "mai-image wait" not in line


@settings(SETTINGS, max_examples=15)
@given(url=media_urls)
@_reported
def test_mcp_generate_image_answers_done_whatever_the_url(url: str) -> None:
    from mcp import Client  # the MCP SDK is loaded only by this test
    from mcp.types import TextContent

    from mcp_server import Settings, create_server

    async def call(folder: str) -> None:
        settings = Settings(api_key=KEY, output_dir=Path(folder))
        async with (
            _async_client(url) as api,
            Client(create_server(settings, client=api)) as client,
        ):
            result = await client.call_tool("generate_image", {"prompt": "a lighthouse"})
        assert not result.is_error, result
        first = result.content[0]
        assert isinstance(first, TextContent)
        assert f"request_id: {RID}" in first.text
        assert "try again" not in first.text.lower()
        structured = result.structured_content
        assert structured is not None
        assert structured["done"] is True
        assert "" not in structured["image_urls"]
        assert bool(structured["saved_paths"]) != (structured["save_error"] is not None)

    with tempfile.TemporaryDirectory() as folder:
        asyncio.run(call(folder))
