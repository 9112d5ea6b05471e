"""MCP Tasks (SEP-2663): a task at once for clients that opt in, the same final result as a
call, stateless task ids, clear errors; and clients that did not opt in keep the call."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import httpx
import mcp_types
import pytest
from mcp import Client, MCPError
from mcp.client.extension import ClaimContext, ClientExtension, ResultClaim
from mcp.client.session import ClientSession
from mcp.types import CallToolResult, ImageContent, TextContent
from pydantic import ConfigDict, Field

from mai_tools import AsyncMAIImageClient, PollPolicy
from mai_tools.emulator import EmulatorConfig, ManualClock, RunningEmulator, run_emulator
from mcp_server import Settings, create_server
from mcp_server._service import job_started_at
from mcp_server._tasks import TASKS_EXTENSION
from tests.support.fakes import BASE, KEY, RID, queued, status_body

ROOT = Path(__file__).resolve().parents[2]


class TaskCreated(mcp_types.Result):
    model_config = ConfigDict(populate_by_name=True, extra="allow")
    result_type: Literal["task"] = Field(alias="resultType")
    task_id: str = Field(alias="taskId")
    status: str
    created_at: str = Field(alias="createdAt")
    ttl_ms: int | None = Field(default=None, alias="ttlMs")
    poll_interval_ms: int | None = Field(default=None, alias="pollIntervalMs")


class TaskReport(mcp_types.Result):
    model_config = ConfigDict(populate_by_name=True, extra="allow")
    task_id: str = Field(alias="taskId")
    status: str
    status_message: str | None = Field(default=None, alias="statusMessage")
    poll_interval_ms: int | None = Field(default=None, alias="pollIntervalMs")
    result: dict[str, Any] | None = None


class TaskId(mcp_types.RequestParams):
    task_id: str = Field(serialization_alias="taskId")


async def send_task_request(
    session: ClientSession, method: Literal["tasks/get", "tasks/cancel"], task_id: str
) -> TaskReport:
    request = mcp_types.Request[TaskId, Literal["tasks/get", "tasks/cancel"]](
        method=method, params=TaskId(task_id=task_id)
    )
    return await session.send_request(request, TaskReport)


class TasksClient(ClientExtension):
    """A minimal SEP-2663 client: opts in, then polls tasks/get as the server advises."""

    identifier = TASKS_EXTENSION

    def __init__(self) -> None:
        self.created: list[TaskCreated] = []
        self.reports: list[TaskReport] = []

    def claims(self) -> tuple[ResultClaim[TaskCreated]]:
        return (ResultClaim(result_type="task", model=TaskCreated, resolve=self._resolve),)

    async def _resolve(self, created: TaskCreated, ctx: ClaimContext) -> CallToolResult:
        import anyio

        self.created.append(created)
        while True:
            report = await send_task_request(ctx.session, "tasks/get", created.task_id)
            self.reports.append(report)
            if report.status == "completed":
                assert report.result is not None
                return CallToolResult.model_validate(report.result)
            assert report.status == "working"
            assert report.poll_interval_ms is not None
            await anyio.sleep(min(report.poll_interval_ms / 1000, 0.2))


@pytest.fixture(scope="module")
def slow_emu() -> Iterator[RunningEmulator]:
    """Jobs that outlast the servers' max_wait (0.3 s) in these tests."""
    with run_emulator(EmulatorConfig(api_keys=(KEY,), min_duration=1.0, max_duration=1.0)) as emu:
        yield emu


@pytest.fixture
def emu(slow_emu: RunningEmulator) -> RunningEmulator:
    slow_emu.control.reset()
    return slow_emu


def _settings(emu: RunningEmulator, max_wait: float = 0.3, **kw: Any) -> Settings:
    return Settings(api_key=KEY, base_url=emu.base_url, max_wait=max_wait, **kw)


def _text(result: CallToolResult) -> str:
    first = result.content[0]
    assert isinstance(first, TextContent)
    return first.text


