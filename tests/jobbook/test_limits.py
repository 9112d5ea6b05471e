"""Spending limits in the job book: the check and the reservation are one atomic step, on
SQLite and on a real Postgres server (every test that takes ``job_book`` runs on both).

Races start threads (and processes) at one barrier and count what was created: no sleeps,
no timing assertions.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from mai_tools import SpendingLimitError, SpendingLimits
from mai_tools._exceptions import ConfigurationError
from mai_tools._policies import FakeClock
from mai_tools.jobbook import LOCAL_PRINCIPAL, Claim, JobBook, JobRecord
from mai_tools.jobbook._limits import check, resets_at
from mai_tools.jobbook._record import new_id, owner
from tests.jobbook.conftest import START, OpenBook

GATEWAY = "https://gateway.test"
CAP = 7
CALLERS = 50


def intent(
    *,
    images: int = 1,
    principal: str = LOCAL_PRINCIPAL,
    key: str | None = None,
    twin: str | None = None,
    gateway: str = GATEWAY,
) -> JobRecord:
    return JobRecord(
        id=new_id(),
        principal=principal,
        surface="mcp",
        operation="generate",
        fingerprint=f"fp-{key or twin or new_id()}",
        fields={"prompt": "a red fox", "num_images": images},
        prompt="a red fox",
        gateway=gateway,
        idempotency_key=key,
        twin_key=twin,
        owner=owner(),
    )


def claim(book: JobBook, limits: SpendingLimits, **kwargs: Any) -> Claim:
    return book.claim(intent(**kwargs), 60.0, limits=limits)


def refused(book: JobBook, limits: SpendingLimits, **kwargs: Any) -> SpendingLimitError:
    with pytest.raises(SpendingLimitError) as caught:
        claim(book, limits, **kwargs)
    return caught.value


def count(book: JobBook) -> int:
    return len(book.list(limit=None))


# ---------------------------------------------------------------------------------- limits


def test_daily_images_per_principal(job_book: JobBook) -> None:
    limits = SpendingLimits(daily_images=5)
    assert claim(job_book, limits, images=2).created
    assert claim(job_book, limits, images=2).created
    error = refused(job_book, limits, images=2)
    assert (error.limit_name, error.limit, error.used, error.remaining) == ("daily_images", 5, 4, 1)
    assert error.requested == 2
    assert error.resets_at == datetime.fromtimestamp(START - START % 86400 + 86400, UTC)
    assert "1 of the 5 are left today (4 used)" in str(error)
    assert "Nothing was sent" in str(error)
    assert "00:00 UTC" in str(error)
    assert "try again" not in str(error).lower()
    assert count(job_book) == 2, "the refused intent was rolled back"
    assert claim(job_book, limits, images=1).created
    last = refused(job_book, limits, images=1)
    assert last.remaining == 0
    assert "No image can be made until the limit resets" in str(last)
    # Another principal has a day of its own.
    assert claim(job_book, limits, images=5, principal="bob").created


def test_the_count_starts_again_at_utc_midnight(job_book: JobBook, book_clock: FakeClock) -> None:
    limits = SpendingLimits(daily_images=1)
    assert claim(job_book, limits).created
    error = refused(job_book, limits)
    assert error.resets_at is not None
    book_clock.advance(error.resets_at.timestamp() - book_clock.monotonic() - 0.5)
    refused(job_book, limits)
    book_clock.advance(1.0)
    assert claim(job_book, limits).created
    assert resets_at(book_clock.monotonic()) > error.resets_at


def test_server_daily_images_count_everyone(job_book: JobBook) -> None:
    limits = SpendingLimits(server_daily_images=3, daily_images=10)
    assert claim(job_book, limits, principal="ann", images=2).created
    error = refused(job_book, limits, principal="bob", images=2)
    assert (error.limit_name, error.used, error.remaining) == ("server_daily_images", 2, 1)
    assert "for all its users together" in str(error)
    assert claim(job_book, limits, principal="bob", images=1).created


def test_daily_spend_is_counted_in_decimal(job_book: JobBook) -> None:
    limits = SpendingLimits(price_per_image=Decimal("0.1"), daily_spend=Decimal("0.3"))
    for _ in range(3):  # 0.1 + 0.1 + 0.1 is 0.3 exactly (a float sum would pass 0.3)
        assert claim(job_book, limits).created
    error = refused(job_book, limits)
    assert (error.limit_name, error.limit, error.used, error.remaining) == (
        "daily_spend",
        Decimal("0.3"),
        Decimal("0.3"),
        Decimal(0),
    )
    assert error.currency == "USD"
    assert "0.3 USD a day" in str(error)
    assert "0.1 USD" in str(error)


def test_limits_are_per_gateway(job_book: JobBook) -> None:
    limits = SpendingLimits(daily_images=1)
    assert claim(job_book, limits).created
    assert claim(job_book, limits, gateway="http://127.0.0.1:9999").created  # an emulator


def test_jobs_written_without_limits_count_too(job_book: JobBook) -> None:
    """A CLI run sharing the book (no limits of its own) uses the principal's day as well."""
    assert job_book.claim(intent(images=3), 60.0).created
    error = refused(job_book, SpendingLimits(daily_images=4), images=2)
    assert error.used == 3


