"""The 2025-11-25 flavour of MCP Tasks (VS Code Copilot, the TypeScript SDK 1.x), served
beside SEP-2663: negotiated by the handshake, the same stateless task id (the request id) and
the same job-book adoption.

The Python SDK's client checks a ``tools/call`` answer against ``CallToolResult`` on that
version, so these tests speak JSON-RPC over Streamable HTTP themselves, as such a client does;
``test_tasks_2025_typescript.py`` runs the TypeScript SDK's own client. Jobs run on a
:class:`ManualClock`: they end only when a test advances it.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from mcp.types import CallToolResult, TextContent

from mai_tools.emulator import ManualClock, RunningEmulator
from mcp_server import Settings, create_server
from mcp_server._http import http_app
from mcp_server._tasks import RELATED_TASK_META
from tests.support.emulators import held_emulator
from tests.support.fakes import KEY
from tests.support.serving import free_socket, serving

ROOT = Path(__file__).resolve().parents[2]
D = 30.0
VERSION = "2025-11-25"
TS_SDK = "@modelcontextprotocol/sdk@1.32.2"
"""The TypeScript SDK 1.x: its client speaks the 2025-11-25 tasks (the README's test command
installs it into .ci/node)."""


class RawClient:
    """A 2025-11-25 client over Streamable HTTP: the handshake, then JSON-RPC requests."""

    def __init__(self, http: httpx.AsyncClient, url: str) -> None:
        self._http = http
        self._url = url
        self._ids = itertools.count(1)
        self._headers = {
            "Content-Type": "application/json",
            "Accept": "application/json, text/event-stream",
        }
        self.initialized: dict[str, Any] = {}

    async def _post(self, message: dict[str, Any]) -> httpx.Response:
        return await self._http.post(self._url, json=message, headers=self._headers)

    async def start(self) -> None:
        capabilities: dict[str, Any] = {"tasks": {"list": {}, "cancel": {}}}
        params = {
            "protocolVersion": VERSION,
            "capabilities": capabilities,
            "clientInfo": {"name": "raw-2025", "version": "1"},
        }
        response = await self._post(
            {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": params}
        )
        self._headers["mcp-session-id"] = response.headers["mcp-session-id"]
        self._headers["mcp-protocol-version"] = VERSION
        self.initialized = _answer(response)["result"]
        await self._post({"jsonrpc": "2.0", "method": "notifications/initialized"})

    async def request(self, method: str, **params: Any) -> dict[str, Any]:
        """The result of ``method``; an error answer raises :class:`RPCError`."""
        message = {"jsonrpc": "2.0", "id": next(self._ids), "method": method, "params": params}
        answer = _answer(await self._post(message))
        if "error" in answer:
            raise RPCError(answer["error"])
        result: dict[str, Any] = answer["result"]
        return result


class RPCError(Exception):
    def __init__(self, error: dict[str, Any]) -> None:
        super().__init__(f"{error.get('code')}: {error.get('message')}")
        self.error = error


def _answer(response: httpx.Response) -> dict[str, Any]:
    response.raise_for_status()
    if response.headers.get("content-type", "").startswith("application/json"):
        data: dict[str, Any] = response.json()
        return data
    answers = [
        json.loads(line[5:])
        for line in response.text.splitlines()
        if line.startswith("data:") and line[5:].strip()
    ]
    final = [a for a in answers if "id" in a and ("result" in a or "error" in a)]
    assert final, response.text
    last: dict[str, Any] = final[-1]
    return last


@pytest.fixture
def held() -> Iterator[tuple[RunningEmulator, ManualClock]]:
    with held_emulator(D, api_keys=(KEY,)) as held:
        yield held


@pytest.fixture
async def client(held: tuple[RunningEmulator, ManualClock]) -> AsyncIterator[RawClient]:
    emu, _ = held
    settings = Settings(api_key=KEY, base_url=emu.base_url, preview="off", max_wait=5)
    sock = free_socket()
    app = http_app(create_server(settings), settings, port=sock.getsockname()[1])
    with serving(app, sock) as origin:
        async with httpx.AsyncClient(timeout=60) as http:
            raw = RawClient(http, f"{origin}/mcp")
            await raw.start()
            yield raw


async def test_a_2025_11_25_client_sees_the_tasks_capability_and_task_support(
    client: RawClient,
) -> None:
    assert client.initialized["protocolVersion"] == VERSION
    assert client.initialized["capabilities"]["tasks"] == {
        "list": {},
        "cancel": {},
        "requests": {"tools": {"call": {}}},
    }
    tools = {t["name"]: t for t in (await client.request("tools/list"))["tools"]}
    for name in ("generate_image", "edit_image"):
        assert tools[name]["execution"] == {"taskSupport": "optional"}
    assert "execution" not in tools["get_image_job"]


async def test_a_task_at_once_then_its_status_then_its_result(
    client: RawClient, held: tuple[RunningEmulator, ManualClock]
) -> None:
    emu, clock = held
    args = {"prompt": "a task in the older flavour"}
    created = await client.request(
        "tools/call", name="generate_image", arguments=args, task={"ttl": 60_000}
    )
    task = created["task"]
    rid = task["taskId"]
    assert task["status"] == "working"
    assert isinstance(task["pollInterval"], int)
    assert isinstance(task["ttl"], int)
    working = await client.request("tasks/get", taskId=rid)
    listed = await client.request("tasks/list")
    clock.advance(D)
    done = await client.request("tasks/get", taskId=rid)
    result = await client.request("tasks/result", taskId=rid)
    with pytest.raises(RPCError, match="already ended"):
        await client.request("tasks/cancel", taskId=rid)
    assert working["status"] == "working"
    assert [t["taskId"] for t in listed["tasks"]] == [rid]
    assert done["status"] == "completed"
    final = CallToolResult.model_validate(result)
    assert not final.is_error
    assert final.structured_content is not None
    assert final.structured_content["request_id"] == rid
    assert final.structured_content["image_urls"]
    assert result["_meta"][RELATED_TASK_META] == {"taskId": rid}
    assert emu.control.stats().jobs_created == 1


async def test_an_identical_task_continues_an_undelivered_job(
    client: RawClient, held: tuple[RunningEmulator, ManualClock]
) -> None:
    emu, _ = held
    args = {"prompt": "asked twice, paid once"}
    first = await client.request("tools/call", name="generate_image", arguments=args, task={})
    again = await client.request("tools/call", name="generate_image", arguments=args, task={})
    assert again["task"]["taskId"] == first["task"]["taskId"]
    assert again["task"]["statusMessage"].startswith("continuing an earlier job")
    assert emu.control.stats().jobs_created == 1


async def test_tasks_result_waits_for_the_end(
    client: RawClient, held: tuple[RunningEmulator, ManualClock]
) -> None:
    _, clock = held
    created = await client.request(
        "tools/call", name="generate_image", arguments={"prompt": "awaited"}, task={}
    )
    rid = created["task"]["taskId"]
    results: list[dict[str, Any]] = []

    async def wait() -> None:
        results.append(await client.request("tasks/result", taskId=rid))

    async with anyio.create_task_group() as group:
        group.start_soon(wait)
        await anyio.sleep(0.2)
        assert results == []  # the job cannot have ended: its clock has not moved
        clock.advance(D)
    final = CallToolResult.model_validate(results[0])
    first = final.content[0]
    assert isinstance(first, TextContent)
    assert rid in first.text


async def test_invalid_arguments_and_unknown_task_ids_are_refused(client: RawClient) -> None:
    refused = await client.request(
        "tools/call", name="generate_image", arguments={"prompt": ""}, task={}
    )
    assert refused["isError"] is True
    assert "nothing was sent" in refused["content"][0]["text"]
    bad = "microsoft-mai-image-2-5_01a24f9b-34b9-74c4-b4b1-3dce59afc463"
    for method in ("tasks/get", "tasks/result", "tasks/cancel"):
        with pytest.raises(RPCError, match="Unknown task"):
            await client.request(method, taskId=bad)


async def test_a_call_without_a_task_field_is_the_waiting_call(client: RawClient) -> None:
    result = await client.request(
        "tools/call", name="generate_image", arguments={"prompt": "no task asked for"}
    )
    assert "task" not in result
    assert "still running" in result["content"][0]["text"]  # max_wait 5 s, the job takes 30


def _typescript_sdk() -> Path:
    sdk = ROOT / ".ci" / "node" / "node_modules" / "@modelcontextprotocol" / "sdk"
    if not (sdk / "package.json").exists():
        hint = f"the TypeScript SDK 1.x is not installed: npm install --prefix .ci/node {TS_SDK}"
        if os.environ.get("CI"):
            pytest.fail(f"CI runs the TypeScript client's test, and {hint} (the test command)")
        pytest.skip(hint)
    return sdk


def test_the_typescript_sdk_1x_client_gets_a_long_jobs_result_through_tasks(
    emulators: Any,
) -> None:
    emu = emulators(api_keys=(KEY,), min_duration=1.0, max_duration=1.0)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIXAZO_", "MAI_MCP_"))}
    env |= {
        "PIXAZO_API_KEY": KEY,
        "PIXAZO_BASE_URL": emu.base_url,
        "MAI_MCP_PREVIEW": "off",
        "PROMPT": "a lighthouse, asked for by TypeScript",
    }
    script = ROOT / "tests" / "mcp" / "clients" / "ts_tasks_2025.mjs"
    run = subprocess.run(
        ["node", str(script), str(_typescript_sdk()), sys.executable, "-m", "mcp_server"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    messages = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
    by_type: dict[str, list[dict[str, Any]]] = {}
    for message in messages:
        by_type.setdefault(message["type"], []).append(message)
    assert "error" not in by_type, by_type["error"]
    (created,) = by_type["taskCreated"]
    rid = created["task"]["taskId"]
    (result,) = by_type["result"]
    final = CallToolResult.model_validate(result["result"])
    assert not final.is_error
    assert final.structured_content is not None
    assert final.structured_content["request_id"] == rid
    assert final.structured_content["image_urls"]
    assert by_type["listed"][0]["tasks"] == [rid]
    assert by_type["got"][0]["task"]["status"] == "completed"
    assert emu.control.stats().jobs_created == 1


async def test_a_costly_task_from_a_client_that_cannot_confirm_is_refused_unsent(
    held: tuple[RunningEmulator, ManualClock],
) -> None:
    emu, _ = held
    settings = Settings(
        api_key=KEY, base_url=emu.base_url, preview="off", max_wait=5, confirm_above=1
    )
    sock = free_socket()
    app = http_app(create_server(settings), settings, port=sock.getsockname()[1])
    with serving(app, sock) as origin:
        async with httpx.AsyncClient(timeout=60) as http:
            raw = RawClient(http, f"{origin}/mcp")  # declares no elicitation capability
            await raw.start()
            refused = await raw.request(
                "tools/call",
                name="generate_image",
                arguments={"prompt": "two costly images", "num_images": 2},
                task={},
            )
            allowed = await raw.request(
                "tools/call", name="generate_image", arguments={"prompt": "one image"}, task={}
            )
    assert refused["isError"] is True
    assert "task" not in refused
    assert "Not sent" in refused["content"][0]["text"]
    assert allowed["task"]["status"] == "working"
    assert emu.control.stats().jobs_created == 1  # the one-image task only
