"""The server as real hosts meet it: no job lost to a client timeout, results every client
reads right (structured next steps, previews that never fail a job), only served capabilities,
recent jobs, and HTTP clients that drop (resumed, or no longer polled for)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import json
import socket
import struct
import threading
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import uvicorn
from mcp import Client, MCPError
from mcp.types import CallToolResult, TextContent
from PIL import Image as PILImage
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from mai_tools import ImageResult
from mai_tools._agent import Done
from mai_tools.emulator import EmulatorConfig, RunningEmulator, run_emulator
from mcp_server import Settings, create_server
from mcp_server._answers import answer, preview_budget
from mcp_server._http import http_app
from mcp_server._jobs import argument_key
from mcp_server._previews import PreviewRefused, _check_declared_size, previews, thumbnail
from mcp_server._resume import MemoryEventStore
from tests.support.fakes import KEY, RID
from tests.support.waiting import aeventually, until_quiet


def _text(result: CallToolResult) -> str:
    first = result.content[0]
    assert isinstance(first, TextContent)
    return first.text


@contextmanager
def _emulator(duration: float) -> Iterator[RunningEmulator]:
    config = EmulatorConfig(api_keys=(KEY,), min_duration=duration, max_duration=duration)
    with run_emulator(config) as emu:
        yield emu


def _settings(emu: RunningEmulator, **kw: Any) -> Settings:
    return Settings(api_key=KEY, base_url=emu.base_url, **{"preview": "off", **kw})


# --------------------------------------------------------------------------- orphan adoption


async def test_a_timed_out_calls_identical_retry_continues_the_same_job() -> None:
    with _emulator(1.5) as emu:
        async with Client(create_server(_settings(emu))) as client:
            args = {"prompt": "a lighthouse at dusk", "num_images": 2}
            with pytest.raises(MCPError):  # the client's own timeout, far under the job's
                await client.call_tool("generate_image", args, read_timeout_seconds=0.4)
            retry = await client.call_tool("generate_image", args)
            assert emu.control.stats().jobs_created == 1  # the retry paid for nothing new
            assert not retry.is_error
            assert "Continuing the job you started at" in _text(retry)
            assert retry.structured_content is not None
            assert retry.structured_content["done"] is True
            assert _text(retry).splitlines()[0].startswith(f"{emu.base_url}/files/")
            # The answer was delivered: the same call again is a new job, as asked.
            again = await client.call_tool("generate_image", args)
            assert "Continuing" not in _text(again)
            assert emu.control.stats().jobs_created == 2
            # A different argument set never adopts.
            with pytest.raises(MCPError):
                await client.call_tool("generate_image", args, read_timeout_seconds=0.4)
            other = await client.call_tool("generate_image", {**args, "num_images": 1})
            assert "Continuing" not in _text(other)
            assert emu.control.stats().jobs_created == 4


async def test_identical_calls_in_flight_share_one_job() -> None:
    with _emulator(1.0) as emu:
        async with Client(create_server(_settings(emu))) as client:
            results: list[CallToolResult] = []

            async def call() -> None:
                results.append(await client.call_tool("generate_image", {"prompt": "twins"}))

            async with anyio.create_task_group() as group:
                group.start_soon(call)
                await aeventually(lambda: emu.control.stats().jobs_created, "the first submit")
                group.start_soon(call)
    assert emu.control.stats().jobs_created == 1
    ids = {r.structured_content["request_id"] for r in results if r.structured_content}
    assert len(results) == 2
    assert len(ids) == 1


async def test_an_identical_call_during_the_first_ones_submit_shares_its_job() -> None:
    # The first call's POST is held at the gateway (it has arrived, no answer yet, so the
    # server knows no request id): the identical second call waits for it instead of paying.
    with _emulator(0.5) as emu:
        emu.control.set_faults(slow_rate=1.0, slow_seconds=1.0)
        async with Client(create_server(_settings(emu, max_wait=60))) as client:
            results: list[CallToolResult] = []

            async def call() -> None:
                results.append(await client.call_tool("generate_image", {"prompt": "held"}))

            def posts() -> int:
                return sum(r.method == "POST" for r in emu.control.stats().requests)

            async with anyio.create_task_group() as group:
                group.start_soon(call)
                await aeventually(posts, "the first POST at the gateway")
                assert emu.control.stats().jobs_created == 0  # held: no answer, no id yet
                group.start_soon(call)
    assert posts() == 1
    assert emu.control.stats().jobs_created == 1
    ids = {r.structured_content["request_id"] for r in results if r.structured_content}
    assert len(results) == 2
    assert len(ids) == 1


def test_a_call_is_named_by_its_tool_and_exact_arguments() -> None:
    key = argument_key("generate_image", {"prompt": "x"})
    assert key != argument_key("edit_image", {"prompt": "x"})
    assert key == argument_key("generate_image", {"prompt": "x"})
    assert key != argument_key("generate_image", {"prompt": "x", "num_images": 2})


# --------------------------------------------------------------------------- results


async def test_structured_answers_name_the_next_step() -> None:
    with _emulator(1.5) as emu:
        async with Client(create_server(_settings(emu, max_wait=0.3))) as client:
            running = await client.call_tool("generate_image", {"prompt": "slow"})
            failed = await client.call_tool("generate_image", {"prompt": "a [fail] cat"})
            assert failed.structured_content is not None
            failed = await client.call_tool(
                "get_image_job", {"request_id": failed.structured_content["request_id"]}
            )
            while failed.structured_content and failed.structured_content["done"] is False:
                failed = await client.call_tool(
                    "get_image_job", {"request_id": failed.structured_content["request_id"]}
                )
            listed = await client.call_tool("list_recent_jobs", {})
            bad = await client.call_tool("list_recent_jobs", {"limit": 0})
    data = running.structured_content
    assert data is not None
    assert data["done"] is False
    assert data["request_id"].startswith("microsoft-mai-image-2-5_")
    assert f"get_image_job with request_id {data['request_id']}" in data["next_step"]
    assert failed.is_error
    assert failed.structured_content is not None  # a job exists: say which, and what next
    assert failed.structured_content["status"] == "FAILED"
    assert failed.structured_content["request_id"].startswith("microsoft-mai-image-2-5_")
    assert "rephrase" in failed.structured_content["next_step"]
    assert listed.structured_content is not None
    jobs = listed.structured_content["jobs"]
    assert [j["request_id"] for j in jobs] == [
        failed.structured_content["request_id"],
        data["request_id"],
    ]
    assert jobs[1]["prompt"] == "slow"
    assert data["request_id"] in _text(listed)
    assert bad.is_error
    assert "limit:" in _text(bad)


async def test_argument_errors_in_the_servers_words() -> None:
    with _emulator(0.2) as emu:
        async with Client(create_server(_settings(emu))) as client:
            missing = await client.call_tool("generate_image", {})
            wrong = await client.call_tool(
                "edit_image", {"prompt": "x", "image": "", "aspect_ratio": "21:9"}
            )
            rid = await client.call_tool("get_image_job", {"request_id": ""})
        assert emu.control.stats().jobs_created == 0
    for result in (missing, wrong, rid):
        assert result.is_error
        text = _text(result)
        assert text.startswith("Invalid arguments, nothing was sent. Fix and call again:")
        assert "pydantic.dev" not in text
        assert "validation error" not in text
    assert "prompt: Field required" in _text(missing)
    assert "aspect_ratio:" in _text(wrong)
    assert "image:" in _text(wrong)
    assert "request_id:" in _text(rid)


async def test_only_served_capabilities_are_advertised() -> None:
    for mode in ("auto", "legacy"):
        async with Client(create_server(Settings()), mode=mode) as client:
            caps = client.server_capabilities
            assert caps is not None
            assert caps.tools is not None
            assert caps.prompts is None, mode
            # One resource: the gallery app (MCP Apps); no templates, no subscriptions.
            assert caps.resources is not None, mode
            assert not caps.resources.subscribe, mode
            assert [r.uri for r in (await client.list_resources()).resources] == [
                "ui://mai-image/gallery.html"
            ], mode
            assert not (await client.list_resource_templates()).resource_templates, mode
            assert caps.logging is None, mode
            if mode == "auto":
                assert caps.extensions is not None
                assert "io.modelcontextprotocol/tasks" in caps.extensions


# --------------------------------------------------------------------------- previews


def _png(side: int = 64) -> bytes:
    out = io.BytesIO()
    PILImage.new("RGB", (side, side), (200, 30, 30)).save(out, "PNG")
    return out.getvalue()


PNG = _png()


def _bomb_png(width: int = 12000, height: int = 12000) -> bytes:
    """A tiny PNG whose header declares a huge image (the CRC is valid)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return PNG[:12] + chunk + struct.pack(">I", zlib.crc32(chunk)) + PNG[33:]


