"""The MCP server: in-process tool calls, schemas, errors, progress, previews, confinement,
cancellation, stdio and HTTP subprocesses, and interop with clients nobody here wrote."""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.types import CallToolResult, ImageContent, ResourceLink, TextContent
from PIL import Image

from mai_tools import GenerateRequest
from mai_tools._duration_cache import cache_file
from mai_tools.emulator import EmulatorConfig, RunningEmulator, run_emulator
from mcp_server import Settings, create_server
from mcp_server._arguments import ARGUMENTS
from tests.support.fakes import KEY
from tests.support.identity import inspector_or_skip
from tests.support.serving import stdio_call
from tests.support.waiting import aeventually, auntil_quiet

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def server_emu() -> Iterator[RunningEmulator]:
    with run_emulator(EmulatorConfig(api_keys=(KEY,), min_duration=0.2, max_duration=0.4)) as emu:
        yield emu


@pytest.fixture
def emu(server_emu: RunningEmulator) -> RunningEmulator:
    server_emu.control.reset()
    return server_emu


def _settings(emu: RunningEmulator, **kw: Any) -> Settings:
    return Settings(api_key=KEY, base_url=emu.base_url, **kw)


def _text(result: CallToolResult) -> str:
    first = result.content[0]
    assert isinstance(first, TextContent)
    return first.text


async def test_tools_schemas_and_annotations(emu: RunningEmulator) -> None:
    async with Client(create_server(_settings(emu))) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
    assert set(tools) == {
        "generate_image",
        "edit_image",
        "get_image_job",
        "view_image",
        "list_recent_jobs",
    }
    core = GenerateRequest.model_json_schema()["properties"]
    gen = tools["generate_image"].input_schema["properties"]
    for field in ("prompt", "num_images", "aspect_ratio", "output_format"):
        assert gen[field]["description"] == core[field]["description"]
    assert gen["prompt"]["minLength"] == 3
    assert gen["prompt"]["maxLength"] == 5000
    assert gen["num_images"]["minimum"] == 1
    assert gen["num_images"]["maximum"] == 4
    assert "21:9" in gen["aspect_ratio"]["enum"]
    edit = tools["edit_image"].input_schema["properties"]
    assert "21:9" not in edit["aspect_ratio"]["enum"]
    assert "image" in tools["edit_image"].input_schema["required"]
    for name, tool in tools.items():
        assert "ctx" not in tool.input_schema["properties"]
        # view_image answers with an image, not with the job tools' structured answer
        assert (tool.output_schema is None) is (name == "view_image"), name
        assert tool.annotations is not None
        assert tool.annotations.open_world_hint is True
        assert tool.annotations.destructive_hint is False
        reads = name in ("get_image_job", "view_image", "list_recent_jobs")
        assert tool.annotations.read_only_hint is reads, name
        assert tool.annotations.idempotent_hint is reads, name
        # Short, no docstring indentation, and it says when to use which tool.
        assert tool.description is not None
        assert "\n" not in tool.description
        assert "  " not in tool.description
        assert len(tool.description) < 400
    for name in ("generate_image", "edit_image"):
        assert "get_image_job" in (tools[name].description or "")
    for name in ("generate_image", "edit_image", "get_image_job"):
        assert tools[name].output_schema == tools["generate_image"].output_schema
    # The server checks arguments with its own models: they must be the tools' schemas.
    for name, model in ARGUMENTS.items():
        schema = model.model_json_schema()
        assert schema["properties"] == tools[name].input_schema["properties"], name
        assert schema.get("required", []) == tools[name].input_schema.get("required", []), name


