"""``kill -9`` a ``mai-image batch`` run at random moments, rerun it each time, and count.

    python benchmarks/batch_kill.py                 # 500 prompts, 5 kills
    python benchmarks/batch_kill.py --seed 3

The emulator (its own process) counts every POST it receives. After the kills and the final
rerun(s), every line must be COMPLETED with its image on disk, and the POSTs must equal the
number of lines plus at most the lines the rerun reports UNKNOWN (their first POST may have
arrived; they are resent only with --resubmit-unknown). A killed run's manifest may show more
lines UNKNOWN (those in the middle of their POST when it was written); they are counted
apart and do not excuse an extra POST.

After each kill the journal tells how many lines the next run will report UNKNOWN for it
(``left_submitting``): at most the POSTs then on the wire, so at most the client's 32 request
slots, whatever ``--concurrency``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mai_tools.emulator import spawn_emulator


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--prompts", type=int, default=500)
    parser.add_argument("--kills", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--long-side", type=int, default=None, help="emulator image size, px")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    with (
        tempfile.TemporaryDirectory() as tmp,
        spawn_emulator(
            min_duration=0.5, max_duration=2.0, seed=args.seed, long_side=args.long_side
        ) as emu,
    ):
        source = Path(tmp) / "prompts.txt"
        source.write_text("".join(f"kill benchmark prompt {i}\n" for i in range(args.prompts)))
        out = Path(tmp) / "out"
        env = {**os.environ, "PIXAZO_API_KEY": emu.api_key, "PIXAZO_BASE_URL": emu.base_url}
        base = [
            sys.executable, "-c", "from mai_tools.cli import main; main()", "batch", str(source),
            "--out", str(out), "--concurrency", str(args.concurrency), "-q",
        ]  # fmt: skip
        kills: list[dict[str, object]] = []
        unknown_seen: set[str] = set()
        for _ in range(args.kills):
            proc = subprocess.Popen(base, env=env, stdout=subprocess.DEVNULL)
            delay = rng.uniform(0.8, 6.0)  # start-up is ~0.6 s: kills land mid-run
            time.sleep(delay)
            ended_first = proc.poll() is not None
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            stats = emu.stats()
            submitting = _left_submitting(out)
            if (out / "manifest.jsonl").exists():
                for line in (out / "manifest.jsonl").read_text().splitlines():
                    data = json.loads(line)
                    if data["status"] == "UNKNOWN":
                        unknown_seen.add(data["id"])
            kills.append(
                {"after_s": round(delay, 2), "posts_so_far": stats.submissions,
                 "left_submitting": submitting,
                 "finished_before_kill": ended_first}
            )  # fmt: skip
        final = subprocess.run([*base, "--json"], env=env, capture_output=True, text=True)
        summary = json.loads(final.stdout)
        unknown_final = summary["counts"].get("UNKNOWN", 0)
        lines = [json.loads(x) for x in (out / "manifest.jsonl").read_text().splitlines()]
        unknown_seen |= {d["id"] for d in lines if d["status"] == "UNKNOWN"}
        final_errors = sorted(
            {str(d["error"])[:160] for d in lines if d["status"] != "UNKNOWN" and d["error"]}
        )
        # What made the rerun exit as it did (an exit 7 names its unsaved lines here).
        final_detail = {
            key: summary.get(key)
            for key in ("counts", "unsaved", "running", "not_submitted", "disk_trouble",
                        "manifest_error", "hold_reason", "stop_reason", "gateway_trouble")
        }  # fmt: skip
        final_unsaved = [
            {"id": d["id"], "status": d["status"], "paths": d["paths"], "error": d["error"]}
            for d in lines
            if d["status"] == "COMPLETED" and not d["paths"]
        ][:5]
        resent = None
        if unknown_final:
            resent = subprocess.run(
                [*base, "--json", "--resubmit-unknown"], env=env, capture_output=True, text=True
            )
            summary = json.loads(resent.stdout)
            lines = [json.loads(x) for x in (out / "manifest.jsonl").read_text().splitlines()]
        stats = emu.stats()
        on_disk = sum(1 for d in lines for p in d["paths"] if (out / p).is_file())
    result = {
        "prompts": args.prompts,
        "kills": kills,
        "final_exit_code": final.returncode,
        "final_errors_besides_unknown": final_errors,
        "final_summary": final_detail,
        "final_unsaved_lines": final_unsaved,
        "unknown_lines": unknown_final,
        "unknown_in_killed_runs_manifests": len(unknown_seen),
        "resubmit_unknown_exit_code": None if resent is None else resent.returncode,
        "completed_lines": sum(1 for d in lines if d["status"] == "COMPLETED"),
        "images_on_disk": on_disk,
        "posts": stats.submissions,
        "jobs_created": stats.jobs_created,
        "posts_beyond_one_per_line": stats.submissions - args.prompts,
        "ok": stats.submissions - args.prompts <= unknown_final
        and on_disk == args.prompts
        and summary["clean"],
    }
    print(json.dumps(result, indent=2))


def _left_submitting(out: Path) -> int:
    """Lines a killed run left "submitting": the next run reports them UNKNOWN."""
    path = out / "journal.sqlite3"
    if not path.exists():
        return 0
    with contextlib.closing(sqlite3.connect(path)) as db:
        found = db.execute("SELECT count(*) FROM lines WHERE state = 'submitting'").fetchone()
        return int(found[0])


if __name__ == "__main__":
    main()
