"""The README's test command, after its installs, run N times while the machine is kept busy.

    python benchmarks/suite_under_load.py                # 3 runs, one busy process per core
    python benchmarks/suite_under_load.py --load 0 -n 1  # one run on a quiet machine
    python benchmarks/suite_under_load.py --stress-ng    # stress-ng --cpu N as the load

Run it from the repository root after the README command's installs (``.venv``, ``.ci/node``,
``.ci/tasks-venv``). The checks are read from README.md, so this measures exactly what CI runs:
every step of the test command from ``ruff check`` on (ruff, ruff format, mypy, pytest under
coverage, the coverage floor). The load is ``--load`` processes spinning ``while True: pass``
(or ``stress-ng --cpu``), started before each run and killed by their process ids after it.
Besides wall time, each run reports the CPU seconds the checks used (user + system, every
process they waited for): on a machine shared with other work, CPU seconds / cores is a floor
for the wall time the same run needs on a quiet machine of that many cores.

Goal (issue 20): every run passes, and a quiet run takes at most 5 minutes on a 2-core machine.
Prints one line per run and a summary; exits 1 if any run failed. Each run's output is kept in
``--logs`` (default: a temporary folder, printed at the end).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIRST_CHECK = ".venv/bin/ruff check"


def checks_command(readme: Path) -> str:
    """The README test command's steps from ``ruff check`` on (its installs dropped)."""
    text = readme.read_text(encoding="utf-8")
    found = re.search(r"<!-- test-command -->\s*```bash\n(.*?)\n```", text, re.DOTALL)
    if found is None:
        raise SystemExit("README.md: no test command after <!-- test-command -->")
    command = " ".join(found.group(1).split())
    start = command.find(FIRST_CHECK)
    if start < 0:
        raise SystemExit(f"README.md: the test command has no {FIRST_CHECK!r} step")
    return command[start:]


def start_load(count: int, use_stress_ng: bool) -> list[subprocess.Popen[bytes]]:
    if count <= 0:
        return []
    if use_stress_ng:
        stress = shutil.which("stress-ng")
        if stress is None:
            raise SystemExit("stress-ng is not installed (apt-get install stress-ng)")
        return [
            subprocess.Popen(
                [stress, "--cpu", str(count), "--quiet"],
                stdout=subprocess.DEVNULL,
                start_new_session=True,
            )
        ]
    spin = [sys.executable, "-c", "while True: pass"]
    return [
        subprocess.Popen(spin, stdout=subprocess.DEVNULL, start_new_session=True)
        for _ in range(count)
    ]


def stop_load(load: list[subprocess.Popen[bytes]]) -> None:
    for process in load:
        # Each load process leads its own session (stress-ng forks its workers into it): end
        # that group, by the id of the process this script started, and nothing else.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
    for process in load:
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def summary_line(output: str) -> str:
    """pytest's last summary line (``N passed ... in Ns``), or the last line of output."""
    for line in reversed(output.splitlines()):
        if re.search(r"\b(passed|failed|error)\b.* in [\d.]+s", line):
            return line.strip("= ")
    lines = output.strip().splitlines()
    return lines[-1] if lines else ""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-n", "--runs", type=int, default=3)
    parser.add_argument(
        "--load", type=int, default=os.cpu_count() or 2, help="busy processes (0: quiet run)"
    )
    parser.add_argument("--stress-ng", action="store_true", help="stress-ng --cpu as the load")
    parser.add_argument("--logs", type=Path, default=None, help="folder for each run's output")
    parser.add_argument("--command", default=None, help="run this instead of the README's checks")
    args = parser.parse_args()

    command = args.command or checks_command(ROOT / "README.md")
    logs = args.logs or Path(tempfile.mkdtemp(prefix="suite-under-load-"))
    logs.mkdir(parents=True, exist_ok=True)
    load_kind = "stress-ng --cpu" if args.stress_ng else "busy-loop processes"
    print(f"command: {command}")
    print(f"load: {args.load} {load_kind}; runs: {args.runs}; cores: {os.cpu_count()}")

    outcomes: list[tuple[bool, float]] = []
    for run in range(1, args.runs + 1):
        load = start_load(args.load, args.stress_ng)
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.monotonic()
        try:
            done = subprocess.run(
                ["bash", "-euo", "pipefail", "-c", command],
                cwd=ROOT,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                check=False,
            )
            seconds = time.monotonic() - started
            # CPU seconds of the checks and every process they waited for; read before the
            # load processes are reaped, so their CPU is not counted.
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
        finally:
            stop_load(load)
        cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
        log = logs / f"run-{run}.log"
        log.write_text(done.stdout, encoding="utf-8")
        passed = done.returncode == 0
        outcomes.append((passed, seconds))
        verdict = "PASS" if passed else f"FAIL (exit {done.returncode})"
        print(
            f"run {run}: {verdict} in {seconds:.0f} s wall, {cpu:.0f} s CPU; "
            f"{summary_line(done.stdout)}; {log}"
        )
        sys.stdout.flush()

    passes = sum(ok for ok, _ in outcomes)
    times = sorted(seconds for _, seconds in outcomes)
    print(
        f"{passes} of {len(outcomes)} runs passed; wall time min {times[0]:.0f} s, "
        f"median {times[len(times) // 2]:.0f} s, max {times[-1]:.0f} s; logs in {logs}"
    )
    return 0 if passes == len(outcomes) else 1


if __name__ == "__main__":
    raise SystemExit(main())