async def test_generate_result_shape_and_progress(emu: RunningEmulator) -> None:
    seen: list[tuple[float, str | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append((progress, message))

    async with Client(create_server(_settings(emu))) as client:
        result = await client.call_tool(
            "generate_image",
            {"prompt": "a tiny robot", "num_images": 2, "aspect_ratio": "16:9"},
            progress_callback=on_progress,
        )
    assert not result.is_error
    lines = _text(result).splitlines()
    assert lines[0].startswith(f"{emu.base_url}/files/")
    assert lines[2].startswith("request_id: ")
    # No image links by default: LangChain's adapters would send the full images to the model.
    assert not [c for c in result.content if isinstance(c, ResourceLink)]
    previews = [c for c in result.content if isinstance(c, ImageContent)]
    assert len(previews) == 2
    for preview in previews:
        with Image.open(__import__("io").BytesIO(base64.b64decode(preview.data))) as image:
            assert max(image.size) <= 384
    assert len(json.dumps(result.model_dump(mode="json", by_alias=True))) < 1024 * 1024
    structured = result.structured_content
    assert structured is not None
    assert structured["status"] == "COMPLETED"
    assert structured["done"] is True
    assert structured["image_urls"] == lines[:2]
    assert structured["request_id"] == lines[2].removeprefix("request_id: ")
    assert "next_step" in structured
    messages = [m for _, m in seen if m]
    assert any("QUEUED" in m for m in messages)
    assert any("COMPLETED" in m for m in messages)
    values = [v for v, _ in seen]
    assert values == sorted(values)


async def test_resource_links_when_asked(emu: RunningEmulator) -> None:
    settings = _settings(emu, resource_links=True, preview="off")
    async with Client(create_server(settings)) as client:
        result = await client.call_tool("generate_image", {"prompt": "linked", "num_images": 2})
    lines = _text(result).splitlines()
    links = [c for c in result.content if isinstance(c, ResourceLink)]
    assert [str(link.uri) for link in links] == lines[:2]
    assert all(link.mime_type == "image/png" for link in links)


async def test_preview_modes(emu: RunningEmulator, tmp_path: Path) -> None:
    async with Client(create_server(_settings(emu, preview="off"))) as client:
        result = await client.call_tool("generate_image", {"prompt": "no previews"})
    assert not [c for c in result.content if isinstance(c, ImageContent)]
    async with Client(
        create_server(_settings(emu, preview="thumbnail", output_dir=tmp_path))
    ) as client:
        result = await client.call_tool(
            "generate_image", {"prompt": "four thumbs", "num_images": 4}
        )
    previews = [c for c in result.content if isinstance(c, ImageContent)]
    assert len(previews) == 4
    assert sum(len(p.data) for p in previews) < 600 * 1024
    assert result.structured_content is not None
    saved = result.structured_content["saved_paths"]
    assert len(saved) == 4
    assert all(Path(p).parent == tmp_path for p in saved)
    assert all(f"saved: {p}" in _text(result) for p in saved)


async def test_errors_are_is_error_results(emu: RunningEmulator) -> None:
    async with Client(create_server(_settings(emu))) as client:
        cases = {
            "prompt": await client.call_tool("generate_image", {"prompt": "hi"}),
            "aspect_ratio": await client.call_tool(
                "edit_image",
                {"prompt": "fix", "image": "https://x.test/a.png", "aspect_ratio": "21:9"},
            ),
            "Rephrase": await client.call_tool("generate_image", {"prompt": "a [fail] cat"}),
            "not charged": await client.call_tool("generate_image", {"prompt": "an [error] cat"}),
            "404": await client.call_tool(
                "get_image_job", {"request_id": "microsoft-mai-image-2-5_nope"}
            ),
            "request id": await client.call_tool("get_image_job", {"request_id": "../../x"}),
        }
    for expected, result in cases.items():
        assert result.is_error, expected
        assert expected in _text(result), _text(result)
        assert KEY not in _text(result)


async def test_no_key_still_lists_and_explains(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PIXAZO_API_KEY", raising=False)
    async with Client(create_server(Settings())) as client:
        assert len((await client.list_tools()).tools) == 5
        result = await client.call_tool("generate_image", {"prompt": "a cat"})
    assert result.is_error
    assert "PIXAZO_API_KEY" in _text(result)
    assert "--emulator" in _text(result)


async def test_wait_cap_then_get_image_job() -> None:
    with run_emulator(EmulatorConfig(api_keys=(KEY,), min_duration=1.5, max_duration=1.5)) as slow:
        settings = Settings(api_key=KEY, base_url=slow.base_url, max_wait=0.4, preview="off")
        async with Client(create_server(settings)) as client:
            first = await client.call_tool("generate_image", {"prompt": "slow job"})
            assert not first.is_error
            assert "get_image_job" in _text(first)
            assert first.structured_content is not None
            assert first.structured_content["done"] is False
            rid = first.structured_content["request_id"]
            result = first
            for _ in range(10):
                result = await client.call_tool("get_image_job", {"request_id": rid})
                assert result.structured_content is not None
                if result.structured_content["done"]:
                    break
            assert result.structured_content is not None
            assert result.structured_content["status"] == "COMPLETED"
            assert slow.control.stats().jobs_created == 1


async def test_heartbeat_progress_on_long_waits() -> None:
    with run_emulator(EmulatorConfig(api_keys=(KEY,), min_duration=1.2, max_duration=1.2)) as slow:
        settings = Settings(api_key=KEY, base_url=slow.base_url, heartbeat=0.2, preview="off")
        seen: list[float] = []

        async def on_progress(progress: float, total: float | None, message: str | None) -> None:
            seen.append(progress)

        async with Client(create_server(settings)) as client:
            await client.call_tool(
                "generate_image", {"prompt": "beat"}, progress_callback=on_progress
            )
    assert len(seen) >= 5  # 3 status changes alone would give 3


async def test_cancellation_stops_waiting(emu: RunningEmulator) -> None:
    with run_emulator(EmulatorConfig(api_keys=(KEY,), min_duration=600, max_duration=600)) as slow:
        settings = Settings(api_key=KEY, base_url=slow.base_url, preview="off")
        async with Client(create_server(settings)) as client:
            with anyio.move_on_after(1.0):
                await client.call_tool("generate_image", {"prompt": "never mind"})
            # No more polling: a quiet spell longer than the cold poller's widest gap (2 s).
            await auntil_quiet(lambda: slow.control.stats().status_requests, "polling", spell=2.5)
            assert slow.control.stats().jobs_created == 1
            (rid,) = slow.control.stats().polls
            async with httpx.AsyncClient() as http:
                status = await http.get(
                    f"{slow.base_url}/v2/requests/status/{rid}",
                    headers={"Ocp-Apim-Subscription-Key": KEY},
                )
            assert status.json()["status"] in ("QUEUED", "PROCESSING")  # still retrievable


def _png(path: Path) -> Path:
    Image.new("RGB", (60, 30), (5, 5, 5)).save(path)
    return path


async def test_path_confinement(emu: RunningEmulator, tmp_path: Path) -> None:
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    good = _png(allowed / "ok.png")
    outside = _png(tmp_path / "outside.png")
    (allowed / "escape.png").symlink_to(outside)
    secret = tmp_path / "id_rsa"
    secret.write_text("PRIVATE KEY")
    (allowed / "id_rsa").symlink_to(secret)
    text_file = allowed / "notes.png"
    text_file.write_text("not an image")
    async with Client(create_server(_settings(emu, allowed_dirs=(allowed,), preview="off"))) as c:
        ok = await c.call_tool("edit_image", {"prompt": "brighten", "image": str(good)})
        assert not ok.is_error, _text(ok)
        for bad, why in [
            (str(outside), "outside the allowed"),
            (str(allowed / ".." / "outside.png"), "outside the allowed"),
            (str(allowed / "escape.png"), "outside the allowed"),
            (str(allowed / "id_rsa"), "outside the allowed"),
            (str(text_file), "not a PNG"),
            ("file:///etc/passwd", "scheme"),
        ]:
            result = await c.call_tool("edit_image", {"prompt": "brighten", "image": bad})
            assert result.is_error, bad
            assert why in _text(result), _text(result)
    async with Client(create_server(_settings(emu))) as c:
        result = await c.call_tool("edit_image", {"prompt": "brighten", "image": str(good)})
    assert result.is_error
    assert "MAI_MCP_ALLOWED_DIRS" in _text(result)


async def test_tools_list_answers_with_fifty_calls_in_flight() -> None:
    with run_emulator(EmulatorConfig(api_keys=(KEY,), min_duration=60, max_duration=60)) as slow:
        settings = Settings(api_key=KEY, base_url=slow.base_url, preview="off")
        async with Client(create_server(settings)) as client, anyio.create_task_group() as group:
            for i in range(50):
                group.start_soon(client.call_tool, "generate_image", {"prompt": f"busy {i}"})
            await aeventually(lambda: slow.control.stats().jobs_created == 50, "50 jobs")
            start = time.monotonic()
            tools = await client.list_tools()
            latency = time.monotonic() - start
            group.cancel_scope.cancel()
    assert len(tools.tools) == 5
    # The event loop is never blocked by waiting jobs: fifty waits that each blocked it for a
    # poll gap would hold the answer for many seconds; a busy machine costs far less.
    assert latency < 10


# --------------------------------------------------------------------------- subprocesses


def _env(emu: RunningEmulator, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIXAZO_", "MAI_MCP_"))}
    env.update({"PIXAZO_API_KEY": KEY, "PIXAZO_BASE_URL": emu.base_url, **extra})
    return env


async def test_stdio_subprocess(emu: RunningEmulator, tmp_path: Path) -> None:
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "mcp_server"], cwd=str(ROOT), env=_env(emu)
    )
    with (tmp_path / "stderr.log").open("w+") as errlog:
        async with Client(stdio_client(params, errlog=errlog)) as client:
            assert len((await client.list_tools()).tools) == 5
            result = await client.call_tool("generate_image", {"prompt": "over stdio"})
        errlog.seek(0)
        stderr = errlog.read()
    assert not result.is_error
    assert _text(result).startswith(f"{emu.base_url}/files/")
    # The default log level is WARNING: a client's log file does not get a line per poll, nor
    # one per job, but it gets the start line (mcp_server._logs), with the gateway's host only.
    assert "HTTP Request" not in stderr
    assert "Processing request" not in stderr
    assert "job finished" not in stderr
    (start,) = [line for line in stderr.splitlines() if "mcp_server.start" in line]
    assert " INFO mcp_server.start: mai-image-mcp " in start
    assert "serving stdio at stdin/stdout; auth: none (stdio" in start
    assert f"gateway: {emu.base_url.removeprefix('http://')};" in start
    assert KEY not in stderr


async def test_stdio_log_level_flag(emu: RunningEmulator, tmp_path: Path) -> None:
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "mcp_server", "--log-level", "info"],
        cwd=str(ROOT),
        env=_env(emu),
    )
    prompt = {"prompt": "chatty over stdio"}
    result, stderr = await stdio_call(params, "generate_image", prompt, tmp_path / "err.log")
    assert not result.is_error
    # INFO: a line per job event (mcp_server._logs.JobLog), each on one line; the per-poll
    # lines of httpx and the SDK's per-request lines are kept for DEBUG.
    events = [line for line in stderr.splitlines() if " INFO mcp_server.jobs: job " in line]
    assert [line.split(": job ")[1].split(":")[0] for line in events] == [
        "intent",
        "submitted",
        "finished",
    ]
    assert "principal=local tool=generate_image request_id=microsoft-mai-image" in events[-1]
    assert "status=COMPLETED" in events[-1]
    assert "images=1" in events[-1]
    assert "HTTP Request" not in stderr
    assert "Processing request" not in stderr
    assert KEY not in stderr


