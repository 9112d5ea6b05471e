"""Benchmarks against the emulator over loopback: waiting strategies, concurrency, overhead,
start-up. Prints a markdown table, writes benchmarks/out/results.md and a PNG chart.

    python benchmarks/run.py            # full run, a few minutes on 2 cores
    python benchmarks/run.py --quick    # smaller numbers, for a smoke test

The emulator runs in its own process (spawn_emulator), so it does not share a GIL with the
client being measured. Detection latency = when the client returned the result minus when
the emulator's job completed (both wall clock on this machine).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import logging.handlers
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from mai_tools import AsyncMAIImageClient, MAIImageClient, PollPolicy
from mai_tools.emulator import spawn_emulator

OUT = Path(__file__).resolve().parent / "out"


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


@dataclass
class StrategyResult:
    name: str
    median: float
    p95: float
    polls: float
    wall: float
    latencies: list[float] = field(repr=False)


async def _batch(client: AsyncMAIImageClient, count: int, tag: str) -> list[tuple[str, float]]:
    async def one(i: int) -> tuple[str, float]:
        result = await client.generate(f"{tag} job {i}", timeout=120)
        return result.request_id, time.time()

    return list(await asyncio.gather(*(one(i) for i in range(count))))


async def waiting_strategies(jobs: int, warmup: int) -> list[StrategyResult]:
    strategies = [
        ("vendor loop, every 5 s", PollPolicy.fixed(5.0)),
        ("fixed 1 s", PollPolicy.fixed(1.0)),
        ("fixed 0.5 s", PollPolicy.fixed(0.5)),
        ("mai-tools adaptive", PollPolicy()),
    ]
    results = []
    with spawn_emulator(min_duration=4.5, max_duration=8.5, seed=7) as emu:
        for name, policy in strategies:
            async with AsyncMAIImageClient(
                emu.api_key, base_url=emu.base_url, poll_policy=policy
            ) as client:
                await _batch(client, warmup, "warm-up")
                emu.reset()
                start = time.monotonic()
                done = await _batch(client, jobs, "measured")
                wall = time.monotonic() - start
            stats = emu.stats()
            latencies = [returned - stats.finished_at[rid] for rid, returned in done]
            polls = [stats.polls[rid] for rid, _ in done]
            results.append(
                StrategyResult(
                    name=name,
                    median=statistics.median(latencies),
                    p95=_pct(latencies, 0.95),
                    polls=statistics.mean(polls),
                    wall=wall,
                    latencies=latencies,
                )
            )
            print(f"  {name}: median {results[-1].median:.3f}s", file=sys.stderr)
    return results


async def concurrency(count: int, duration: float) -> dict[str, Any]:
    log = logging.handlers.BufferingHandler(capacity=sys.maxsize)  # keeps every record
    logger = logging.getLogger("httpcore.connection")
    level = logger.level
    logger.setLevel(logging.DEBUG)  # connection events only: few records
    logger.addHandler(log)
    with spawn_emulator(min_duration=duration, max_duration=duration) as emu:
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        async with AsyncMAIImageClient(emu.api_key, base_url=emu.base_url) as client:
            start = time.monotonic()
            outcomes = await asyncio.gather(
                *(client.generate(f"crowd {i}", timeout=120) for i in range(count)),
                return_exceptions=True,
            )
            wall = time.monotonic() - start
        rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        stats = emu.stats()
    logger.removeHandler(log)
    # httpcore's documented debug log says what its pool did, without its internals.
    opened = sum(r.getMessage().startswith("connect_tcp.complete") for r in log.buffer)
    logger.setLevel(level)
    errors = [o for o in outcomes if isinstance(o, BaseException)]
    return {
        "jobs": count,
        "job_duration": duration,
        "wall": wall,
        "rss_increase_mb": (rss_after - rss_before) / 1024,
        "errors": len(errors),
        "status_requests": stats.status_requests,
        "connections_opened": opened,
    }


def overhead(calls: int) -> dict[str, float]:
    """Per-call time on instant jobs: raw httpx, the client, the LangChain tool, MCP."""
    from langchain_core.messages import ToolMessage  # noqa: F401 - imported for the tool
    from pydantic import SecretStr

    from mai_tools import MAIImageGenerateTool

    out: dict[str, float] = {}
    with spawn_emulator(min_duration=0.0, max_duration=0.0) as emu:
        headers = {"Ocp-Apim-Subscription-Key": emu.api_key, "Content-Type": "application/json"}
        with httpx.Client(base_url=emu.base_url, headers=headers) as raw:

            def raw_call() -> None:
                job = raw.post(
                    "/microsoft-mai-image-2-5/v1/microsoft-mai-image-2-5-request",
                    json={"prompt": "overhead probe"},
                ).json()
                assert raw.get(job["polling_url"]).json()["status"] == "COMPLETED"

            out["raw httpx (POST + 1 GET)"] = _time(raw_call, calls)
        with MAIImageClient(emu.api_key, base_url=emu.base_url) as client:
            for _ in range(10):  # learn that these jobs finish at once
                client.generate("warm-up")
            out["MAIImageClient.generate"] = _time(lambda: client.generate("overhead probe"), calls)
        tool = MAIImageGenerateTool(api_key=SecretStr(emu.api_key), base_url=emu.base_url)
        for _ in range(10):
            tool.invoke({"prompt": "warm-up"})
        out["LangChain tool.invoke"] = _time(
            lambda: tool.invoke({"prompt": "overhead probe"}), calls
        )
        env = {
            **os.environ,
            "PIXAZO_API_KEY": emu.api_key,
            "PIXAZO_BASE_URL": emu.base_url,
            "MAI_MCP_PREVIEW": "off",
        }
        out["MCP over stdio"] = asyncio.run(_mcp_stdio(env, calls))
        out["MCP over HTTP"] = asyncio.run(_mcp_http(env, calls))
    return out


def _time(call: Any, calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        call()
    return (time.perf_counter() - start) / calls


async def _mcp_calls(client: Any, calls: int) -> float:
    for _ in range(10):
        await client.call_tool("generate_image", {"prompt": "warm-up"})
    start = time.perf_counter()
    for _ in range(calls):
        await client.call_tool("generate_image", {"prompt": "overhead probe"})
    return (time.perf_counter() - start) / calls


async def _mcp_stdio(env: dict[str, str], calls: int) -> float:
    from mcp import Client, StdioServerParameters

    params = StdioServerParameters(command=sys.executable, args=["-m", "mcp_server"], env=env)
    async with Client(params) as client:
        return await _mcp_calls(client, calls)


async def _mcp_http(env: dict[str, str], calls: int) -> float:
    import socket

    from mcp import Client

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen(  # noqa: ASYNC220 - started once, outside the measured loop
        [sys.executable, "-m", "mcp_server", "--transport", "streamable-http", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(300):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                await asyncio.sleep(0.1)
        async with Client(f"http://127.0.0.1:{port}/mcp") as client:
            return await _mcp_calls(client, calls)
    finally:
        proc.terminate()
        proc.wait(10)


def startup() -> dict[str, float]:
    def run(code: str) -> float:
        best = float("inf")
        for _ in range(5):
            start = time.perf_counter()
            subprocess.run([sys.executable, "-c", code], check=True)
            best = min(best, time.perf_counter() - start)
        return best

    base = run("pass")
    out = {"import mai_tools": run("import mai_tools") - base}
    # The clients load on first use: what a program that makes a client pays.
    out["import mai_tools (+ MAIImageClient)"] = run("from mai_tools import MAIImageClient") - base
    out["import mai_tools (+ LangChain tools)"] = (
        run("from mai_tools import MAIImageToolkit") - base
    )
    code = (
        "import asyncio, sys, time; from mcp import Client, StdioServerParameters\n"
        "async def main():\n"
        "    t = time.perf_counter()\n"
        "    server = StdioServerParameters(command=sys.executable, args=['-m', 'mcp_server'])\n"
        "    async with Client(server) as c:\n"
        "        await c.list_tools()\n"
        "    print(time.perf_counter() - t)\n"
        "asyncio.run(main())"
    )
    runs = [
        float(
            subprocess.run(
                [sys.executable, "-c", code], check=True, capture_output=True, text=True
            ).stdout
        )
        for _ in range(3)
    ]
    out["MCP server cold start (spawn -> tools/list)"] = min(runs)
    return out


def chart(results: list[StrategyResult], path: Path) -> None:
    from PIL import Image, ImageDraw, ImageFont

    width, height, pad = 900, 420, 60
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=14)
    draw.text(
        (pad, 15),
        "Detection latency (median, p95) and status requests per job",
        fill="black",
        font=font,
    )
    top = max(r.p95 for r in results) * 1.1
    bar_w = (width - 2 * pad) / len(results)
    for i, r in enumerate(results):
        x = pad + i * bar_w + 20
        for value, color, dx in ((r.median, (70, 120, 200), 0), (r.p95, (200, 120, 70), 40)):
            h = (height - 2 * pad - 40) * value / top
            draw.rectangle((x + dx, height - pad - h, x + dx + 35, height - pad), fill=color)
            draw.text((x + dx, height - pad - h - 16), f"{value:.2f}s", fill="black", font=font)
        draw.text((x, height - pad + 5), r.name, fill="black", font=font)
        draw.text((x, height - pad + 22), f"{r.polls:.1f} polls/job", fill="black", font=font)
    draw.text((width - 220, 15), "blue: median  orange: p95", fill="black", font=font)
    image.save(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small numbers, for a smoke test")
    args = parser.parse_args()
    jobs, warmup, crowd, calls = (30, 10, 100, 10) if args.quick else (200, 20, 1000, 50)
    OUT.mkdir(exist_ok=True)
    print("waiting strategies...", file=sys.stderr)
    strategies = asyncio.run(waiting_strategies(jobs, warmup))
    print("concurrency...", file=sys.stderr)
    crowd_result = asyncio.run(concurrency(crowd, 5.0))
    print("overhead...", file=sys.stderr)
    costs = overhead(calls)
    print("start-up...", file=sys.stderr)
    starts = startup()

    lines = [
        f"Run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {platform.node()} ({os.cpu_count()} CPUs, "
        f"{platform.python_implementation()} {platform.python_version()}, {platform.machine()}); "
        f"command: `python benchmarks/run.py{' --quick' if args.quick else ''}`",
        "",
        f"### Waiting strategies ({jobs} concurrent jobs, durations uniform 4.5-8.5 s, "
        f"after {warmup} warm-up jobs)",
        "",
        "| strategy | median detection | p95 detection | status requests / job | wall time |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {r.name} | {r.median:.3f} s | {r.p95:.3f} s | {r.polls:.2f} | {r.wall:.1f} s |"
        for r in strategies
    ]
    lines += [
        "",
        f"### Concurrency ({crowd_result['jobs']} generations of "
        f"{crowd_result['job_duration']:g} s through one AsyncMAIImageClient)",
        "",
        "| wall time | peak RSS increase | errors | status requests | connections opened |",
        "|---|---|---|---|---|",
        f"| {crowd_result['wall']:.2f} s | {crowd_result['rss_increase_mb']:.1f} MB "
        f"| {crowd_result['errors']} | {crowd_result['status_requests']} "
        f"| {crowd_result['connections_opened']} |",
        "",
        f"### Per-call time on instant jobs (mean of {calls})",
        "",
        "| path | per call | over the layer below |",
        "|---|---|---|",
    ]
    order = list(costs)
    below = {
        "MAIImageClient.generate": "raw httpx (POST + 1 GET)",
        "LangChain tool.invoke": "MAIImageClient.generate",
        "MCP over stdio": "MAIImageClient.generate",
        "MCP over HTTP": "MAIImageClient.generate",
    }
    for name in order:
        extra = f"{(costs[name] - costs[below[name]]) * 1000:+.2f} ms" if name in below else ""
        lines.append(f"| {name} | {costs[name] * 1000:.2f} ms | {extra} |")
    lines += ["", "### Start-up", "", "| what | time |", "|---|---|"]
    lines += [f"| {k} | {v:.3f} s |" for k, v in starts.items()]
    table = "\n".join(lines)
    print(table)
    (OUT / "results.md").write_text(table + "\n")
    (OUT / "results.json").write_text(
        json.dumps(
            {
                "strategies": [
                    {k: v for k, v in vars(r).items() if k != "latencies"} for r in strategies
                ],
                "concurrency": crowd_result,
                "overhead_s": costs,
                "startup_s": starts,
            },
            indent=2,
        )
    )
    chart(strategies, OUT / "waiting.png")
    print(f"\nwrote {OUT / 'results.md'} and {OUT / 'waiting.png'}", file=sys.stderr)


if __name__ == "__main__":
    main()
