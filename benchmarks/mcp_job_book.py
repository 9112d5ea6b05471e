"""Jobs paid per image when MCP calls are retried across server processes (issue 21).

    python benchmarks/mcp_job_book.py                      # this checkout's server
    python benchmarks/mcp_job_book.py --server-python /other/.venv/bin/python --server-cwd /other
    python benchmarks/mcp_job_book.py --postgres postgresql://user:pass@127.0.0.1:5432/db
    python benchmarks/mcp_job_book.py --postgres auto        # a local server, started here

Each scenario asks for one image, has the host give up on it in the way real hosts do, then
repeats the identical call, and counts the jobs the emulator (in this process) created. The
servers run as subprocesses (``-m mcp_server``) of ``--server-python`` in ``--server-cwd``, so
the same script measures an older checkout ("before") and this one ("after"). Every scenario
gets a fresh job book file (``MAI_JOB_BOOK``), or the ``--postgres`` database for the replicas
scenario. Prints a markdown table. Real time: jobs take a few seconds (this is a benchmark).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, Literal

import anyio
import mcp_types
from mcp import Client, StdioServerParameters
from mcp.client.extension import ClaimContext, ClientExtension, ResultClaim
from mcp.client.stdio import stdio_client
from mcp.types import CallToolResult
from pydantic import ConfigDict, Field

from mai_tools.emulator import EmulatorConfig, RunningEmulator, run_emulator

ROOT = Path(__file__).resolve().parents[1]
KEY = "sk-bench-0123456789abcdef"
JOB = 20.0
"""Seconds every emulator job takes: longer than all the host timeouts of a scenario."""
GIVE_UP = 0.5
"""Seconds after its job was created that a host gives up on a call."""
HOST_TIMEOUT = 3.0
"""A per-call host's timeout on one call, its server's start included (30 s in llama-index,
scaled down)."""


class _Created(mcp_types.Result):
    model_config = ConfigDict(populate_by_name=True, extra="allow")
    result_type: Literal["task"] = Field(alias="resultType")
    task_id: str = Field(alias="taskId")


class _Report(mcp_types.Result):
    model_config = ConfigDict(populate_by_name=True, extra="allow")
    status: str


class _TaskId(mcp_types.RequestParams):
    task_id: str = Field(serialization_alias="taskId")


class _Tasks(ClientExtension):
    identifier = "io.modelcontextprotocol/tasks"

    def claims(self) -> tuple[ResultClaim[_Created]]:
        return (ResultClaim(result_type="task", model=_Created, resolve=self._never),)

    async def _never(self, created: _Created, ctx: ClaimContext) -> CallToolResult:
        raise RuntimeError("the benchmark reads tasks with allow_claimed=True")


class Servers:
    """How to start the server under test, on one job book."""

    def __init__(self, python: str, cwd: Path, emu: RunningEmulator, book: str) -> None:
        self.python, self.cwd, self.emu, self.book = python, cwd, emu, book
        self.base_url = emu.base_url

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PIXAZO_", "MAI_"))}
        env.update(
            {
                "PIXAZO_API_KEY": KEY,
                "PIXAZO_BASE_URL": self.base_url,
                "MAI_MCP_MAX_WAIT": "60",
                "MAI_MCP_PREVIEW": "off",
                "MAI_JOB_BOOK": self.book,
            }
        )
        return env

    def stdio(self) -> Any:
        params = StdioServerParameters(
            command=self.python, args=["-m", "mcp_server"], cwd=str(self.cwd), env=self.env()
        )
        return stdio_client(params, errlog=subprocess.DEVNULL)  # type: ignore[arg-type]

    @contextlib.contextmanager
    def http(self) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        command = [self.python, "-m", "mcp_server", "--transport", "streamable-http"]
        proc = subprocess.Popen(
            [*command, "--port", str(port)],
            cwd=self.cwd,
            env=self.env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                    break
                except OSError:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError("the server did not start") from None
                    time.sleep(0.1)
            yield f"http://127.0.0.1:{port}/mcp", proc
        finally:
            if proc.poll() is None:
                proc.terminate()
            proc.wait(20)


async def _give_up_on(
    servers: Servers,
    target: Any,
    args: dict[str, Any],
    also: Any = None,
    timeout: float | None = None,
) -> None:
    """A call whose host stops waiting after ``timeout`` seconds, or (None) once a new job
    exists (plus :data:`GIVE_UP` seconds, for the server to hear its request id), after
    ``also()`` (a kill -9). The job goes on."""

    async def call() -> None:
        with contextlib.suppress(Exception):
            async with Client(target) as client:
                await client.call_tool("generate_image", args)

    before = servers.emu.control.stats().jobs_created
    async with anyio.create_task_group() as group:
        group.start_soon(call)
        if timeout is not None:
            await anyio.sleep(timeout)
            group.cancel_scope.cancel()
            return
        for _ in range(3000):  # a minute at most
            if servers.emu.control.stats().jobs_created > before:
                break
            await anyio.sleep(0.02)
        await anyio.sleep(GIVE_UP)
        if also is not None:
            also()
        group.cancel_scope.cancel()


async def _answered(target: Any, args: dict[str, Any]) -> CallToolResult:
    async with Client(target) as client:
        return await client.call_tool("generate_image", args)


async def restart_kill9(servers: Servers) -> None:
    args = {"prompt": "a server killed mid-wait"}
    with servers.http() as (url, proc):

        def kill() -> None:
            proc.kill()  # kill -9 while the call waits
            proc.wait()

        await _give_up_on(servers, url, args, also=kill)
    with servers.http() as (url, _):
        await _answered(url, args)


async def restart_sigterm(servers: Servers) -> None:
    """An orderly stop (a deploy) while the call waits: uvicorn lets the call finish (it is
    answered, with its images) before the process exits; only a call that got no images is
    repeated on the new server."""
    args = {"prompt": "a server stopped (SIGTERM) mid-wait"}
    got: list[CallToolResult] = []
    with servers.http() as (url, proc):

        async def call() -> None:
            with contextlib.suppress(Exception):
                async with Client(url) as client:
                    got.append(await client.call_tool("generate_image", args))

        before = servers.emu.control.stats().jobs_created
        async with anyio.create_task_group() as group:
            group.start_soon(call)
            for _ in range(3000):
                if servers.emu.control.stats().jobs_created > before:
                    break
                await anyio.sleep(0.02)
            await anyio.sleep(GIVE_UP)

            def stop() -> None:
                proc.terminate()
                proc.wait()

            await anyio.to_thread.run_sync(stop)  # the client keeps reading meanwhile
    answered = bool(got) and "/files/" in str(got[0].content)
    if not answered:
        with servers.http() as (url, _):
            await _answered(url, args)


async def per_call_stdio(servers: Servers, tries: int = 5) -> None:
    args = {"prompt": "a new stdio server per call"}
    for _ in range(tries - 1):
        await _give_up_on(servers, servers.stdio(), args, timeout=HOST_TIMEOUT)
    await _answered(servers.stdio(), args)


async def replicas(servers: Servers) -> None:
    args = {"prompt": "two replicas, one book"}
    with servers.http() as (first, _), servers.http() as (second, _):
        await _give_up_on(servers, first, args)
        await _answered(second, args)


async def task_retries(servers: Servers, tries: int = 12) -> None:
    args = {"prompt": "a task asked for again and again"}
    ids = []
    async with Client(servers.stdio(), extensions=[_Tasks()]) as client:
        for _ in range(tries):  # the host gives up on each task and the model calls again
            created = await client.session.call_tool("generate_image", args, allow_claimed=True)
            assert isinstance(created, _Created)
            ids.append(created.task_id)
        request = mcp_types.Request[_TaskId, Literal["tasks/get"]]
        while True:  # the last one is read to its end
            report = await client.session.send_request(
                request(method="tasks/get", params=_TaskId(task_id=ids[-1])), _Report
            )
            if report.status != "working":
                break
            await anyio.sleep(0.5)


async def delivered_then_again(servers: Servers) -> None:
    args = {"prompt": "asked twice, answered twice"}
    with servers.http() as (url, _):
        await _answered(url, args)
        await _answered(url, args)


Scenario = Callable[[Servers], Awaitable[None]]
SCENARIOS: list[tuple[str, Scenario, int]] = [
    ("HTTP server kill -9 mid-wait, restarted, identical call", restart_kill9, 1),
    ("HTTP server SIGTERM mid-wait (answered before exit, else repeated)", restart_sigterm, 1),
    (
        f"new stdio server per call, host timeout {HOST_TIMEOUT:g} s, 4 timeouts, then a wait",
        per_call_stdio,
        1,
    ),
    ("two HTTP replicas sharing one book, retry sent to the other", replicas, 1),
    ("MCP Tasks: 12 tasks for one call (host gave up), last read to its end", task_retries, 1),
    ("a delivered answer, then the identical call (a new image asked)", delivered_then_again, 2),
]


@contextlib.asynccontextmanager
async def _counted(emu: RunningEmulator) -> AsyncIterator[list[int]]:
    box: list[int] = []
    emu.control.reset()
    yield box
    box.append(emu.control.stats().jobs_created)


async def main(python: str, cwd: Path, postgres: str | None, only: str = "") -> None:
    config = EmulatorConfig(api_keys=(KEY,), min_duration=JOB, max_duration=JOB)
    rows = []
    with run_emulator(config) as emu, tempfile.TemporaryDirectory() as tmp:
        for i, (name, scenario, expected) in enumerate(SCENARIOS):
            if only and only not in name:
                continue
            book = str(Path(tmp) / f"book-{i}.sqlite3")
            if postgres and scenario is replicas:
                book = postgres
            async with _counted(emu) as jobs:
                await scenario(Servers(python, cwd, emu, book))
            backend = "Postgres" if book.startswith("postgres") else "SQLite"
            rows.append((name, backend, jobs[0], expected))
            print(f"{name}: {jobs[0]} jobs", file=sys.stderr)
    print(f"server: {python} in {cwd}\n")
    print("| scenario | book | jobs | images asked |")
    print("|---|---|---|---|")
    for name, backend, paid, expected in rows:
        print(f"| {name} | {backend} | {paid} | {expected} |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server-python", default=sys.executable)
    parser.add_argument("--server-cwd", type=Path, default=ROOT)
    parser.add_argument(
        "--postgres",
        help="a postgresql:// URL for the replicas scenario, or 'auto': start a local server "
        "with the test suite's helper (tests/support/postgres.py)",
    )
    parser.add_argument("--only", default="", help="run the scenarios whose name has this text")
    ns = parser.parse_args()
    if ns.postgres == "auto":
        sys.path.insert(0, str(ROOT))
        from tests.support.postgres import postgres_server

        with postgres_server() as url:
            anyio.run(main, ns.server_python, ns.server_cwd, url, ns.only)
    else:
        anyio.run(main, ns.server_python, ns.server_cwd, ns.postgres, ns.only)
