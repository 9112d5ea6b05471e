"""Where the test suite's time goes: each test's wall time and the CPU it used, as a pytest plugin.

    .venv/bin/coverage run -m pytest -n auto --dist worksteal -p benchmarks.suite_time
    python benchmarks/suite_time.py                 # the tables, from benchmarks/out/test-time/

Each pytest process (the main one, or each xdist worker) writes one tab-separated file into
``MAI_TEST_TIME_DIR`` (default ``benchmarks/out/test-time``): per test (setup, call and teardown
together), its wall seconds and the CPU seconds of the process and of the subprocesses it waited
for. Wall time the CPU does not account for is time the test waited: sleeping, or on a server in
another thread of the same process (counted as CPU, not as a wait), or for the machine. A test
with much wall and little CPU, on a quiet machine, sleeps through real time: the place for an
injected clock. A test with much CPU costs that on any machine (subprocesses under coverage
are the usual cause). Reading the files prints the longest, the most CPU-hungry and the
most idle tests.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from collections.abc import Generator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DIR = ROOT / "benchmarks" / "out" / "test-time"


def _cpu() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


_rows: list[tuple[str, float, float]] = []


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Generator[None, object, object]:
    wall, cpu = time.monotonic(), _cpu()
    try:
        return (yield)
    finally:
        _rows.append((item.nodeid, time.monotonic() - wall, _cpu() - cpu))


def pytest_sessionfinish(session: pytest.Session) -> None:
    if not _rows:
        return
    folder = Path(os.environ.get("MAI_TEST_TIME_DIR", DEFAULT_DIR))
    folder.mkdir(parents=True, exist_ok=True)
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    lines = [f"{nodeid}\t{wall:.3f}\t{cpu:.3f}\n" for nodeid, wall, cpu in _rows]
    (folder / f"{worker}.tsv").write_text("".join(lines), encoding="utf-8")


def read(folder: Path) -> list[tuple[str, float, float]]:
    """(test, wall seconds, CPU seconds) of every file in ``folder``."""
    rows = []
    for path in sorted(folder.glob("*.tsv")):
        for line in path.read_text(encoding="utf-8").splitlines():
            nodeid, wall, cpu = line.split("\t")
            rows.append((nodeid, float(wall), float(cpu)))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("folder", nargs="?", type=Path, default=DEFAULT_DIR)
    parser.add_argument("-n", "--top", type=int, default=15)
    args = parser.parse_args(argv)
    rows = read(args.folder)
    if not rows:
        print(f"no test times in {args.folder}", file=sys.stderr)
        return 1
    wall = sum(r[1] for r in rows)
    cpu = sum(r[2] for r in rows)
    print(f"{len(rows)} tests: {wall:.0f} s of wall time in the workers, {cpu:.0f} s of CPU")
    tables = (
        ("longest", lambda r: r[1]),
        ("most CPU", lambda r: r[2]),
        ("most waiting (wall - CPU)", lambda r: r[1] - r[2]),
    )
    for title, key in tables:
        print(f"\n{title}:\n  wall s   CPU s  test")
        for nodeid, w, c in sorted(rows, key=key, reverse=True)[: args.top]:
            print(f"  {w:6.1f}  {c:6.1f}  {nodeid}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