def _data_uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode()


def test_declared_pixels_are_checked_before_decoding() -> None:
    with pytest.raises(PreviewRefused, match="144000000 pixels"):  # Pillow's words: refused
        _check_declared_size(_bomb_png())
    with pytest.raises(PreviewRefused, match="7000x7000"):
        _check_declared_size(_bomb_png(7000, 7000))  # under Pillow's own limit, over ours
    _check_declared_size(PNG)
    assert thumbnail(PNG, 160).startswith(b"\xff\xd8")


async def test_a_preview_failure_never_fails_a_finished_job() -> None:
    result = ImageResult(
        request_id=RID,
        image_urls=[_data_uri(_bomb_png()), _data_uri(b"not an image"), _data_uri(PNG)],
        media_type="image/png",
    )
    answered = await answer(Done(result), Settings(preview="thumbnail"))
    assert not answered.is_error
    assert answered.structured_content is not None
    assert answered.structured_content["done"] is True
    images = [c for c in answered.content if c.type == "image"]
    assert len(images) == 1  # only the real image became a preview


class _MediaHost:
    """A loopback image host: /slow/<n> answers once ``together`` requests are in flight (or
    after ``hold`` seconds if they never are), /fast at once, /hang never."""

    def __init__(self, together: int = 1, hold: float = 10.0) -> None:
        self.in_flight = 0
        self.peak = 0
        self.together = together
        self.hold = hold
        self.all_in: asyncio.Event | None = None  # made on the server's own event loop

    def app(self) -> Starlette:
        async def slow(request: Request) -> Response:
            if self.all_in is None:
                self.all_in = asyncio.Event()
            self.in_flight += 1
            self.peak = max(self.peak, self.in_flight)
            if self.in_flight >= self.together:
                self.all_in.set()
            try:
                # Fetched one after another, each waits out ``hold`` and the peak stays 1.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.all_in.wait(), self.hold)
            finally:
                self.in_flight -= 1
            return Response(PNG, media_type="image/png")

        async def fast(request: Request) -> Response:
            return Response(PNG, media_type="image/png")

        async def hang(request: Request) -> Response:
            await asyncio.sleep(3600)
            return Response(b"")

        return Starlette(
            routes=[Route("/slow/{n}", slow), Route("/fast", fast), Route("/hang", hang)]
        )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def _serve(app: Any, port: int | None = None) -> Iterator[str]:
    """Serve an ASGI app on a loopback port from a thread (uvicorn runs its lifespan)."""
    port = port or _free_port()
    # A handler still running at shutdown (/hang) is cancelled after a short grace, instead of
    # uvicorn waiting for it forever and the test for the thread.
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="error", timeout_graceful_shutdown=1
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(15)


