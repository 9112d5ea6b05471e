"""How many jobs one requested image costs when hosts kill, restart, time out and multiply us.

    python benchmarks/one_job_per_image.py                  # every scenario, with the job book
    python benchmarks/one_job_per_image.py --book off       # the same, with MAI_JOB_BOOK=off
    python benchmarks/one_job_per_image.py --only restart-http,langchain-timeout

Each scenario asks for one image the way a real host does (the patterns measured in issue 21
with llama-index, langchain-mcp-adapters, LangGraph and MCP clients, reproduced here with the
MCP SDK's own client and the LangChain tools), on a spawned emulator whose jobs take
``--duration`` seconds, and counts the jobs the emulator made for that prompt. The goal is
exactly 1 everywhere. ``replicas-postgres`` needs a local Postgres (started here with the test
suite's helper, tests/support/postgres.py) and is skipped with a note if it cannot start.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

from mcp import Client, StdioServerParameters
from mcp.shared.exceptions import MCPError

from mai_tools.emulator import RemoteEmulator, spawn_emulator

ROOT = Path(__file__).resolve().parents[1]
Scenario = Callable[["Bench"], Awaitable[int]]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Bench:
    def __init__(self, emu: RemoteEmulator, book: str, duration: float) -> None:
        self.emu = emu
        self.book = book
        self.duration = duration

    def env(self, book: str | None = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PIXAZO_", "MAI_MCP_"))}
        env.update(
            PIXAZO_API_KEY=self.emu.api_key,
            PIXAZO_BASE_URL=self.emu.base_url,
            MAI_JOB_BOOK=book or self.book,
        )
        return env

    def jobs_for(self, prompt: str) -> int:
        return sum(p == prompt for p in self.emu.stats().prompts.values())

    def submitted(self, prompt: str) -> bool:
        """The book holds a submitted job for ``prompt`` (SQLite books only)."""
        if self.book == "off" or self.book.startswith("postgres"):
            return True
        with contextlib.closing(sqlite3.connect(self.book)) as db:
            try:
                rows = db.execute(
                    "SELECT 1 FROM mai_jobs WHERE prompt = ? AND request_id IS NOT NULL", (prompt,)
                ).fetchall()
            except sqlite3.OperationalError:
                return False
        return bool(rows)

    @contextlib.contextmanager
    def http_server(self, port: int, book: str | None = None) -> Iterator[subprocess.Popen[bytes]]:
        command = [sys.executable, "-m", "mcp_server", "--transport", "streamable-http"]
        command += ["--port", str(port), "--max-wait", "600"]
        proc = subprocess.Popen(command, env=self.env(book), cwd=ROOT)
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port)):
                    break
                time.sleep(0.05)
            yield proc
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()


def _prompt(name: str) -> str:
    return f"one image, {name}, {uuid.uuid4().hex[:8]}"


async def _call(client: Client, prompt: str, timeout: float | None = None) -> tuple[bool, str]:
    """(answered with images, text) of one generate_image call."""
    result = await client.call_tool(
        "generate_image", {"prompt": prompt}, read_timeout_seconds=timeout
    )
    text = " ".join(getattr(c, "text", "") for c in result.content)
    return (not result.is_error and "/files/" in text, text)


async def fresh_stdio_server_per_call(bench: Bench, timeout: float, tries: int) -> int:
    """llama-index / langchain-mcp-adapters: a new stdio server per call, a client timeout,
    the model (or framework) calls again."""
    prompt = _prompt("fresh stdio server per call")
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "mcp_server", "--max-wait", "600"],
        env=bench.env(), cwd=str(ROOT),
    )  # fmt: skip
    for _ in range(tries):
        try:
            async with Client(params) as client:
                done, _ = await _call(client, prompt, timeout)
            if done:
                break
        except (MCPError, ExceptionGroup):
            continue  # timed out: the host closes the server and tries again
    return bench.jobs_for(prompt)


async def restart_http(bench: Bench, how: str) -> int:
    """The HTTP server is killed (kill -9) or stopped (SIGTERM) mid-call, restarted, and the
    client repeats the call."""
    prompt = _prompt(f"server {how} mid-call")
    port = _free_port()
    url = f"http://127.0.0.1:{port}/mcp"
    # The connection dies with the server: whatever the client raises then is expected.
    with bench.http_server(port) as proc, contextlib.suppress(Exception):
        async with Client(url) as client:
            call = asyncio.ensure_future(_call(client, prompt))
            deadline = time.monotonic() + 30
            while not bench.submitted(prompt) and time.monotonic() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
            proc.kill() if how == "kill -9" else proc.terminate()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(call, 10)
            call.cancel()
    with bench.http_server(port):
        async with Client(url) as client:
            done, text = await _call(client, prompt)
    assert done, text
    return bench.jobs_for(prompt)


async def langchain_timeout(bench: Bench) -> int:
    """A host timeout (asyncio.wait_for, LangGraph step_timeout) around the LangChain tool,
    then the same call."""
    from mai_tools.langchain import MAIImageGenerateTool

    prompt = _prompt("langchain timeout")
    saved = dict(os.environ)
    os.environ.update(bench.env())
    try:
        tool = MAIImageGenerateTool()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(tool.ainvoke({"prompt": prompt}), bench.duration / 4)
        answer = await tool.ainvoke({"prompt": prompt})
    finally:
        os.environ.clear()
        os.environ.update(saved)
    assert "/files/" in str(answer), answer
    return bench.jobs_for(prompt)


async def replicas_postgres(bench: Bench) -> int:
    """Two HTTP replicas share one Postgres book; the retry lands on the other one."""
    sys.path.insert(0, str(ROOT))
    from tests.support.postgres import postgres_server  # type: ignore[import-not-found, import-untyped, unused-ignore]

    prompt = _prompt("replicas on one Postgres book")
    with postgres_server() as url:
        book = url if bench.book != "off" else "off"
        a, b = _free_port(), _free_port()
        with bench.http_server(a, book), bench.http_server(b, book):
            with contextlib.suppress(MCPError, ExceptionGroup):
                async with Client(f"http://127.0.0.1:{a}/mcp") as client:
                    await _call(client, prompt, bench.duration / 4)
            async with Client(f"http://127.0.0.1:{b}/mcp") as client:
                done, text = await _call(client, prompt)
    assert done, text
    return bench.jobs_for(prompt)


SCENARIOS: dict[str, tuple[str, Callable[[Bench], Awaitable[int]]]] = {
    "llama-index": (
        "new stdio server per call, 3 s timeout, up to 5 calls (llama-index: 5 jobs)",
        lambda b: fresh_stdio_server_per_call(b, b.duration / 4, 5),
    ),
    "mcp-adapters": (
        "new stdio server per call, 2 s timeout, 6 retries (langchain-mcp-adapters: 6 jobs)",
        lambda b: fresh_stdio_server_per_call(b, b.duration / 6, 7),
    ),
    "restart-kill": ("HTTP server kill -9 mid-call, restarted, call repeated (2 jobs)",
                     lambda b: restart_http(b, "kill -9")),
    "restart-term": ("HTTP server SIGTERM mid-call, restarted, call repeated (2 jobs)",
                     lambda b: restart_http(b, "SIGTERM")),
    "langchain-timeout": ("LangChain tool, asyncio.wait_for timeout, same call (2-3 jobs)",
                          langchain_timeout),
    "replicas-postgres": ("two HTTP replicas on one Postgres book, retry to the other (2 jobs)",
                          replicas_postgres),
}  # fmt: skip


@contextlib.asynccontextmanager
async def _nothing() -> AsyncIterator[None]:
    yield


async def main_async(args: argparse.Namespace) -> None:
    names = [n for n in (args.only.split(",") if args.only else SCENARIOS) if n]
    rows: list[tuple[str, str]] = []
    with (
        tempfile.TemporaryDirectory() as tmp,
        spawn_emulator(min_duration=args.duration, max_duration=args.duration) as emu,
    ):
        book = "off" if args.book == "off" else str(Path(tmp) / "jobs.sqlite3")
        bench = Bench(emu, book, args.duration)
        for name in names:
            what, run = SCENARIOS[name]
            started = time.monotonic()
            try:
                jobs: Any = await run(bench)
            except Exception as exc:
                while isinstance(exc, ExceptionGroup) and exc.exceptions:
                    exc = exc.exceptions[0]
                jobs = f"error: {type(exc).__name__}: {exc}"[:160]
            print(f"{name}: {jobs} ({time.monotonic() - started:.1f} s) — {what}", flush=True)
            rows.append((what, str(jobs)))
    print(f"\n| scenario | jobs for one image (book {args.book}) |\n|---|---|")
    for what, jobs in rows:
        print(f"| {what} | {jobs} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--book", choices=["on", "off"], default="on")
    parser.add_argument("--only", default="")
    parser.add_argument("--duration", type=float, default=12.0, help="emulator job seconds")
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
