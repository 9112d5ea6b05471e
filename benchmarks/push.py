"""Push waiting vs polling, against the emulator in its own process, over loopback.

    python benchmarks/push.py            # 200 jobs per strategy, 1,000 for the crowd (~3 min)
    python benchmarks/push.py --quick    # smaller numbers, for a smoke test

Strategies, each through one AsyncMAIImageClient on 200 concurrent jobs of 4.5-8.5 s after 20
warm-up jobs: the vendor's 5 s loop, a fixed 1 s poller, mai-tools adaptive polling, and push
waiting (a WebhookReceiver: one confirming status read per callback). Then push with 30% of
the callbacks dropped and the rest duplicated, and 1,000 concurrent 5 s jobs with push.

Detection latency = when the client returned the result minus when the emulator's job
completed (both wall clock on this machine). Status reads per job = the emulator's count.
Writes benchmarks/out/push.md and push.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mai_tools import AsyncMAIImageClient, PollPolicy, WebhookReceiver
from mai_tools.emulator import RemoteEmulator, spawn_emulator

OUT = Path(__file__).resolve().parent / "out"


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


async def _batch(client: AsyncMAIImageClient, count: int, tag: str) -> list[tuple[str, float]]:
    async def one(i: int) -> tuple[str, float]:
        result = await client.generate(f"{tag} job {i}", timeout=120)
        return result.request_id, time.time()

    return list(await asyncio.gather(*(one(i) for i in range(count))))


async def _strategy(
    emu: RemoteEmulator,
    name: str,
    policy: PollPolicy,
    receiver: WebhookReceiver | None,
    jobs: int,
    warmup: int,
    faults: dict[str, Any] | None = None,
) -> dict[str, Any]:
    async with AsyncMAIImageClient(
        emu.api_key, base_url=emu.base_url, poll_policy=policy, webhooks=receiver
    ) as client:
        # The faults are on during the warm-up too: the client learns that callbacks get lost.
        emu.set_faults(**(faults or {}))
        await _batch(client, warmup, "warm-up")
        emu.reset()  # restores the configured faults: set them again
        emu.set_faults(**(faults or {}))
        start = time.monotonic()
        done = await _batch(client, jobs, "measured")
        wall = time.monotonic() - start
        lost_seen = client._core.callbacks.lost()
    await asyncio.sleep(0.5)  # let duplicated callbacks land before reading the records
    stats = emu.stats()
    latencies = {rid: returned - stats.finished_at[rid] for rid, returned in done}
    reads = [stats.polls[rid] for rid, _ in done]
    dropped = {d["request_id"] for d in stats.webhook_deliveries if d["outcome"] == "dropped"}
    out: dict[str, Any] = {
        "name": name,
        "jobs": len(done),
        "median": statistics.median(latencies.values()),
        "p95": _pct(list(latencies.values()), 0.95),
        "max": max(latencies.values()),
        "reads": statistics.mean(reads),
        "wall": wall,
    }
    if receiver is not None:
        arrived = [latencies[rid] for rid in latencies if rid not in dropped]
        lost = [latencies[rid] for rid in latencies if rid in dropped]
        out["callbacks_dropped"] = len(lost)
        out["lost_recent_at_end"] = lost_seen
        if arrived:
            arrived_reads = [stats.polls[rid] for rid in latencies if rid not in dropped]
            out["arrived_median"] = statistics.median(arrived)
            out["arrived_reads"] = statistics.mean(arrived_reads)
        if lost:
            out["lost_median"] = statistics.median(lost)
            out["lost_max"] = max(lost)
    print(f"  {name}: median {out['median']:.3f}s, {out['reads']:.2f} reads", file=sys.stderr)
    return out


async def waiting(jobs: int, warmup: int, receiver: WebhookReceiver) -> list[dict[str, Any]]:
    results = []
    with spawn_emulator(min_duration=4.5, max_duration=8.5, seed=7) as emu:
        for name, policy, rx in [
            ("vendor loop, every 5 s", PollPolicy.fixed(5.0), None),
            ("fixed 1 s", PollPolicy.fixed(1.0), None),
            ("mai-tools adaptive polling", PollPolicy(), None),
            ("push (WebhookReceiver)", PollPolicy(), receiver),
        ]:
            results.append(await _strategy(emu, name, policy, rx, jobs, warmup))
        faults = {"webhook_drop_rate": 0.3, "webhook_duplicate_rate": 1.0}
        name = "push, 30% dropped + duplicated"
        results.append(await _strategy(emu, name, PollPolicy(), receiver, jobs, warmup, faults))
    return results


async def crowd(count: int, duration: float, receiver: WebhookReceiver) -> dict[str, Any]:
    with spawn_emulator(min_duration=duration, max_duration=duration) as emu:
        async with AsyncMAIImageClient(
            emu.api_key, base_url=emu.base_url, webhooks=receiver
        ) as client:
            # Learned first: with nothing learned the first fallback read comes at 5 s, just
            # when these 5 s jobs end, and it (not the callback) would detect most of them.
            await _batch(client, 20, "warm-up")
            emu.reset()
            rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            start = time.monotonic()
            outcomes = await asyncio.gather(
                *(client.generate(f"crowd {i}", timeout=120) for i in range(count)),
                return_exceptions=True,
            )
            wall = time.monotonic() - start
        rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        stats = emu.stats()
    errors = [o for o in outcomes if isinstance(o, BaseException)]
    return {
        "jobs": count,
        "job_duration": duration,
        "wall": wall,
        "rss_increase_mb": (rss_after - rss_before) / 1024,
        "errors": len(errors),
        "status_requests": stats.status_requests,
        "callbacks_sent": sum(1 for d in stats.webhook_deliveries if d["outcome"] == "sent"),
        "tokens_left": receiver.stats()["waiting"] + receiver.stats()["parked"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small numbers, for a smoke test")
    args = parser.parse_args()
    jobs, warmup, many = (30, 10, 200) if args.quick else (200, 20, 1000)
    OUT.mkdir(exist_ok=True)
    with WebhookReceiver() as receiver:
        print("waiting strategies...", file=sys.stderr)
        strategies = asyncio.run(waiting(jobs, warmup, receiver))
        print("crowd...", file=sys.stderr)
        crowd_result = asyncio.run(crowd(many, 5.0, receiver))
        counts = receiver.stats()
    lines = [
        f"Run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {platform.node()} ({os.cpu_count()} CPUs, "
        f"{platform.python_implementation()} {platform.python_version()}); command: "
        f"`python benchmarks/push.py{' --quick' if args.quick else ''}`",
        "",
        f"{jobs} concurrent jobs of 4.5-8.5 s per strategy, after {warmup} warm-up jobs:",
        "",
        "| strategy | median detection | p95 detection | max | status reads / job | wall |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['name']} | {r['median'] * 1000:.0f} ms | {r['p95'] * 1000:.0f} ms "
        f"| {r['max']:.2f} s | {r['reads']:.2f} | {r['wall']:.1f} s |"
        for r in strategies
    ]
    faulty = strategies[-1]
    lines += [
        "",
        f"Push with 30% dropped: {faulty['jobs']} of {jobs} jobs completed; "
        f"{faulty.get('callbacks_dropped', 0)} callbacks dropped; lost-callback jobs detected "
        f"{faulty.get('lost_median', 0):.2f} s (median) / {faulty.get('lost_max', 0):.2f} s (max) "
        f"after they finished; jobs whose callback arrived: median "
        f"{faulty.get('arrived_median', 0) * 1000:.0f} ms, "
        f"{faulty.get('arrived_reads', 0):.2f} reads.",
        "",
        f"{crowd_result['jobs']} concurrent {crowd_result['job_duration']:g} s jobs with push: "
        f"wall {crowd_result['wall']:.2f} s, RSS +{crowd_result['rss_increase_mb']:.1f} MB, "
        f"{crowd_result['errors']} errors, {crowd_result['status_requests']} status reads, "
        f"{crowd_result['callbacks_sent']} callbacks sent, "
        f"{crowd_result['tokens_left']} tokens left registered.",
        "",
        f"Receiver counters: {counts}",
    ]
    table = "\n".join(lines)
    print(table)
    (OUT / "push.md").write_text(table + "\n")
    (OUT / "push.json").write_text(
        json.dumps({"strategies": strategies, "crowd": crowd_result, "receiver": counts}, indent=2)
    )


if __name__ == "__main__":
    main()