async def test_a_task_at_once_then_the_calls_final_result(emu: RunningEmulator) -> None:
    tasks = TasksClient()
    # A task answers at once whatever max_wait is; max_wait bounds only the final result's
    # previews here, so it is roomy: a busy machine must not cost the previews (0.3 s did).
    async with Client(create_server(_settings(emu, max_wait=30)), extensions=[tasks]) as client:
        caps = client.server_capabilities
        assert caps is not None
        assert caps.extensions is not None
        assert TASKS_EXTENSION in caps.extensions
        result = await client.call_tool(
            "generate_image", {"prompt": "a task, not a wait", "num_images": 2}
        )
    (created,) = tasks.created
    assert created.status == "working"
    assert created.task_id.startswith("microsoft-mai-image-2-5_")  # the gateway's request id
    assert created.poll_interval_ms is not None
    assert created.poll_interval_ms > 0
    assert created.ttl_ms is not None
    assert created.ttl_ms > 0
    assert len(tasks.reports) >= 2  # working at least once (the job takes 1 s), then completed
    assert all(r.task_id == created.task_id for r in tasks.reports)
    # The client got its images, not "still running": a task's result is the finished job.
    assert not result.is_error
    lines = _text(result).splitlines()
    assert lines[0].startswith(f"{emu.base_url}/files/")
    assert lines[2] == f"request_id: {created.task_id}"
    assert result.structured_content is not None  # validated by Client against the schema
    assert result.structured_content["done"] is True
    assert result.structured_content["request_id"] == created.task_id
    assert len([c for c in result.content if isinstance(c, ImageContent)]) == 2
    assert emu.control.stats().jobs_created == 1


async def test_no_opt_in_means_the_synchronous_call(emu: RunningEmulator) -> None:
    for mode, extensions in (("auto", []), ("legacy", [TasksClient()])):
        emu.control.reset()
        async with Client(
            create_server(_settings(emu)),
            mode=mode,
            extensions=extensions,
        ) as client:
            result = await client.call_tool("generate_image", {"prompt": "a plain call"})
        assert result.structured_content is not None
        assert result.structured_content["done"] is False, mode  # waited 0.3 s, then answered
        assert "get_image_job" in result.structured_content["next_step"]
        assert emu.control.stats().jobs_created == 1


async def test_invalid_arguments_are_refused_before_a_task(emu: RunningEmulator) -> None:
    tasks = TasksClient()
    async with Client(create_server(_settings(emu)), extensions=[tasks]) as client:
        result = await client.call_tool("generate_image", {"prompt": "hi", "num_images": 9})
        edit = await client.call_tool("edit_image", {"prompt": "brighten", "image": "/etc/passwd"})
    assert tasks.created == []
    assert result.is_error
    assert _text(result).startswith("Invalid arguments, nothing was sent.")
    assert "prompt:" in _text(result)
    assert "num_images:" in _text(result)
    assert "pydantic.dev" not in _text(result)
    assert edit.is_error
    assert "MAI_MCP_ALLOWED_DIRS" in _text(edit)
    assert emu.control.stats().jobs_created == 0


async def test_a_failed_job_is_a_completed_task_with_an_error_result(
    emu: RunningEmulator,
) -> None:
    tasks = TasksClient()
    async with Client(create_server(_settings(emu)), extensions=[tasks]) as client:
        result = await client.call_tool("generate_image", {"prompt": "a [fail] cat"})
    assert result.is_error
    assert "Rephrase" in _text(result)
    assert tasks.reports[-1].status == "completed"
    assert result.structured_content is not None
    assert result.structured_content["request_id"] == tasks.created[0].task_id
    assert result.structured_content["status"] == "FAILED"
    assert result.structured_content["next_step"]