# ------------------------------------------------------------- what counts (the spec's rules)


def test_error_releases_its_images_and_failed_keeps_them(job_book: JobBook) -> None:
    limits = SpendingLimits(daily_images=2)
    first = claim(job_book, limits).record
    second = claim(job_book, limits).record
    refused(job_book, limits)
    job_book.submitted(first.id, "req-1", None, "QUEUED")
    job_book.finished("req-1", "ERROR", error="system error")  # "not charged"
    assert claim(job_book, limits).created, "an ERROR job's image is given back"
    job_book.submitted(second.id, "req-2", None, "QUEUED")
    job_book.finished("req-2", "FAILED", error="content policy")  # charged
    assert refused(job_book, limits).used == 2


def test_unknown_counts_and_a_released_intent_does_not(job_book: JobBook) -> None:
    limits = SpendingLimits(daily_images=2)
    sent = claim(job_book, limits).record
    never_sent = claim(job_book, limits).record
    job_book.unknown(sent.id, "the connection dropped after the POST")  # may be charged
    job_book.release(never_sent.id)  # a 429: certainly nothing was made
    assert claim(job_book, limits).created
    assert refused(job_book, limits).used == 2


def test_adopting_an_earlier_job_reserves_nothing_and_is_never_refused(
    job_book: JobBook,
) -> None:
    limits = SpendingLimits(daily_images=1)
    first = claim(job_book, limits, key="step-1")
    assert first.created
    again = claim(job_book, limits, key="step-1")
    assert not again.created
    assert again.record.id == first.record.id
    assert count(job_book) == 1


def test_a_twin_adopts_after_the_day_is_used_up(job_book: JobBook) -> None:
    limits = SpendingLimits(daily_images=1)
    assert claim(job_book, limits, twin="same call").created
    assert not claim(job_book, limits, twin="same call").created
    refused(job_book, limits, twin="another call")


def test_check_reserves_nothing(job_book: JobBook) -> None:
    limits = SpendingLimits(daily_images=2, max_images_per_call=2)
    check(job_book, limits, LOCAL_PRINCIPAL, GATEWAY, 2)
    check(job_book, limits, LOCAL_PRINCIPAL, GATEWAY, 2)
    assert count(job_book) == 0
    with pytest.raises(SpendingLimitError, match="at most 2 images"):
        check(job_book, limits, LOCAL_PRINCIPAL, GATEWAY, 3)
    assert claim(job_book, limits, images=2).created
    with pytest.raises(SpendingLimitError) as caught:
        check(job_book, limits, LOCAL_PRINCIPAL, GATEWAY, 1)
    assert caught.value.remaining == 0


# ------------------------------------------------------------------------------ the races


def _race(books: list[JobBook], limits: SpendingLimits, callers: int) -> tuple[int, int]:
    """``callers`` threads claim one image each at once (thread i on ``books[i % len]``)."""
    barrier = threading.Barrier(callers)
    created, refusals, errors = [], [], []

    def caller(i: int) -> None:
        book = books[i % len(books)]
        barrier.wait()
        try:
            if claim(book, limits, principal="ann").created:
                created.append(i)
        except SpendingLimitError:
            refusals.append(i)
        except Exception as exc:  # pragma: no cover - shown by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=caller, args=(i,)) for i in range(callers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    return len(created), len(refusals)


