"""Concurrent callers racing for the last images under a spending limit (issue 22).

    python benchmarks/limit_race.py                        # SQLite scenarios only
    python benchmarks/limit_race.py --postgres auto        # and two replicas on a local Postgres
    python benchmarks/limit_race.py --postgres postgresql://user:pass@127.0.0.1:5432/db

Each round starts the servers under test (``-m mcp_server --transport streamable-http`` as
subprocesses of this checkout) with a cap of ``--cap`` images (``MAI_MCP_SERVER_DAILY_IMAGES``
or ``MAI_MCP_DAILY_IMAGES``) on a fresh job book, then ``--callers`` MCP clients, each its own
HTTP session with its own prompt (no two calls are twins), call ``generate_image`` at once,
spread over the servers in turn. The emulator (in this process) counts the jobs created: it
must be exactly the cap, every other call an ``isError`` refusal and nothing else. Prints a
markdown table.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
from pathlib import Path

import anyio
from mcp import Client
from mcp.types import CallToolResult, TextContent

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # benchmarks.mcp_job_book, tests.support.postgres

from benchmarks.mcp_job_book import KEY, Servers  # noqa: E402
from mai_tools.emulator import EmulatorConfig, RunningEmulator, run_emulator  # noqa: E402

LIMITS = {"server": "MAI_MCP_SERVER_DAILY_IMAGES", "principal": "MAI_MCP_DAILY_IMAGES"}


class LimitedServers(Servers):
    """``mai-image-mcp`` HTTP servers on loopback, with a cap of ``cap`` images a day."""

    def __init__(self, emu: RunningEmulator, book: str, limit: str, cap: int) -> None:
        super().__init__(sys.executable, ROOT, emu, book)
        self.limit, self.cap = limit, cap

    def env(self) -> dict[str, str]:
        return {**super().env(), LIMITS[self.limit]: str(self.cap)}


def _text(result: CallToolResult) -> str:
    first = result.content[0] if result.content else None
    return first.text if isinstance(first, TextContent) else ""


async def race(urls: list[str], callers: int, tag: str) -> tuple[int, int, int, float]:
    """``callers`` calls at once over ``urls`` in turn: (answered, refused, other, seconds)."""
    answered = refused = other = 0
    ready = anyio.Event()
    waiting = [callers]
    go = anyio.Event()

    async def caller(i: int) -> None:
        nonlocal answered, refused, other
        async with Client(urls[i % len(urls)]) as client:  # the session is open before the race
            waiting[0] -= 1
            if waiting[0] == 0:
                ready.set()
            await go.wait()
            result = await client.call_tool("generate_image", {"prompt": f"{tag} fox {i}"})
        if not result.is_error:
            answered += 1
        elif "Spending limit" in _text(result):
            refused += 1
        else:
            other += 1
            print(f"unexpected error: {_text(result)[:200]}", file=sys.stderr)

    async with anyio.create_task_group() as group:
        for i in range(callers):
            group.start_soon(caller, i)
        await ready.wait()
        started = time.perf_counter()
        go.set()
    return answered, refused, other, time.perf_counter() - started


async def main(postgres: str | None, callers: int, cap: int, rounds: int) -> None:
    config = EmulatorConfig(api_keys=(KEY,), min_duration=0.2, max_duration=0.5)
    scenarios = [("one server", "sqlite", 1), ("two replicas, one book file", "sqlite", 2)]
    if postgres:
        scenarios.append(("two replicas, one Postgres book", "postgres", 2))
    rows = []
    with run_emulator(config) as emu, tempfile.TemporaryDirectory() as tmp:
        for name, backend, replicas in scenarios:
            for limit in LIMITS:
                for r in range(rounds):
                    if backend == "postgres":
                        assert postgres is not None
                        book = postgres
                        _empty_postgres(postgres)
                    else:
                        book = str(Path(tmp) / f"{name}-{limit}-{r}.sqlite3".replace(" ", "_"))
                    emu.control.reset()
                    servers = LimitedServers(emu, book, limit, cap)
                    with contextlib.ExitStack() as stack:
                        urls = [stack.enter_context(servers.http())[0] for _ in range(replicas)]
                        got = await race(urls, callers, f"{name} {limit} {r}")
                    created = emu.control.stats().jobs_created
                    rows.append((name, backend, limit, r + 1, created, *got))
                    print(f"{name} / {limit} / round {r + 1}: {created} created", file=sys.stderr)
    print(f"{callers} concurrent callers, cap {cap} images a day\n")
    print(
        "| scenario | book | limit | round | images created | answered | refused | other "
        "| race (s) |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for name, backend, limit, r, created, answered, refused, other, seconds in rows:
        print(
            f"| {name} | {backend} | {limit} | {r} | {created} (cap {cap}) | {answered} | "
            f"{refused} | {other} | {seconds:.1f} |"
        )
    if any(row[4] != cap for row in rows):
        sys.exit("a round created more or fewer images than the cap")


def _empty_postgres(url: str) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS mai_jobs")
        conn.execute("DROP TABLE IF EXISTS mai_jobs_meta")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--postgres",
        help="a postgresql:// URL for the two-replica Postgres scenario (its mai_jobs tables "
        "are dropped), or 'auto': start a local server with tests/support/postgres.py",
    )
    parser.add_argument("--callers", type=int, default=50)
    parser.add_argument("--cap", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    ns = parser.parse_args()
    if ns.postgres == "auto":
        from tests.support.postgres import postgres_server

        with postgres_server() as url:
            anyio.run(main, url, ns.callers, ns.cap, ns.rounds)
    else:
        anyio.run(main, ns.postgres, ns.callers, ns.cap, ns.rounds)
