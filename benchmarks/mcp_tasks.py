"""MCP hosts benchmarks over loopback: MCP Tasks latency, orphan adoption, concurrent previews.

    python benchmarks/mcp_tasks.py            # full run (~1 minute)
    python benchmarks/mcp_tasks.py --quick    # fewer samples

Prints a markdown section (the one appended to benchmarks/RESULTS.md). The server runs as a
subprocess over stdio (``python -m mcp_server``), against the emulator in its own process.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Literal

import anyio
import mcp_types
import uvicorn
from mcp import Client, MCPError, StdioServerParameters
from mcp.client.extension import ClaimContext, ClientExtension, ResultClaim
from mcp.types import CallToolResult
from pydantic import ConfigDict, Field
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from mai_tools import AsyncMAIImageClient
from mai_tools.emulator import RemoteEmulator, spawn_emulator
from mcp_server._previews import previews

ROOT = Path(__file__).resolve().parents[1]
KEY = "sk-bench-0123456789abcdef"
TASKS = "io.modelcontextprotocol/tasks"


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
    identifier = TASKS

    def claims(self) -> tuple[ResultClaim[_Created]]:
        return (ResultClaim(result_type="task", model=_Created, resolve=self._never),)

    async def _never(self, created: _Created, ctx: ClaimContext) -> CallToolResult:
        raise RuntimeError("the benchmark reads tasks with allow_claimed=True")


def _median_ms(values: list[float]) -> float:
    return statistics.median(values) * 1000


def _params(base_url: str, **env: str) -> StdioServerParameters:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("PIXAZO_", "MAI_MCP_"))}
    clean.update({"PIXAZO_API_KEY": KEY, "PIXAZO_BASE_URL": base_url, **env})
    return StdioServerParameters(
        command=sys.executable, args=["-m", "mcp_server"], cwd=str(ROOT), env=clean
    )


async def bench_tasks(base_url: str, samples: int) -> dict[str, float]:
    """tools/call -> task answer; tasks/get per poll vs a direct status read."""
    created: list[float] = []
    gets: list[float] = []
    direct: list[float] = []
    async with Client(_params(base_url, MAI_MCP_PREVIEW="off"), extensions=[_Tasks()]) as client:
        await client.list_tools()
        ids = []
        for i in range(samples):
            start = time.perf_counter()
            raw = await client.session.call_tool(
                "generate_image", {"prompt": f"bench task {i}"}, allow_claimed=True
            )
            created.append(time.perf_counter() - start)
            assert isinstance(raw, _Created)
            ids.append(raw.task_id)
        request = mcp_types.Request[_TaskId, Literal["tasks/get"]]
        for task_id in ids:
            start = time.perf_counter()
            await client.session.send_request(
                request(method="tasks/get", params=_TaskId(task_id=task_id)), _Report
            )
            gets.append(time.perf_counter() - start)
    async with AsyncMAIImageClient(KEY, base_url=base_url) as api:
        for task_id in ids:
            start = time.perf_counter()
            await api.get_status(task_id)
            direct.append(time.perf_counter() - start)
    return {
        "create_ms": _median_ms(created),
        "create_p95_ms": sorted(created)[int(0.95 * (len(created) - 1))] * 1000,
        "get_ms": _median_ms(gets),
        "direct_ms": _median_ms(direct),
    }


async def bench_orphans(base_url: str, emu: RemoteEmulator, calls: int) -> dict[str, int]:
    """Every first call times out on the client side; its identical retry must not pay."""
    before = emu.stats().jobs_created
    async with Client(_params(base_url, MAI_MCP_PREVIEW="off")) as client:
        for i in range(calls):
            args = {"prompt": f"orphan {i}"}
            # The client gives up after 0.3 s; the job goes on at the gateway.
            with contextlib.suppress(MCPError):
                await client.call_tool("generate_image", args, read_timeout_seconds=0.3)
            retry = await client.call_tool("generate_image", args)
            assert not retry.is_error
    return {"calls": calls, "jobs": emu.stats().jobs_created - before}


def _png() -> bytes:
    import io

    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (1024, 1024), (20, 90, 160)).save(out, "PNG")
    return out.getvalue()


async def bench_previews() -> dict[str, float]:
    """4 images from a media host that takes 1 s per image."""
    png = _png()

    async def slow(request: Request) -> Response:
        await asyncio.sleep(1.0)
        return Response(png, media_type="image/png")

    app = Starlette(routes=[Route("/img/{n}", slow)])
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:  # noqa: ASYNC110  # uvicorn's flag, set from its thread
        await anyio.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    urls = [f"http://127.0.0.1:{port}/img/{i}" for i in range(4)]
    try:
        start = time.perf_counter()
        made = await previews(urls, side=384, budget=10, request_id="bench")
        together = time.perf_counter() - start
    finally:
        server.should_exit = True
        thread.join(10)
    return {"seconds": together, "previews": len(made)}


async def main(quick: bool) -> None:
    samples = 10 if quick else 50
    with spawn_emulator(min_duration=1.5, max_duration=1.5, api_key=KEY) as emu:
        tasks = await bench_tasks(emu.base_url, samples)
        orphans = await bench_orphans(emu.base_url, emu, 3 if quick else 10)
    shown = await bench_previews()
    overhead = tasks["get_ms"] - tasks["direct_ms"]

    def verdict(ok: bool) -> str:
        return "met" if ok else "**missed**"

    print("## MCP hosts: tasks, orphans, previews (stdio, loopback)\n")
    print("| what | measured | goal |")
    print("|---|---|---|")
    print(
        f"| `tools/call` -> task answer (median of {samples}; p95) | "
        f"{tasks['create_ms']:.1f} ms; {tasks['create_p95_ms']:.1f} ms | "
        f"≤ 50 ms: {verdict(tasks['create_ms'] <= 50)} |"
    )
    print(
        f"| `tasks/get` per poll (median) | {tasks['get_ms']:.2f} ms, of which "
        f"{tasks['direct_ms']:.2f} ms is the client's own status read | "
        f"+{overhead:.2f} ms ≤ 5 ms: {verdict(overhead <= 5)} |"
    )
    print(
        f"| orphan adoption: {orphans['calls']} calls timed out by the client, then retried | "
        f"{orphans['jobs']} jobs ({orphans['jobs'] - orphans['calls']} extra) | "
        f"0 extra: {verdict(orphans['jobs'] == orphans['calls'])} |"
    )
    print(
        f"| previews: 4 images, media host 1 s per image | {shown['seconds']:.2f} s "
        f"({shown['previews']:.0f} previews) | ≤ 1.5 s: {verdict(shown['seconds'] <= 1.5)} |"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    anyio.run(main, parser.parse_args().quick)