def test_fifty_threads_on_one_book_create_exactly_the_cap(job_book: JobBook) -> None:
    limits = SpendingLimits(daily_images=CAP)
    assert _race([job_book], limits, CALLERS) == (CAP, CALLERS - CAP)
    assert count(job_book) == CAP


def test_fifty_connections_create_exactly_the_cap(open_book: OpenBook) -> None:
    """Each caller its own book object (its own connection): the database decides."""
    books = [open_book() for _ in range(CALLERS)]
    limits = SpendingLimits(server_daily_images=CAP)
    assert _race(books, limits, CALLERS) == (CAP, CALLERS - CAP)
    assert count(books[0]) == CAP


_RACER = textwrap.dedent(
    """
    import sys, threading
    from mai_tools import SpendingLimitError, SpendingLimits
    from mai_tools.jobbook import JobRecord
    from mai_tools.jobbook._record import new_id, owner

    backend, location, callers, cap, start = sys.argv[1:6]
    if backend == "postgres":
        from mai_tools.jobbook._postgres import PostgresJobBook as Book
    else:
        from mai_tools.jobbook import SQLiteJobBook as Book
    clock = lambda: float(start)
    books = [Book(location, clock=clock) for _ in range(int(callers))]
    limits = SpendingLimits(daily_images=int(cap))
    barrier = threading.Barrier(int(callers) + 1)
    made = []

    def caller(book):
        record = JobRecord(
            id=new_id(), principal="ann", surface="mcp", operation="generate",
            fingerprint=new_id(), fields={"num_images": 1}, prompt=None,
            gateway="https://gateway.test", owner=owner(),
        )
        barrier.wait()
        try:
            made.append(book.claim(record, 60.0, limits=limits).created)
        except SpendingLimitError:
            pass

    threads = [threading.Thread(target=caller, args=(b,)) for b in books]
    for t in threads:
        t.start()
    print("ready", flush=True)
    sys.stdin.readline()  # the parent says go to every process at once
    barrier.wait()
    for t in threads:
        t.join()
    print(sum(made), flush=True)
    """
)


def test_two_processes_create_exactly_the_cap(backend: str, book_location: str) -> None:
    """Two replicas (processes) sharing one book, 25 callers each, race for CAP images; both
    open the new, empty book at once (Postgres: the tables are created one at a time)."""
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", _RACER, backend, book_location, "25", str(CAP), str(START)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=Path(__file__).resolve().parents[2],
        )
        for _ in range(2)
    ]
    try:
        for process in processes:
            assert process.stdout is not None
            assert process.stdout.readline().strip() == "ready"
        for process in processes:
            assert process.stdin is not None
            process.stdin.write("go\n")
            process.stdin.flush()
        made = []
        for process in processes:
            out, _ = process.communicate(timeout=120)
            assert process.returncode == 0
            made.append(int(out.strip()))
    finally:
        for process in processes:  # a failed step leaves no process holding the book
            if process.poll() is None:
                process.kill()
                process.communicate()
    assert sum(made) == CAP, made


# ------------------------------------------------------------------------------ bad limits


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"daily_images": -1}, "daily_images must be a whole number"),
        ({"daily_images": "ten"}, "'ten'"),
        ({"server_daily_images": 2.5}, "server_daily_images must be a whole number"),
        ({"max_images_per_call": True}, "max_images_per_call"),
        ({"price_per_image": "-0.04"}, "price_per_image must be a plain amount"),
        ({"price_per_image": "$0.04"}, "no sign or code"),
        ({"price_per_image": "nan"}, "'nan'"),
        ({"daily_spend": "5"}, "daily_spend needs price_per_image"),
        ({"currency": "dollars"}, "three-letter ISO 4217 code"),
    ],
)
def test_bad_limits_are_refused_with_what_to_do(kwargs: dict[str, Any], words: str) -> None:
    with pytest.raises(ConfigurationError, match=words.replace("$", r"\$")):
        SpendingLimits(**kwargs)


def test_amounts_are_exact_decimals() -> None:
    given: dict[str, Any] = {"price_per_image": 0.04, "daily_spend": "2", "currency": "eur"}
    limits = SpendingLimits(**given)  # untyped callers' floats and strings become Decimals
    assert limits.price_per_image == Decimal("0.04")
    assert limits.daily_spend == Decimal(2)
    assert limits.currency == "EUR"
    assert limits.cost(3) == Decimal("0.12")
    assert limits.money(Decimal("0.120")) == "0.12 EUR"