async def test_previews_are_fetched_together_and_late_ones_dropped() -> None:
    host = _MediaHost(together=4)
    with _serve(host.app()) as origin:
        made = await previews(
            [f"{origin}/slow/{i}" for i in range(4)], side=160, budget=60, request_id=RID
        )
        assert len(made) == 4
        assert host.peak == 4  # all four at once, not one after another
        late = await previews(
            [f"{origin}/hang", f"{origin}/fast"], side=160, budget=2, request_id=RID
        )
    assert len(late) == 1  # the hanging one is dropped when the budget ends, not waited for


async def test_previews_of_saved_images_are_read_from_disk_not_fetched_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    saved = tmp_path / f"{RID}_1.png"
    PILImage.new("RGB", (64, 48), (10, 200, 30)).save(saved)

    def no_client(*args: object, **kwargs: object) -> None:
        raise AssertionError("no HTTP client is needed when every image is on disk")

    # The URL would hang: only the saved file can have made the preview.
    with _serve(_MediaHost().app()) as origin:
        monkeypatch.setattr("mcp_server._previews.httpx.AsyncClient", no_client)
        made = await previews([f"{origin}/hang"], side=32, budget=5, request_id=RID, saved=[saved])
    assert len(made) == 1
    with PILImage.open(io.BytesIO(base64.b64decode(made[0].data))) as thumb:
        assert max(thumb.size) == 32


async def test_no_time_left_means_no_previews_and_no_fetch() -> None:
    host = _MediaHost()
    with _serve(host.app()) as origin:
        made = await previews([f"{origin}/slow/1"], side=32, budget=0, request_id=RID)
    assert made == []
    assert host.peak == 0  # nothing was even asked for


