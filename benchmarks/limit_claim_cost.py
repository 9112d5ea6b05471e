"""What a daily spending limit adds to a claim, by how many jobs the book holds for the day.

    python benchmarks/limit_claim_cost.py                   # SQLite
    python benchmarks/limit_claim_cost.py --postgres auto   # and a local Postgres

A limited claim sums the day's images in the database (one transaction under the book's limit
lock), so it costs more as the day fills: this measures the mean of ``--samples`` claims with
per-principal and server limits, with a per-principal limit only, and without limits, with 0,
1,000 and 10,000 jobs of 50 principals already written today (prompts of ~280 characters, as
the book keeps them).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests.support.postgres

from mai_tools.jobbook import JobBook, JobRecord, SpendingLimits, SQLiteJobBook  # noqa: E402
from mai_tools.jobbook._record import new_id, owner  # noqa: E402

SIZES = (0, 1000, 10000)
LIMITS = SpendingLimits(server_daily_images=10**9, daily_images=10**9)
PRINCIPAL_LIMITS = SpendingLimits(daily_images=10**9)  # the sum reads one principal's rows


def record(principal: str) -> JobRecord:
    return JobRecord(
        id=new_id(),
        principal=principal,
        surface="mcp",
        operation="generate",
        fingerprint=new_id(),
        fields={"prompt": "a long prompt " * 20, "num_images": 1, "aspect_ratio": "1:1"},
        prompt="a long prompt",
        gateway="https://gateway.test",
        owner=owner(),
    )


def mean_ms(book: JobBook, samples: int, limits: SpendingLimits | None) -> float:
    started = time.perf_counter()
    for _ in range(samples):
        book.claim(record("ann"), 60.0, limits=limits)
    return (time.perf_counter() - started) / samples * 1000


def measure(book: JobBook, samples: int) -> list[tuple[int, float, float, float]]:
    rows, written = [], 0
    for size in SIZES:
        while written < size:
            book.claim(record(f"p{written % 50}"), 60.0)
            written += 1
        limited = mean_ms(book, samples, LIMITS)
        principal = mean_ms(book, samples, PRINCIPAL_LIMITS)
        plain = mean_ms(book, samples, None)
        written += 3 * samples
        rows.append((size, limited, principal, plain))
    return rows


def main(postgres: str | None, samples: int) -> None:
    print(
        "| book | jobs today | limited claim (ms) | principal limit only (ms) | plain claim (ms) |"
    )
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        books: list[JobBook] = [SQLiteJobBook(Path(tmp) / "jobs.sqlite3")]
        if postgres:
            from mai_tools.jobbook._postgres import PostgresJobBook

            books.append(PostgresJobBook(postgres))
        for book in books:
            for size, limited, principal, plain in measure(book, samples):
                print(f"| {book.kind} | {size} | {limited:.2f} | {principal:.2f} | {plain:.2f} |")
            book.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--postgres", help="a postgresql:// URL (an empty database), or 'auto'")
    parser.add_argument("--samples", type=int, default=50)
    ns = parser.parse_args()
    if ns.postgres == "auto":
        from tests.support.postgres import postgres_server

        with postgres_server() as url:
            main(url, ns.samples)
    else:
        main(ns.postgres, ns.samples)