async def test_stdio_with_emulator_flag_needs_no_key() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIXAZO_", "MAI_MCP_"))}
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "mcp_server", "--emulator"], cwd=str(ROOT), env=env
    )
    async with Client(params) as client:
        result = await client.call_tool("generate_image", {"prompt": "offline over stdio"})
    assert not result.is_error
    assert "request_id: microsoft-mai-image-2-5_" in _text(result)
    # The command remembers job durations, under one name for its ever-moving emulator.
    saved = json.loads(cache_file().read_text(encoding="utf-8"))["gateways"]
    assert len(saved["emulator"]["generate"]) == 1


async def test_a_failed_save_still_returns_the_finished_job(
    emu: RunningEmulator, tmp_path: Path
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("the output directory cannot be created here")
    async with Client(create_server(_settings(emu, output_dir=blocker))) as client:
        result = await client.call_tool("generate_image", {"prompt": "done but not saved"})
    assert not result.is_error  # the job is done (and charged): never lose its URLs
    assert _text(result).startswith(f"{emu.base_url}/files/")
    assert "not saved to disk (Cannot create directory" in _text(result)
    assert result.structured_content is not None
    assert result.structured_content["saved_paths"] == []
    assert "Cannot create directory" in result.structured_content["save_error"]


async def test_learned_durations_survive_a_restart_when_asked(emu: RunningEmulator) -> None:
    cache_file().parent.mkdir(parents=True, exist_ok=True)
    seed = {"format": 1, "gateways": {emu.base_url: {"generate": [0.3] * 6}}}
    cache_file().write_text(json.dumps(seed), encoding="utf-8")
    async with Client(create_server(_settings(emu))) as client:  # embedded: off by default
        assert not (await client.call_tool("generate_image", {"prompt": "not kept"})).is_error
    assert json.loads(cache_file().read_text(encoding="utf-8")) == seed
    async with Client(create_server(_settings(emu, remember_durations=True))) as client:
        assert not (await client.call_tool("generate_image", {"prompt": "kept"})).is_error
    saved = json.loads(cache_file().read_text(encoding="utf-8"))["gateways"][emu.base_url]
    assert len(saved["generate"]) == 7  # the six it started from, and this job


async def test_learned_durations_are_saved_now_and_then_and_when_the_server_stops(
    emu: RunningEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A busy server finishes many jobs a second: one file write per job was wasted work."""
    from mai_tools import _duration_cache

    writes: list[int] = []
    real_store = _duration_cache.store

    def counting_store(durations: Any, key: str) -> None:
        writes.append(durations.count("generate"))
        real_store(durations, key)

    monkeypatch.setattr(_duration_cache, "store", counting_store)
    async with Client(create_server(_settings(emu, remember_durations=True))) as client:
        for n in range(4):
            assert not (await client.call_tool("generate_image", {"prompt": f"job {n}"})).is_error
        assert len(writes) == 1  # the first job's, then none within STORE_EVERY
    assert len(writes) == 2  # and the last one when the server stopped, with all four jobs
    assert writes[-1] == writes[0] + 3


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def http_server(emu: RunningEmulator) -> Iterator[str]:
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "mcp_server", "--transport", "streamable-http", "--port", str(port)],
        cwd=ROOT,
        env=_env(emu),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}/mcp"
    deadline = time.monotonic() + 30
    try:
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if proc.poll() is not None:
                    raise AssertionError(
                        proc.stderr.read().decode() if proc.stderr else ""
                    ) from None
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.communicate(timeout=10)  # also closes the stderr pipe


async def test_streamable_http_subprocess(http_server: str, emu: RunningEmulator) -> None:
    async with Client(http_server) as client:
        assert len((await client.list_tools()).tools) == 5
        result = await client.call_tool("generate_image", {"prompt": "over http"})
    assert not result.is_error
    assert emu.control.stats().jobs_created == 1


async def test_langchain_mcp_adapter_interop(emu: RunningEmulator) -> None:
    pytest.importorskip("fastmcp")
    from fastmcp.client.transports import StdioTransport
    from langchain.mcp import MCPAdapter
    from langchain_core.messages import ToolMessage

    transport = StdioTransport(
        command=sys.executable, args=["-m", "mcp_server"], cwd=str(ROOT), env=_env(emu)
    )
    async with MCPAdapter(transport) as adapter:
        tools = {t.name: t for t in await adapter.list_tools()}
        message = await tools["generate_image"].ainvoke(
            {
                "type": "tool_call",
                "id": "c1",
                "name": "generate_image",
                "args": {"prompt": "via langchain"},
            }
        )
    assert isinstance(message, ToolMessage)
    assert message.status == "success"
    blocks = message.content
    assert isinstance(blocks, list)
    text = next(b for b in blocks if isinstance(b, dict) and b.get("type") == "text")
    assert str(text["text"]).startswith(f"{emu.base_url}/files/")
    # No image links by default: nothing the model provider would fetch in full size.
    assert not [b for b in blocks if isinstance(b, dict) and b.get("url")]
    assert [b for b in blocks if isinstance(b, dict) and b.get("type") == "image"]  # previews


def test_mcp_inspector_cli_lists_calls_and_strict(emu: RunningEmulator) -> None:
    inspector = inspector_or_skip()
    base = [inspector, "--cli", sys.executable, "-m", "mcp_server"]
    env = {**_env(emu)}
    env_args = [
        arg for k in ("PIXAZO_API_KEY", "PIXAZO_BASE_URL") for arg in ("-e", f"{k}={env[k]}")
    ]
    listed = subprocess.run(
        [*base, *env_args, "--method", "tools/list"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert listed.returncode == 0, listed.stderr
    names = {t["name"] for t in json.loads(listed.stdout)["tools"]}
    assert names == {
        "generate_image",
        "edit_image",
        "get_image_job",
        "view_image",
        "list_recent_jobs",
    }
    strict = subprocess.run(
        [*base, *env_args, "--strict", "--method", "tools/list"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert strict.returncode == 0, strict.stdout + strict.stderr
    called = subprocess.run(
        [
            *base,
            *env_args,
            "--method",
            "tools/call",
            "--tool-name",
            "generate_image",
            "--tool-arg",
            "prompt=from the inspector",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert called.returncode == 0, called.stderr
    payload = json.loads(called.stdout)
    assert payload.get("isError") in (None, False)
    assert payload["structuredContent"]["status"] == "COMPLETED"


def test_mcp_inspector_sees_the_gallery_app(emu: RunningEmulator) -> None:
    inspector = inspector_or_skip()
    env = _env(emu, MAI_MCP_RESOURCE_LINKS="true")
    env_args = [
        arg
        for k in ("PIXAZO_API_KEY", "PIXAZO_BASE_URL", "MAI_MCP_RESOURCE_LINKS")
        for arg in ("-e", f"{k}={env[k]}")
    ]
    base = [inspector, "--cli", sys.executable, "-m", "mcp_server", *env_args]

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*base, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
        )

    # The Inspector's app check: one NDJSON line per tool, the resource read and checked.
    listed = run("--method", "tools/list", "--app-info")
    assert listed.returncode == 0, listed.stderr
    apps = {a["toolName"]: a for a in map(json.loads, listed.stdout.splitlines())}
    assert {name for name, a in apps.items() if a["hasApp"]} == {
        "generate_image",
        "edit_image",
        "get_image_job",
    }
    gallery = apps["generate_image"]
    assert gallery["resourceUri"] == "ui://mai-image/gallery.html"
    assert gallery["resourceMimeType"] == "text/html;profile=mcp-app"
    assert emu.base_url in gallery["csp"]["resourceDomains"]
    # A client that declares Apps gets no resource_link beside the app, whatever the setting.
    called = run(
        "--advertise-apps",
        "--method",
        "tools/call",
        "--tool-name",
        "generate_image",
        "--tool-arg",
        "prompt=for the gallery",
    )
    assert called.returncode == 0, called.stderr
    content = json.loads(called.stdout)["content"]
    assert content[0]["type"] == "text"
    assert not [c for c in content if c["type"] == "resource_link"]


def test_settings_from_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MAI_MCP_MAX_WAIT", "12.5")
    monkeypatch.setenv("MAI_MCP_PREVIEW", "thumbnail")
    monkeypatch.setenv("MAI_MCP_OUTPUT_DIR", str(tmp_path))
    monkeypatch.setenv("MAI_MCP_ALLOWED_DIRS", os.pathsep.join([str(tmp_path), "/data"]))
    monkeypatch.setenv("PIXAZO_API_KEY", KEY)
    settings = Settings.from_env()
    assert settings.max_wait == 12.5
    assert settings.preview == "thumbnail"
    assert settings.output_dir == tmp_path
    assert settings.allowed_dirs == (tmp_path, Path("/data"))
    assert KEY not in repr(settings)
    assert settings.log_level == "WARNING"
    monkeypatch.setenv("MAI_MCP_LOG_LEVEL", "debug")
    assert Settings.from_env().log_level == "DEBUG"
    monkeypatch.setenv("MAI_MCP_LOG_LEVEL", "loud")
    with pytest.raises(ValueError, match="MAI_MCP_LOG_LEVEL"):
        Settings.from_env()
    monkeypatch.setenv("MAI_MCP_LOG_LEVEL", "error")
    monkeypatch.setenv("MAI_MCP_PREVIEW", "huge")
    with pytest.raises(ValueError, match="MAI_MCP_PREVIEW"):
        Settings.from_env()
