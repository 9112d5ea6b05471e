"""Two principals on one team server: does anything of one reach the other? (issue 22)

    python benchmarks/isolation_probe.py                 # 200 mixed calls each, 1,000 + 50 probes
    python benchmarks/isolation_probe.py --calls 50 --guesses 200

Runs the real ``mai-image-mcp --transport streamable-http --tokens-file …`` (named tokens
alice and bob, a job book of its own) in front of the offline emulator, then:

1. alice and bob each make ``--calls`` mixed calls at once over HTTP with the SDK's client:
   ``generate_image``, ``get_image_job`` of their own jobs, ``list_recent_jobs``, and MCP Tasks
   (``tasks/get`` of their own tasks). Every answer is searched for the other's request ids and
   prompts: a "foreign read" is any of them in any answer.
2. bob probes with ``--guesses`` made-up request ids (the gateway's shape) and 50 of alice's
   real ones through ``get_image_job`` and ``tasks/get``: the answers, with the id masked, must
   be the same set for both (no existence oracle); their latencies are reported too.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, Literal

import anyio
import httpx2
import mcp_types
from mcp import Client, MCPError
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.types import CallToolResult
from pydantic import ConfigDict, Field

from mai_tools.emulator import EmulatorConfig, run_emulator
from mcp_server._tokens import NamedToken, digest, write

ROOT = Path(__file__).resolve().parents[1]
KEY = "sk-bench-0123456789abcdef"
TOKENS = {
    "alice": "mai_alice-probe-token-0123456789abcdef",
    "bob": "mai_bob-probe-token-0123456789",
}
MODEL = "microsoft-mai-image-2-5"


class _Report(mcp_types.Result):
    model_config = ConfigDict(populate_by_name=True, extra="allow")
    status: str


class _TaskId(mcp_types.RequestParams):
    task_id: str = Field(serialization_alias="taskId")


async def _task(session: ClientSession, method: Literal["tasks/get"], rid: str) -> str:
    request = mcp_types.Request[_TaskId, Literal["tasks/get"]](
        method=method, params=_TaskId(task_id=rid)
    )
    try:
        return (await session.send_request(request, _Report)).model_dump_json()
    except MCPError as exc:
        return f"error: {exc}"


def _text(result: CallToolResult) -> str:
    return json.dumps(result.model_dump(mode="json", by_alias=True, exclude={"meta"}))


@contextlib.contextmanager
def _server(base_url: str, folder: Path) -> Iterator[str]:
    tokens = folder / "tokens.json"
    write(tokens, {n: NamedToken(n, digest(t), "2026-12-07T00:00:00Z") for n, t in TOKENS.items()})
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIXAZO_", "MAI_MCP_"))}
    env |= {"PIXAZO_API_KEY": KEY, "PIXAZO_BASE_URL": base_url, "MAI_MCP_PREVIEW": "off"}
    command = [sys.executable, "-m", "mcp_server", "--transport", "streamable-http"]
    command += ["--port", str(port), "--tokens-file", str(tokens)]
    command += ["--job-book", str(folder / "jobs.sqlite3"), "--max-wait", "20"]
    proc = subprocess.Popen(command, env=env, cwd=ROOT, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(OSError):
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                sys.exit("the server did not start")
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        proc.terminate()
        proc.wait(timeout=20)


@contextlib.asynccontextmanager
async def _as(url: str, name: str) -> AsyncIterator[Client]:
    headers = {"Authorization": f"Bearer {TOKENS[name]}"}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=60) as http,
        Client(streamable_http_client(url, http_client=http)) as client,
    ):
        yield client


class Caller:
    """One principal's mixed calls, and everything its answers said."""

    def __init__(self, name: str, calls: int) -> None:
        self.name = name
        self.calls = calls
        self.rids: list[str] = []
        self.prompts: list[str] = []
        self.answers: list[str] = []

    async def run(self, url: str, concurrency: int) -> None:
        plan = ["generate", "get", "list", "task"] * (self.calls // 4 + 1)
        plan = ["generate"] * 4 + plan[: self.calls - 4]
        limiter = anyio.CapacityLimiter(concurrency)
        async with _as(url, self.name) as client, anyio.create_task_group() as group:
            for n, kind in enumerate(plan):
                group.start_soon(self._one, client, kind, n, limiter)

    async def _one(self, client: Client, kind: str, n: int, limiter: anyio.CapacityLimiter) -> None:
        async with limiter:
            if kind == "generate" or not self.rids:
                prompt = f"{self.name}'s secret picture number {n} {uuid.uuid4().hex[:8]}"
                self.prompts.append(prompt)
                result = await client.call_tool("generate_image", {"prompt": prompt})
                rid = (result.structured_content or {}).get("request_id")
                if rid:
                    self.rids.append(rid)
                self.answers.append(_text(result))
            elif kind == "get":
                rid = random.choice(self.rids)
                result = await client.call_tool("get_image_job", {"request_id": rid})
                self.answers.append(_text(result))
            elif kind == "list":
                result = await client.call_tool("list_recent_jobs", {"limit": 50})
                self.answers.append(_text(result))
            else:
                self.answers.append(
                    await _task(client.session, "tasks/get", random.choice(self.rids))
                )

    def foreign_reads(self, other: Caller) -> int:
        marks = [*other.rids, *other.prompts]
        return sum(1 for answer in self.answers if any(m in answer for m in marks))


async def _probe(url: str, real: list[str], guesses: int) -> dict[str, Any]:
    fake = [f"{MODEL}_{uuid.uuid4()}" for _ in range(guesses)]
    forms: dict[str, set[str]] = {"guessed": set(), "foreign": set()}
    took: dict[str, list[float]] = {"guessed": [], "foreign": []}
    probes = [("guessed", rid) for rid in fake] + [("foreign", rid) for rid in real]
    random.shuffle(probes)  # interleaved: the machine's load drifts alike for both
    async with _as(url, "bob") as bob:
        for label, rid in probes:
            started = time.perf_counter()
            result = await bob.call_tool("get_image_job", {"request_id": rid})
            task = await _task(bob.session, "tasks/get", rid)
            took[label].append((time.perf_counter() - started) * 1000)
            forms[label].add((_text(result) + " | " + task).replace(rid, "<id>"))
    return {
        "guessed ids": len(fake),
        "foreign ids": len(real),
        "distinct answers (guessed)": len(forms["guessed"]),
        "distinct answers (foreign)": len(forms["foreign"]),
        "same answers": forms["guessed"] == forms["foreign"],
        "median ms (guessed / foreign)": (
            f"{statistics.median(took['guessed']):.1f} / {statistics.median(took['foreign']):.1f}"
        ),
        "p90 ms (guessed / foreign)": f"{_p90(took['guessed']):.1f} / {_p90(took['foreign']):.1f}",
    }


def _p90(values: list[float]) -> float:
    return statistics.quantiles(values, n=10)[-1]


async def _main(args: argparse.Namespace) -> None:
    config = EmulatorConfig(api_keys=(KEY,), min_duration=0.05, max_duration=0.3)
    with (
        run_emulator(config) as emu,
        tempfile.TemporaryDirectory() as folder,
        _server(emu.base_url, Path(folder)) as url,
    ):
        alice, bob = Caller("alice", args.calls), Caller("bob", args.calls)
        started = time.monotonic()
        async with anyio.create_task_group() as group:
            group.start_soon(alice.run, url, args.concurrency)
            group.start_soon(bob.run, url, args.concurrency)
        wall = time.monotonic() - started
        probe = await _probe(url, alice.rids[:50], args.guesses)
        jobs = emu.control.stats().jobs_created
    rows = {
        "calls (alice / bob)": f"{len(alice.answers)} / {len(bob.answers)}",
        "jobs created": jobs,
        "foreign reads (alice of bob / bob of alice)": (
            f"{alice.foreign_reads(bob)} / {bob.foreign_reads(alice)}"
        ),
        "mixed calls wall s": round(wall, 1),
        **probe,
    }
    print("| measure | result |\n|---|---|")
    for key, value in rows.items():
        print(f"| {key} | {value} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=200, help="mixed calls per principal")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--guesses", type=int, default=1000)
    anyio.run(_main, parser.parse_args())


if __name__ == "__main__":
    main()