def test_previews_get_only_what_is_left_of_max_wait() -> None:
    settings = Settings(api_key=KEY, max_wait=2.0)
    assert preview_budget(settings, started=time.monotonic() - 10) == 0  # no floor past it
    assert 0 < preview_budget(settings, started=time.monotonic() - 1.5) <= 0.5
    assert preview_budget(Settings(api_key=KEY, max_wait=600), started=None) == 10.0


# --------------------------------------------------------------------------- HTTP (2025 era)

_ACCEPT = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
_LEGACY = "2025-11-25"


def _rpc(id_: int | None, method: str, params: dict[str, Any] | None = None) -> bytes:
    body: dict[str, Any] = {"jsonrpc": "2.0", "method": method, "params": params or {}}
    if id_ is not None:
        body["id"] = id_
    return json.dumps(body).encode()


def _open_session(http: httpx.Client, url: str) -> dict[str, str]:
    init = {
        "protocolVersion": _LEGACY,
        "capabilities": {},
        "clientInfo": {"name": "raw", "version": "1"},
    }
    response = http.post(url, content=_rpc(1, "initialize", init), headers=_ACCEPT)
    assert response.status_code == 200, response.text
    headers = {
        **_ACCEPT,
        "mcp-session-id": response.headers["mcp-session-id"],
        "mcp-protocol-version": _LEGACY,
    }
    http.post(url, content=_rpc(None, "notifications/initialized"), headers=headers)
    return headers


def _sse_events(lines: Iterator[str]) -> Iterator[dict[str, str]]:
    event: dict[str, str] = {}
    for line in lines:
        if not line:
            if event:
                yield event
            event = {}
            continue
        name, _, value = line.partition(":")
        event[name] = value.lstrip()


def _start_call(http: httpx.Client, url: str, headers: dict[str, str], prompt: str) -> str | None:
    """POST a tools/call, read up to the priming event (if any), then drop the connection."""
    body = _rpc(2, "tools/call", {"name": "generate_image", "arguments": {"prompt": prompt}})
    with http.stream("POST", url, content=body, headers=headers) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        if "text/event-stream" not in response.headers["content-type"]:
            return None
        for event in _sse_events(response.iter_lines()):
            return event.get("id")
    return None


def test_a_dropped_stream_is_resumed_with_its_answer() -> None:
    with _emulator(1.0) as emu:
        events = MemoryEventStore()
        settings = _settings(emu)
        port = _free_port()
        server = create_server(settings, event_store=events)
        app = http_app(server, settings, port=port, event_store=events)
        with _serve(app, port) as origin, httpx.Client(timeout=30) as http:
            app_url = f"{origin}/mcp"
            headers = _open_session(http, app_url)
            last = _start_call(http, app_url, headers, "resume me")
            assert last is not None  # the priming event: resumable
            time.sleep(1.5)  # the job ends while nobody listens
            resume = {**headers, "Accept": "text/event-stream", "Last-Event-ID": last}
            answer_data = None
            with http.stream("GET", app_url, headers=resume) as response:
                for event in _sse_events(response.iter_lines()):
                    data = json.loads(event["data"]) if event.get("data") else {}
                    if data.get("id") == 2:
                        answer_data = data
                        break
            # Another session cannot read this session's events with the same event id.
            other = _open_session(http, app_url)
            stolen = http.get(
                app_url, headers={**other, "Accept": "text/event-stream", "Last-Event-ID": last}
            )
    assert answer_data is not None
    result = answer_data["result"]
    assert result["structuredContent"]["done"] is True
    assert result["content"][0]["text"].startswith(f"{emu.base_url}/files/")
    assert '"id":2' not in stolen.text.replace(" ", "")
    assert emu.control.stats().jobs_created == 1


def test_polling_stops_when_the_http_client_disappears() -> None:
    with _emulator(600.0) as emu:
        events = MemoryEventStore(grace=0.5)
        settings = _settings(emu)
        port = _free_port()
        server = create_server(settings, event_store=events)
        app = http_app(server, settings, port=port, event_store=events)
        with _serve(app, port) as origin, httpx.Client(timeout=30) as http:
            url = f"{origin}/mcp"
            headers = _open_session(http, url)
            _start_call(http, url, headers, "nobody waits for me")
            # Once the grace (0.5 s) and a watch interval pass, nobody polls for nobody: a
            # quiet spell longer than the cold poller's widest gap (2 s) comes, however late a
            # busy machine lets it come; polling that never stops fails at the deadline.
            until_quiet(
                lambda: emu.control.stats().status_requests, "polling for nobody", spell=2.5
            )
            assert emu.control.stats().jobs_created == 1
