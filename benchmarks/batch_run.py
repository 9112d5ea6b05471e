"""Benchmark of ``mai-image batch``: many prompts through one process, emulator in another.

    python benchmarks/batch_run.py                      # 10,000 prompts, 5 s jobs, -c 200
    python benchmarks/batch_run.py --prompts 2000       # a smaller run
    python benchmarks/batch_run.py --profile prof.out   # cProfile the batch process
    python benchmarks/batch_run.py --job-book off       # without the job book

The batch writes every job into a job book (as by default), a fresh file in the run's
temporary directory unless ``--job-book`` names one (or ``off``): never the user's own book.

The batch runs as a real ``mai-image batch`` process (so its peak RSS is its own); the
emulator runs in its own process too (``spawn_emulator``). Start-up is the time from launching
the batch to its first POST reaching the emulator; the ideal wall time is
``prompts / concurrency * duration`` plus that start-up.

The emulator draws 64-px images by default (``--long-side``): drawing a 1024-px PNG costs the
emulator ~37 ms of CPU per download, which made the renderer, not the batch, the bottleneck.
This benchmark measures the batch; ``--long-side 1024`` restores the full-size images.
CPU seconds of both processes are reported (user + system), to tell which one limits a run.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mai_tools.emulator import spawn_emulator

_TICK = os.sysconf("SC_CLK_TCK")


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a live process (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def _emulator_pid() -> int | None:
    """The emulator: our child process running ``mai_tools.emulator``."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == os.getpid() and re.search(rb"mai_tools\.emulator", cmdline):
            return int(entry.name)
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--prompts", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--format", default="png", choices=("png", "jpeg", "webp"))
    parser.add_argument("--long-side", type=int, default=64, help="emulator image size, px")
    parser.add_argument("--profile", metavar="FILE", help="write a cProfile of the batch here")
    parser.add_argument("--job-book", metavar="PATH|URL|off", help="default: a fresh file")
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory() as tmp,
        spawn_emulator(
            min_duration=args.duration, max_duration=args.duration, long_side=args.long_side
        ) as emu,
    ):
        emulator_pid = _emulator_pid()
        emulator_cpu_before = _cpu_seconds(emulator_pid) if emulator_pid else 0.0
        source = Path(tmp) / "prompts.jsonl"
        source.write_text(
            "".join(
                json.dumps({"prompt": f"benchmark prompt {i}", "output_format": args.format}) + "\n"
                for i in range(args.prompts)
            )
        )
        out = Path(tmp) / "out"
        env = {**os.environ, "PIXAZO_API_KEY": emu.api_key, "PIXAZO_BASE_URL": emu.base_url}
        env["MAI_JOB_BOOK"] = args.job_book or str(Path(tmp) / "jobs.sqlite3")
        code = "from mai_tools.cli import main; main()"
        if args.profile:
            code = (
                "import cProfile; cProfile.run('from mai_tools.cli import main; main()', "
                f"{str(Path(args.profile).absolute())!r})"
            )
        command = [
            sys.executable, "-c", code, "batch", str(source),
            "--out", str(out), "--concurrency", str(args.concurrency), "--json", "-q",
        ]  # fmt: skip
        launched = time.monotonic()
        proc = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
        wall = time.monotonic() - launched
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        rss_mb = usage.ru_maxrss / 1024
        batch_cpu = usage.ru_utime + usage.ru_stime
        emulator_cpu = _cpu_seconds(emulator_pid) - emulator_cpu_before if emulator_pid else None
        stats = emu.stats()
        summary = json.loads(proc.stdout)
        first_post = min(r.at for r in stats.requests if r.method == "POST")
        startup = first_post - launched
        ideal = args.prompts / args.concurrency * args.duration + startup
        finished = sorted(stats.finished_at_monotonic.values())
        seen = stats.first_seen_finished_at_monotonic
        lags = sorted(seen[k] - stats.finished_at_monotonic[k] for k in seen)
        # A worker freed by the k-th job seen finished sends the (concurrency + k)-th POST.
        posts = sorted(r.at for r in stats.requests if r.method == "POST")
        seen_order = sorted(seen.values())
        refill = sorted(
            posts[args.concurrency + k] - seen_order[k]
            for k in range(min(len(seen_order), len(posts) - args.concurrency))
        )
        images = len(list((out / "images").iterdir()))
    result = {
        "prompts": args.prompts,
        "concurrency": args.concurrency,
        "job_duration_s": args.duration,
        "format": args.format,
        "job_book": "off" if args.job_book == "off" else "on",
        "exit_code": proc.returncode,
        "wall_s": round(wall, 2),
        "startup_s": round(startup, 2),
        "ideal_s": round(ideal, 2),
        "over_ideal_pct": round((wall / ideal - 1) * 100, 2),
        "peak_rss_mb": round(rss_mb, 1),
        "batch_cpu_s": round(batch_cpu, 1),
        "batch_cpu_pct_of_wall": round(batch_cpu / wall * 100, 1),
        "emulator_cpu_s": None if emulator_cpu is None else round(emulator_cpu, 1),
        "long_side_px": args.long_side,
        "last_job_finished_s": round(finished[-1] - launched, 2) if finished else None,
        "detection_lag_median_s": round(lags[len(lags) // 2], 2) if lags else None,
        "detection_lag_mean_s": round(sum(lags) / len(lags), 3) if lags else None,
        "detection_lag_p90_s": round(lags[int(len(lags) * 0.9)], 2) if lags else None,
        "detection_lag_max_s": round(lags[-1], 2) if lags else None,
        "refill_gap_mean_s": round(sum(refill) / len(refill), 3) if refill else None,
        "journal_s": round(summary["journal_seconds"], 2),
        "journal_pct_of_wall": round(summary["journal_seconds"] / wall * 100, 2),
        "journal_writes": summary["journal_writes"],
        "posts": stats.submissions,
        "jobs_created": stats.jobs_created,
        "status_requests": stats.status_requests,
        "images_on_disk": images,
        "counts": summary["counts"],
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
