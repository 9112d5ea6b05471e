"""Benchmark of ``mai-image batch``: many prompts through one process, emulator in another.

    python benchmarks/batch_run.py                      # 10,000 prompts, 5 s jobs, -c 200
    python benchmarks/batch_run.py --prompts 2000       # a smaller run

The batch runs as a real ``mai-image batch`` process (so its peak RSS is its own); the
emulator runs in its own process too (``spawn_emulator``). Start-up is the time from launching
the batch to its first POST reaching the emulator; the ideal wall time is
``prompts / concurrency * duration`` plus that start-up.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mai_tools.emulator import spawn_emulator


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--prompts", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--format", default="png", choices=("png", "jpeg", "webp"))
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory() as tmp,
        spawn_emulator(min_duration=args.duration, max_duration=args.duration) as emu,
    ):
        source = Path(tmp) / "prompts.jsonl"
        source.write_text(
            "".join(
                json.dumps({"prompt": f"benchmark prompt {i}", "output_format": args.format}) + "\n"
                for i in range(args.prompts)
            )
        )
        out = Path(tmp) / "out"
        env = {**os.environ, "PIXAZO_API_KEY": emu.api_key, "PIXAZO_BASE_URL": emu.base_url}
        command = [
            sys.executable, "-c", "from mai_tools.cli import main; main()", "batch", str(source),
            "--out", str(out), "--concurrency", str(args.concurrency), "--json", "-q",
        ]  # fmt: skip
        launched = time.monotonic()
        proc = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
        wall = time.monotonic() - launched
        rss_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        stats = emu.stats()
        summary = json.loads(proc.stdout)
        first_post = min(r.at for r in stats.requests if r.method == "POST")
        startup = first_post - launched
        ideal = args.prompts / args.concurrency * args.duration + startup
        images = len(list((out / "images").iterdir()))
    result = {
        "prompts": args.prompts,
        "concurrency": args.concurrency,
        "job_duration_s": args.duration,
        "format": args.format,
        "exit_code": proc.returncode,
        "wall_s": round(wall, 2),
        "startup_s": round(startup, 2),
        "ideal_s": round(ideal, 2),
        "over_ideal_pct": round((wall / ideal - 1) * 100, 2),
        "peak_rss_mb": round(rss_mb, 1),
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
