"""``kill -9`` processes in the middle of their submits, rerun them, and count what was paid.

    python benchmarks/kill_submit_path.py                    # 100 kills over the surfaces
    python benchmarks/kill_submit_path.py --kills 30 --surfaces client

Each round starts a worker process that runs the same list of keyed jobs (8 at a time: the
client with ``idempotency_key=``, the LangChain tool with a ``tool_call_id``), and kills it with
SIGKILL at a random moment. For ``mcp`` the process killed is an HTTP MCP server, while this
script calls ``generate_image`` for every prompt not yet answered (8 at a time); the next round
starts a new server on the same book and calls the unanswered prompts again (identical calls:
the server continues their undelivered jobs). The emulator answers every API request 50 ms
late, so a kill often lands while a submit is on the wire or just answered. After the kills a
last worker runs to the end. Then, from the emulator's own record of every job it created and
the job book:

- paid twice: prompts the emulator made more than one job for (must be 0);
- missing: jobs the emulator made that the book neither holds by request id nor reports as
  ``unknown`` under their key (must be 0);
- unknown: keys whose submit may have arrived with no request id recorded (reported, never
  re-sent: they are the kills that landed between the POST and the record of its answer).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import os
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mai_tools.emulator import Faults, spawn_emulator

WORKER = {
    "client": """
import sys
from concurrent.futures import ThreadPoolExecutor
from mai_tools import GenerateRequest, MAIImageClient, MAIImageError
n, tag = int(sys.argv[1]), sys.argv[2]
with MAIImageClient() as client:
    def one(i):
        try:
            client.run(GenerateRequest(prompt=f"{tag} job {i}"), idempotency_key=f"{tag}-{i}")
        except MAIImageError as exc:
            print(type(exc).__name__, i, flush=True)
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(one, range(n)))
""",
    "langchain": """
import sys
from concurrent.futures import ThreadPoolExecutor
from mai_tools.langchain import MAIImageGenerateTool
n, tag = int(sys.argv[1]), sys.argv[2]
tool = MAIImageGenerateTool()
def one(i):
    call = {"type": "tool_call", "name": tool.name, "id": f"{tag}-{i}",
            "args": {"prompt": f"{tag} job {i}"}}
    tool.invoke(call)
with ThreadPoolExecutor(8) as pool:
    list(pool.map(one, range(n)))
""",
}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _mcp_round(
    env: dict[str, str], tag: str, pending: set[int], kill_after: float | None
) -> set[int]:
    """Start a server, call generate_image for ``pending`` (8 at a time), kill -9 the server
    after ``kill_after`` seconds (None: let every call end). The prompts answered."""
    from mcp import Client

    port = _free_port()
    command = [sys.executable, "-m", "mcp_server", "--transport", "streamable-http"]
    proc = subprocess.Popen(  # noqa: ASYNC220 - started once per round, not on a hot path
        [*command, "--port", str(port), "--max-wait", "600"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    answered: set[int] = set()
    try:
        for _ in range(600):
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port)):
                break
            await asyncio.sleep(0.05)
        slots = asyncio.Semaphore(8)

        async def one(i: int) -> None:
            async with slots, Client(f"http://127.0.0.1:{port}/mcp") as client:
                result = await client.call_tool("generate_image", {"prompt": f"{tag} job {i}"})
            text = " ".join(getattr(c, "text", "") for c in result.content)
            if "/files/" in text or "may have been created" in text or "may already" in text:
                answered.add(i)

        async def guarded(i: int) -> None:
            with contextlib.suppress(Exception):
                await one(i)

        calls = asyncio.gather(*(guarded(i) for i in sorted(pending)))
        if kill_after is None:
            await calls
        else:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(calls), kill_after)
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(calls, 30)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    return answered


def _mcp_surface(env: dict[str, str], tag: str, jobs: int, kills: int, rng: random.Random) -> str:
    pending = set(range(jobs))
    for _ in range(kills):
        pending -= asyncio.run(_mcp_round(env, tag, pending, rng.uniform(0.8, 3.0)))
        if not pending:
            pending = set()  # every prompt answered before the kills ran out: nothing to kill
    left = set(pending)
    pending -= asyncio.run(_mcp_round(env, tag, pending, None))
    return f"{len(left)} prompts left for the last run, {len(pending)} unanswered by it"


def _book_rows(path: Path) -> list[tuple[str | None, str, str | None, str]]:
    with contextlib.closing(sqlite3.connect(path)) as db:
        return list(db.execute("SELECT idempotency_key, prompt, request_id, state FROM mai_jobs"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--kills", type=int, default=100)
    parser.add_argument("--jobs", type=int, default=24, help="keyed jobs per surface")
    parser.add_argument("--surfaces", default="client,langchain,mcp")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    surfaces = [s for s in args.surfaces.split(",") if s]
    faults = Faults(slow_rate=1.0, slow_seconds=0.05)
    table: list[tuple[str, int, int, int, int, int]] = []
    with (
        tempfile.TemporaryDirectory() as tmp,
        spawn_emulator(min_duration=0.2, max_duration=0.6, seed=args.seed, faults=faults) as emu,
    ):
        for surface in surfaces:
            book = Path(tmp) / f"{surface}.sqlite3"
            env = {
                **os.environ,
                "PIXAZO_API_KEY": emu.api_key,
                "PIXAZO_BASE_URL": emu.base_url,
                "MAI_JOB_BOOK": str(book),
            }
            tag = f"kill-{surface}"
            command = [sys.executable, "-c", WORKER.get(surface, ""), str(args.jobs), tag]
            kills = args.kills // len(surfaces)
            if surface == "mcp":
                last = _mcp_surface(env, tag, args.jobs, kills, rng)
            else:
                for _ in range(kills):
                    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL)
                    time.sleep(rng.uniform(0.5, 2.5))  # start-up is ~0.5 s
                    proc.send_signal(signal.SIGKILL)
                    proc.wait()
                final = subprocess.run(
                    command, env=env, capture_output=True, text=True, timeout=600
                )
                last = f"the last run reported {final.stdout.count('JobUnknownError')} unknown"
            stats = emu.stats()
            made = {rid: p for rid, p in stats.prompts.items() if p.startswith(f"{tag} job ")}
            per_prompt = collections.Counter(made.values())
            twice = sum(1 for c in per_prompt.values() if c > 1)
            rows = _book_rows(book)
            known = {rid for _, _, rid, _ in rows if rid}
            # Keyed surfaces name the job by key; MCP matches identical calls by prompt.
            unknown_keys = {
                key if surface != "mcp" else f"{tag}-{prompt.rsplit(' ', 1)[-1]}"
                for key, prompt, _, state in rows
                if state == "unknown"
            }
            missing = 0
            for rid, prompt in made.items():
                key = f"{tag}-{prompt.rsplit(' ', 1)[-1]}"
                if rid not in known and key not in unknown_keys:
                    missing += 1
            table.append((surface, kills, len(made), twice, missing, len(unknown_keys)))
            print(
                f"{surface}: {kills} kills, {len(made)} jobs made for {args.jobs} keys, "
                f"paid twice {twice}, missing from the book {missing}, unknown "
                f"{len(unknown_keys)} ({last})",
                flush=True,
            )
    print("\n| surface | kills | jobs made | paid twice | missing | unknown |")
    print("|---|---|---|---|---|---|")
    for row in table:
        print("| " + " | ".join(str(v) for v in row) + " |")


if __name__ == "__main__":
    main()
