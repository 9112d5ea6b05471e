"""The book's observers: each committed change of a job's state is told once, with the row as
committed, on SQLite and on Postgres; an audit log attached to a book writes one line each.

Time moves with the injected clock (``book_clock.advance``), never by sleeping.
"""

from __future__ import annotations

import json
import logging
import socket
from decimal import Decimal
from pathlib import Path

import pytest

from mai_tools._policies import FakeClock
from mai_tools.jobbook import AuditLog, JobBook, JobRecord
from tests.jobbook.conftest import START
from tests.jobbook.test_book import claim, make_record
from tests.support.jobbook import dead_pid

Seen = list[tuple[str, JobRecord]]


def _watch(book: JobBook) -> Seen:
    seen: Seen = []
    book.observers.append(lambda event, record: seen.append((event, record)))
    return seen


def test_a_job_s_life_is_told_once_per_change(job_book: JobBook, book_clock: FakeClock) -> None:
    seen = _watch(job_book)
    job = claim(job_book, principal="alice", surface="mcp").record
    job_book.renew(job.id, START + 500)  # not a change of state
    book_clock.advance(1)
    job_book.submitted(job.id, "rid-1", None, "QUEUED")
    job_book.progressed("rid-1", "PROCESSING")
    book_clock.advance(1)
    job_book.finished("rid-1", "COMPLETED", ["https://cdn.example/1.png"])
    job_book.saved("rid-1", ["/tmp/1.png"])
    book_clock.advance(1)
    job_book.finished("rid-1", "COMPLETED", ["https://cdn.example/1.png"])  # read again
    job_book.delivered("alice", "no-twin", "rid-1")
    assert [event for event, _ in seen] == ["intent", "submitted", "finished"]
    intent, submitted, finished = (record for _, record in seen)
    assert (intent.id, intent.principal, intent.surface, intent.state) == (
        job.id,
        "alice",
        "mcp",
        "intent",
    )
    assert (submitted.request_id, submitted.status, submitted.state) == (
        "rid-1",
        "QUEUED",
        "submitted",
    )
    assert (finished.state, finished.status, finished.image_urls) == (
        "finished",
        "COMPLETED",
        ["https://cdn.example/1.png"],
    )
    assert finished.principal == "alice"  # the whole row, not only what the call named


def test_a_release_and_an_unknown_are_told(job_book: JobBook) -> None:
    seen = _watch(job_book)
    released = claim(job_book).record
    job_book.release(released.id)
    job_book.release(released.id)  # gone already: nothing changed
    lost = claim(job_book, prompt="another").record
    job_book.unknown(lost.id, "ConnectError: reset")
    job_book.unknown(lost.id, "again")  # no longer an intent: nothing changed
    job_book.finished("rid-nobody-has", "COMPLETED")  # not in the book
    assert [(event, record.id) for event, record in seen] == [
        ("intent", released.id),
        ("released", released.id),
        ("intent", lost.id),
        ("unknown", lost.id),
    ]
    assert seen[-1][1].error == "ConnectError: reset"


def test_a_sweep_tells_of_a_dead_process_s_intent(
    job_book: JobBook, open_book: object, book_clock: FakeClock
) -> None:
    orphan = make_record(
        job_book, principal="bob", job_owner=f"{socket.gethostname()}:{dead_pid()}"
    )
    assert job_book.claim(orphan, lease=3600.0).created
    seen = _watch(job_book)
    assert job_book.sweep() == 1
    ((event, record),) = seen
    assert (event, record.id, record.principal, record.state) == (
        "unknown",
        orphan.id,
        "bob",
        "unknown",
    )


def test_an_observer_that_fails_is_logged_and_the_change_stands(
    job_book: JobBook, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(event: str, record: JobRecord) -> None:
        raise RuntimeError("observer down")

    job_book.observers.append(broken)
    seen = _watch(job_book)
    with caplog.at_level(logging.ERROR, logger="mai_tools.jobbook"):
        job = claim(job_book).record
    assert job_book.get(job.id) is not None
    assert [event for event, _ in seen] == ["intent"]  # the next observer is still told
    assert "an observer of intent events failed" in caplog.text


def test_an_attached_audit_log_writes_a_line_per_change(
    job_book: JobBook, book_clock: FakeClock, tmp_path: Path
) -> None:
    path = tmp_path / "audit.jsonl"
    audit = AuditLog(
        path, price_per_image=Decimal("0.04"), currency="USD", clock=book_clock.monotonic
    )
    audit.attach(job_book)
    try:
        done = claim(job_book, principal="carol", prompt="a heron").record
        job_book.submitted(done.id, "rid-done", None, "QUEUED")
        job_book.finished("rid-done", "COMPLETED", ["https://cdn.example/a.png"])
        errored = claim(job_book, principal="carol", prompt="a crane").record
        job_book.submitted(errored.id, "rid-error", None, "QUEUED")
        job_book.finished("rid-error", "ERROR", error="gateway trouble")
        audit.detach(job_book)
        claim(job_book, prompt="not audited")
    finally:
        audit.close()
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [(r["event"], r["request_id"], r["status"], r["estimated_cost"]) for r in lines] == [
        ("intent", None, None, "0.04"),
        ("submitted", "rid-done", "QUEUED", "0.04"),
        ("finished", "rid-done", "COMPLETED", "0.04"),
        ("intent", None, None, "0.04"),
        ("submitted", "rid-error", "QUEUED", "0.04"),
        ("finished", "rid-error", "ERROR", "0"),  # ERROR is not charged
    ]
    assert {r["principal"] for r in lines} == {"carol"}
    assert {r["currency"] for r in lines} == {"USD"}
    assert lines[0]["time"] == "2027-01-15T08:00:00.000Z"  # the injected clock, UTC
    assert lines[-1]["error"] == "gateway trouble"
    assert "prompt" not in lines[0]  # only its hash, unless the operator opts in