async def test_unknown_task_ids_and_cancel(emu: RunningEmulator) -> None:
    tasks = TasksClient()
    async with Client(create_server(_settings(emu)), extensions=[tasks]) as client:
        for bad in ("microsoft-mai-image-2-5_nope", "../../etc", "x" * 300):
            with pytest.raises(MCPError) as caught:
                await send_task_request(client.session, "tasks/get", bad)
            assert caught.value.error.code == mcp_types.INVALID_PARAMS
        assert "not found" in str(caught.value).lower() or "Unknown task" in str(caught.value)
        result = await client.call_tool("generate_image", {"prompt": "cancel me"})
        rid = tasks.created[0].task_id
        cancelled = await send_task_request(client.session, "tasks/cancel", rid)
        again = await send_task_request(client.session, "tasks/get", rid)
    assert not result.is_error
    assert cancelled.task_id == rid
    assert cancelled.status_message is not None
    assert "cannot cancel" in cancelled.status_message
    assert again.status == "completed"  # the job went on; its result stays readable


async def test_another_keys_job_answers_like_the_gateways_404() -> None:
    def gateway(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            return queued()
        # What API Management / Pixazo answer for a job that is not this key's.
        return httpx.Response(
            404, json={"error": "Not Found", "message": f"Request '{RID}' not found."}
        )

    api = AsyncMAIImageClient(
        KEY,
        base_url=BASE,
        http_client=httpx.AsyncClient(transport=httpx.MockTransport(gateway)),
        poll_policy=PollPolicy.immediate(),
    )
    async with Client(
        create_server(Settings(api_key=KEY), client=api), extensions=[TasksClient()]
    ) as c:
        with pytest.raises(MCPError) as caught:
            await send_task_request(c.session, "tasks/get", RID)
    assert caught.value.error.code == mcp_types.INVALID_PARAMS
    assert f"Request '{RID}' not found" in caught.value.error.message
    assert KEY not in caught.value.error.message


async def test_task_ids_are_stateless_any_server_answers(emu: RunningEmulator) -> None:
    tasks = TasksClient()
    async with Client(create_server(_settings(emu)), extensions=[tasks]) as first:
        created = await first.session.call_tool(
            "generate_image", {"prompt": "replica one"}, allow_claimed=True
        )
    assert isinstance(created, TaskCreated)
    created_at = job_started_at(created.task_id)
    assert created_at is not None  # the id's UUIDv7 says when the job started
    async with Client(create_server(_settings(emu)), extensions=[TasksClient()]) as second:
        import anyio

        report = await send_task_request(second.session, "tasks/get", created.task_id)
        while report.status != "completed":
            await anyio.sleep(0.2)
            report = await send_task_request(second.session, "tasks/get", created.task_id)
    assert report.result is not None
    final = CallToolResult.model_validate(report.result)
    assert not final.is_error
    assert final.structured_content is not None
    assert final.structured_content["request_id"] == created.task_id


async def test_a_task_retried_after_the_client_gave_up_continues_its_job() -> None:
    # fastmcp-tasks gives up after its timeout and the model calls again: each retry used to
    # be a new job. The job ends only when the test advances the emulator's clock.
    clock = ManualClock()
    config = EmulatorConfig(api_keys=(KEY,), min_duration=30, max_duration=30)
    with run_emulator(config, clock=clock) as emu:
        settings = _settings(emu, max_wait=30, preview="off")
        args = {"prompt": "asked for again and again"}
        created = []
        for _ in range(3):  # each on a new server (a per-call stdio host), none polled to the end
            async with Client(create_server(settings), extensions=[TasksClient()]) as client:
                task = await client.session.call_tool("generate_image", args, allow_claimed=True)
                assert isinstance(task, TaskCreated)
                created.append(task)
                report = await send_task_request(client.session, "tasks/get", task.task_id)
                assert report.status == "working"  # read, but not its final result
        assert {t.task_id for t in created} == {created[0].task_id}
        assert emu.control.stats().jobs_created == 1
        clock.advance(30)
        async with Client(create_server(settings), extensions=[TasksClient()]) as client:
            again = await client.session.call_tool("generate_image", args, allow_claimed=True)
            assert isinstance(again, TaskCreated)
            assert again.task_id == created[0].task_id
            assert (again.model_extra or {}).get("statusMessage") == "continuing an earlier job"
            final = await send_task_request(client.session, "tasks/get", again.task_id)
            assert final.status == "completed"
            # Its final result was delivered: the same call is now a new job, as asked.
            fresh = await client.session.call_tool("generate_image", args, allow_claimed=True)
            assert isinstance(fresh, TaskCreated)
        assert fresh.task_id != created[0].task_id
        assert emu.control.stats().jobs_created == 2


# --------------------------------------------------------------------------- real clients


def _env(emu: RunningEmulator, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIXAZO_", "MAI_MCP_"))}
    env.update({"PIXAZO_API_KEY": KEY, "PIXAZO_BASE_URL": emu.base_url, **extra})
    return env


def _inspector() -> str | None:
    candidate = ROOT / ".ci" / "node" / "node_modules" / ".bin" / "mcp-inspector"
    return os.environ.get("MCP_INSPECTOR") or (str(candidate) if candidate.exists() else None)


def test_mcp_inspector_modern_gets_a_long_jobs_urls_through_tasks(emu: RunningEmulator) -> None:
    inspector = _inspector()
    if inspector is None:
        pytest.skip("MCP Inspector not installed (npm install --prefix .ci/node ...)")
    env = _env(emu, MAI_MCP_MAX_WAIT="0.3")  # the job (1 s) outlasts the call's wait
    env_args = [
        a
        for k in ("PIXAZO_API_KEY", "PIXAZO_BASE_URL", "MAI_MCP_MAX_WAIT")
        for a in ("-e", f"{k}={env[k]}")
    ]
    base = [inspector, "--cli", sys.executable, "-m", "mcp_server", *env_args]
    run = [*base, "--method", "tools/call", "--tool-name", "generate_image"]
    outcomes = {}
    for era in ("modern", "legacy"):
        called = subprocess.run(
            [*run, "--tool-arg", f"prompt=inspector {era}", "--protocol-era", era],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert called.returncode == 0, called.stdout + called.stderr
        outcomes[era] = json.loads(called.stdout)
    modern = outcomes["modern"]["structuredContent"]
    assert modern["done"] is True
    assert modern["status"] == "COMPLETED"
    assert modern["image_urls"][0].startswith(f"{emu.base_url}/files/")
    legacy = outcomes["legacy"]["structuredContent"]  # no tasks there: the call's own answer
    assert legacy["done"] is False
    assert "get_image_job" in legacy["next_step"]
    assert emu.control.stats().jobs_created == 2


TASKS_VENV = ROOT / ".ci" / "tasks-venv" / "bin" / "python"
"""A second environment with fastmcp-tasks and pydantic-ai (they pin fastmcp-slim 4.1.4,
which does not resolve beside the test extra's fastmcp 4.2): see the README."""

_FASTMCP_CLIENT = """
import asyncio, json, sys
import fastmcp_tasks  # noqa: F401  # registers the SEP-2663 client extension
from fastmcp import Client
from fastmcp.client.transports import StdioTransport

async def main():
    env, cwd = json.loads(sys.argv[2]), sys.argv[3]
    transport = StdioTransport(command=sys.argv[1], args=["-m", "mcp_server"], env=env, cwd=cwd)
    # A busy machine may take long to start the server: the init timeout is not the test.
    async with Client(transport, init_timeout=60) as client:
        result = await client.call_tool("generate_image", {"prompt": "via fastmcp-tasks"})
    print(json.dumps(result.structured_content))

asyncio.run(main())
"""

_PYDANTIC_AI_CLIENT = """
import asyncio, json, sys
from fastmcp.client.transports import StdioTransport
from pydantic_ai.mcp import MCPToolset

async def main():
    env, cwd = json.loads(sys.argv[2]), sys.argv[3]
    transport = StdioTransport(command=sys.argv[1], args=["-m", "mcp_server"], env=env, cwd=cwd)
    async with MCPToolset(transport, init_timeout=60) as toolset:
        # All-text results reach the model as structuredContent only (previews are off here).
        result = await toolset.direct_call_tool("generate_image", {"prompt": "via pydantic-ai"})
    print(json.dumps(result))

asyncio.run(main())
"""


@pytest.mark.parametrize(
    "script", [_FASTMCP_CLIENT, _PYDANTIC_AI_CLIENT], ids=["fastmcp", "pydantic-ai"]
)
def test_tasks_clients_from_other_projects(emu: RunningEmulator, script: str) -> None:
    if not TASKS_VENV.exists():
        pytest.skip(
            "no tasks-client environment: python -m venv .ci/tasks-venv && "
            '.ci/tasks-venv/bin/pip install "pydantic-ai-slim[mcp,mcp-tasks]"'
        )
    env = _env(emu, MAI_MCP_MAX_WAIT="0.3", MAI_MCP_PREVIEW="off")
    ran = subprocess.run(
        [str(TASKS_VENV), "-c", script, sys.executable, json.dumps(env), str(ROOT)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert ran.returncode == 0, ran.stderr[-3000:]
    structured = json.loads(ran.stdout.strip().splitlines()[-1])
    # The job outlasted the call's wait: only a task brings its images back in one call.
    assert structured["done"] is True, structured
    assert structured["image_urls"][0].startswith(f"{emu.base_url}/files/")
    assert emu.control.stats().jobs_created == 1


# --------------------------------------------------------------------------- finished tasks' images


def _png() -> bytes:
    import io

    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (8, 8), "teal").save(out, "PNG")
    return out.getvalue()


class _Cdn:
    """A gateway whose job is COMPLETED, and a CDN that serves (or stalls on) its images."""

    def __init__(self, *, stall: bool, images: int = 2) -> None:
        self.stall = stall
        self.urls = [f"https://cdn.example.com/v1/{RID}/{n}.png" for n in range(images)]
        self.downloads: list[str] = []

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        import anyio

        if request.url.host == "cdn.example.com":
            self.downloads.append(str(request.url))
            if self.stall:
                await anyio.sleep_forever()  # a host that accepts and never answers
            return httpx.Response(200, content=_png(), headers={"content-type": "image/png"})
        return httpx.Response(200, json=status_body("COMPLETED", urls=self.urls))

    def client(self) -> AsyncMAIImageClient:
        return AsyncMAIImageClient(
            KEY,
            base_url=BASE,
            http_client=httpx.AsyncClient(transport=httpx.MockTransport(self)),
            poll_policy=PollPolicy.immediate(),
        )


def _files(folder: Path) -> list[str]:
    return sorted(str(p) for p in folder.iterdir())


async def _get_twice(cdn: _Cdn, settings: Settings) -> list[CallToolResult]:
    import anyio

    results = []
    async with Client(
        create_server(settings, client=cdn.client()), extensions=[TasksClient()]
    ) as client:
        for _ in range(2):
            # Generous: today's code took the save's own 300 s default on a stalled host.
            with anyio.fail_after(60):
                report = await send_task_request(client.session, "tasks/get", RID)
            assert report.status == "completed"
            assert report.result is not None
            results.append(CallToolResult.model_validate(report.result))
    return results


async def test_tasks_get_on_a_stalled_image_host_answers_within_max_wait(
    tmp_path: Path,
) -> None:
    cdn = _Cdn(stall=True)
    settings = Settings(api_key=KEY, max_wait=0.5, preview="off", output_dir=tmp_path)
    first, again = await _get_twice(cdn, settings)
    for result in (first, again):
        assert not result.is_error  # finished (and charged): its URLs, never a failure
        assert result.structured_content is not None
        assert result.structured_content["image_urls"] == cdn.urls
        assert result.structured_content["saved_paths"] == []
        assert result.structured_content["save_error"]
        assert "not saved to disk" in _text(result)
    # The second read did not download again: it answered with the URLs at once.
    assert len(cdn.downloads) == len(cdn.urls)
    assert _files(tmp_path) == []  # no .part file left behind


async def test_tasks_get_saves_a_finished_tasks_images_once(tmp_path: Path) -> None:
    cdn = _Cdn(stall=False)
    settings = Settings(api_key=KEY, max_wait=30, output_dir=tmp_path)
    first, again = await _get_twice(cdn, settings)
    assert first.structured_content is not None
    assert again.structured_content is not None
    paths = first.structured_content["saved_paths"]
    assert len(paths) == 2
    assert again.structured_content["saved_paths"] == paths
    assert _files(tmp_path) == sorted(paths)
    # Each image was downloaded once; the previews of both reads come from the saved files.
    assert sorted(cdn.downloads) == sorted(cdn.urls)
    for result in (first, again):
        assert len([c for c in result.content if isinstance(c, ImageContent)]) == 2


async def test_another_server_sharing_the_book_reuses_a_tasks_saved_images(
    emu: RunningEmulator, tmp_path: Path
) -> None:
    # A per-call stdio host is a new server for every tasks/get: the book remembers the files.
    settings = _settings(
        emu, max_wait=30, output_dir=tmp_path / "out", job_book=str(tmp_path / "book.sqlite3")
    )
    async with Client(create_server(settings), extensions=[TasksClient()]) as client:
        first = await client.call_tool("generate_image", {"prompt": "saved once", "num_images": 2})
    assert first.structured_content is not None
    paths = first.structured_content["saved_paths"]
    assert len(paths) == 2
    downloads = emu.control.stats().downloads
    async with Client(create_server(settings), extensions=[TasksClient()]) as client:
        report = await send_task_request(
            client.session, "tasks/get", first.structured_content["request_id"]
        )
    assert report.result is not None
    again = CallToolResult.model_validate(report.result)
    assert again.structured_content is not None
    assert again.structured_content["saved_paths"] == paths
    assert emu.control.stats().downloads == downloads  # neither saved nor previewed again
    assert len([c for c in again.content if isinstance(c, ImageContent)]) == 2


async def test_concurrent_tasks_get_save_a_tasks_images_once(tmp_path: Path) -> None:
    import anyio

    cdn = _Cdn(stall=True)
    settings = Settings(api_key=KEY, max_wait=0.5, preview="off", output_dir=tmp_path)
    reports: list[TaskReport] = []
    async with Client(
        create_server(settings, client=cdn.client()), extensions=[TasksClient()]
    ) as client:

        async def read() -> None:
            reports.append(await send_task_request(client.session, "tasks/get", RID))

        with anyio.fail_after(60):
            async with anyio.create_task_group() as group:
                for _ in range(3):
                    group.start_soon(read)
    assert len(cdn.downloads) == len(cdn.urls)  # one save, whoever made it
    for report in reports:
        assert report.status == "completed"
        assert report.result is not None
        result = CallToolResult.model_validate(report.result)
        assert not result.is_error
        assert result.structured_content is not None
        assert result.structured_content["image_urls"] == cdn.urls
        assert result.structured_content["save_error"]


# --------------------------------------------------------------------------- a stalled status read


@pytest.mark.parametrize("mode", ["stall", "drip"])
async def test_tasks_get_on_a_stalled_status_read_answers_working_within_max_wait(
    mode: str,
) -> None:
    """A gateway whose status endpoint never answers (``stall``: the HTTP timeouts would
    end it, minutes later) or answers one byte at a time (``drip``: no HTTP timeout ends it):
    ``tasks/get`` says the job is still running, with its id, after max_wait."""
    import anyio

    from tests.network.servers import hostile_host

    with hostile_host(mode=mode, drip_every=0.05) as gateway:
        settings = Settings(api_key=KEY, base_url=gateway.origin, max_wait=0.5, preview="off")
        async with Client(create_server(settings), extensions=[TasksClient()]) as client:
            with anyio.fail_after(60):  # only ends a broken test (today's code: > 60 s)
                report = await send_task_request(client.session, "tasks/get", RID)
        assert gateway.hits  # the status read was sent
    assert report.status == "working"  # never a failure, never "try again"
    assert report.task_id == RID
    assert report.result is None
    assert report.status_message is not None
    assert RID in report.status_message
    assert "may still be running" in report.status_message
    assert "try again" not in report.status_message.lower()
