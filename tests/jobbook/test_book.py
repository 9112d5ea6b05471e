"""The job book's contract, the same on SQLite and on a real Postgres server.

Every test that takes ``job_book`` runs twice (``[sqlite]``, ``[postgres]``); time moves with
the injected clock (``book_clock.advance``), never by sleeping.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import psycopg
import pytest

from mai_tools._exceptions import JobBookError
from mai_tools._policies import FakeClock
from mai_tools.jobbook import (
    ADOPT_WINDOW,
    LOCAL_PRINCIPAL,
    Claim,
    JobBook,
    JobRecord,
    SQLiteJobBook,
    open_job_book,
)
from mai_tools.jobbook._book import SCHEMA_VERSION
from mai_tools.jobbook._postgres import PostgresJobBook, _without_password
from mai_tools.jobbook._record import RUNNING_ADOPT_WINDOW, new_id, owner
from tests.jobbook.conftest import START, OpenBook, RawSQL
from tests.support.jobbook import dead_pid
from tests.support.postgres import PostgresServer

DAY = 86400.0


def make_record(
    book: JobBook,
    *,
    key: str | None = None,
    twin: str | None = None,
    principal: str = LOCAL_PRINCIPAL,
    surface: str = "client",
    job_owner: str | None = None,
    prompt: str = "a lighthouse at dusk, ünïcödé",
) -> JobRecord:
    """A new intent as a client would write it."""
    return JobRecord(
        id=new_id(),
        principal=principal,
        surface=surface,
        operation="generate",
        fingerprint=f"sha256-of-{prompt}",
        fields={"prompt": prompt, "width": 1024},
        prompt=prompt,
        idempotency_key=key,
        twin_key=twin,
        owner=owner() if job_owner is None else job_owner,
    )


def claim(book: JobBook, *, lease: float = 60.0, **kwargs: Any) -> Claim:
    """Claim a new intent (``lease``: seconds its owner has to send the submit)."""
    return book.claim(make_record(book, **kwargs), lease=lease)


def get(book: JobBook, job_id: str) -> JobRecord:
    record = book.get(job_id)
    assert record is not None, f"job {job_id} is not in the book"
    return record


# ---------------------------------------------------------------------------------- claim


def test_claim_writes_an_intent(job_book: JobBook) -> None:
    result = claim(job_book, key="step-1")

    assert result.created
    assert not result.stale
    stored = get(job_book, result.record.id)
    assert stored.state == "intent"
    assert stored.idempotency_key == "step-1"
    assert stored.created == stored.updated == START
    assert stored.fields == {"prompt": "a lighthouse at dusk, ünïcödé", "width": 1024}
    assert stored.prompt == "a lighthouse at dusk, ünïcödé"
    assert stored.request_id is None
    assert stored.image_urls == []
    assert stored.paths == []
    assert stored.delivered is False


def _to_state(book: JobBook, job: JobRecord, state: str) -> None:
    rid = f"rid-{job.id}"
    if state in ("submitted", "finished", "delivered"):
        book.submitted(job.id, rid, None, "QUEUED")
    if state in ("finished", "delivered"):
        book.finished(rid, "COMPLETED", ["https://img.example/1.png"])
    if state == "delivered":
        assert job.twin_key is not None
        book.delivered(job.principal, job.twin_key, rid)
    if state == "unknown":
        book.unknown(job.id, "connection reset during the submit")


@pytest.mark.parametrize("state", ["intent", "submitted", "finished", "unknown", "delivered"])
def test_the_same_key_finds_its_holder_in_any_state(
    job_book: JobBook, book_clock: FakeClock, state: str
) -> None:
    first = claim(job_book, key="step-1", twin="generate(a lighthouse)")
    _to_state(job_book, first.record, state)
    book_clock.advance(5 * DAY)  # far past every adoption window: a key never expires early

    again = claim(job_book, key="step-1", prompt="another prompt entirely")

    assert not again.created
    assert again.record.id == first.record.id
    assert again.record.prompt == "a lighthouse at dusk, ünïcödé"  # the holder, as stored
    assert len(job_book.list()) == 1


def test_claim_reports_the_age_of_a_submitted_holder(
    job_book: JobBook, book_clock: FakeClock
) -> None:
    first = claim(job_book, key="k")
    book_clock.advance(2)
    job_book.submitted(first.record.id, "rid-1", "https://gw/poll/rid-1", "QUEUED")
    book_clock.advance(30)

    again = claim(job_book, key="k")

    assert not again.created
    assert again.age == 30
    assert again.record.request_id == "rid-1"
    assert again.record.polling_url == "https://gw/poll/rid-1"


def test_the_same_key_under_another_principal_is_another_job(job_book: JobBook) -> None:
    alice = claim(job_book, key="step-1", twin="call-a", principal="alice")
    bob = claim(job_book, key="step-1", twin="call-a", principal="bob")

    assert alice.created
    assert bob.created
    assert alice.record.id != bob.record.id
    assert {r.principal for r in job_book.list()} == {"alice", "bob"}


@pytest.mark.parametrize("state", ["intent", "submitted", "finished", "unknown"])
def test_an_undelivered_twin_is_adopted_within_the_window(
    job_book: JobBook, book_clock: FakeClock, state: str
) -> None:
    first = claim(job_book, twin="generate(a lighthouse)")
    _to_state(job_book, first.record, state)
    book_clock.advance(ADOPT_WINDOW - 1)

    again = claim(job_book, twin="generate(a lighthouse)")

    assert not again.created
    assert again.record.id == first.record.id


@pytest.mark.parametrize("state", ["intent", "finished", "unknown"])
def test_an_expired_twin_gives_its_key_up(
    job_book: JobBook, book_clock: FakeClock, state: str
) -> None:
    # lease=0: an intent's lease no longer keeps it adoptable once the window has passed
    first = claim(job_book, twin="generate(a lighthouse)", lease=0)
    _to_state(job_book, first.record, state)
    book_clock.advance(ADOPT_WINDOW + 1)

    again = claim(job_book, twin="generate(a lighthouse)")

    assert again.created
    assert again.record.id != first.record.id
    assert get(job_book, first.record.id).twin_key is None
    assert get(job_book, again.record.id).twin_key == "generate(a lighthouse)"


def test_a_running_twin_stays_adoptable_for_the_running_window(
    job_book: JobBook, book_clock: FakeClock
) -> None:
    first = claim(job_book, twin="t")
    job_book.submitted(first.record.id, "rid-1", None, "IN_PROGRESS")
    book_clock.advance(RUNNING_ADOPT_WINDOW - 1)
    assert claim(job_book, twin="t").record.id == first.record.id

    book_clock.advance(2)
    late = claim(job_book, twin="t")
    assert late.created
    assert late.record.id != first.record.id


def test_an_intent_with_a_live_lease_stays_adoptable_past_the_window(
    job_book: JobBook, book_clock: FakeClock
) -> None:
    first = claim(job_book, twin="t", lease=ADOPT_WINDOW * 3)
    book_clock.advance(ADOPT_WINDOW * 2)

    assert claim(job_book, twin="t").record.id == first.record.id


def test_a_delivered_twin_is_not_adopted(job_book: JobBook) -> None:
    first = claim(job_book, twin="t")
    _to_state(job_book, first.record, "delivered")

    again = claim(job_book, twin="t")

    assert again.created
    assert again.record.id != first.record.id
    assert get(job_book, first.record.id).twin_key is None


def test_delivered_without_a_request_id_releases_only_jobs_never_submitted(
    job_book: JobBook,
) -> None:
    # An answer that was an error before any request id ("may have been created", a refused
    # submit): the intent or unknown job of that call is released, a submitted one is not.
    unsent = claim(job_book, twin="call-a").record
    job_book.unknown(unsent.id, "read timeout")
    sent = claim(job_book, twin="call-b").record
    job_book.submitted(sent.id, "rid-b", None, "QUEUED")

    job_book.delivered(LOCAL_PRINCIPAL, "call-a")
    job_book.delivered(LOCAL_PRINCIPAL, "call-b")

    assert get(job_book, unsent.id).delivered
    assert get(job_book, unsent.id).twin_key is None
    assert not get(job_book, sent.id).delivered
    assert get(job_book, sent.id).twin_key == "call-b"


def test_delivered_with_a_request_id_leaves_a_newer_identical_call_alone(
    job_book: JobBook,
) -> None:
    first = claim(job_book, twin="t").record
    job_book.submitted(first.id, "rid-1", None, "QUEUED")
    job_book.finished("rid-1", "COMPLETED", ["https://img/1.png"])
    job_book.untwin(first.id)  # e.g. the first answer went out another way
    newer = claim(job_book, twin="t").record
    job_book.submitted(newer.id, "rid-2", None, "QUEUED")

    job_book.delivered(LOCAL_PRINCIPAL, "t", "rid-1")  # the first call's answer, late

    assert get(job_book, newer.id).twin_key == "t"
    assert not get(job_book, newer.id).delivered
    assert claim(job_book, twin="t").record.id == newer.id


def test_delivered_is_scoped_by_principal(job_book: JobBook) -> None:
    alice = claim(job_book, twin="t", principal="alice").record
    bob = claim(job_book, twin="t", principal="bob").record

    job_book.delivered("alice", "t")

    assert get(job_book, alice.id).delivered
    assert not get(job_book, bob.id).delivered
    assert get(job_book, bob.id).twin_key == "t"


def test_untwin_stops_adoption_only(job_book: JobBook) -> None:
    first = claim(job_book, key="k", twin="t").record

    job_book.untwin(first.id)

    assert get(job_book, first.id).twin_key is None
    assert claim(job_book, twin="t").created  # an identical call is a new job
    assert not claim(job_book, key="k").created  # the key still holds the first


def test_the_claim_lease_is_counted_from_the_claim(
    job_book: JobBook, book_clock: FakeClock
) -> None:
    book_clock.advance(7)
    job = claim(job_book, key="k", lease=30).record

    assert get(job_book, job.id).lease == START + 7 + 30
    assert job_book.claim(make_record(job_book, key="other")).record.lease == START + 7 + 130


def test_a_key_holder_wins_over_a_twin(job_book: JobBook) -> None:
    keyed = claim(job_book, key="k", twin="t")
    other_twin = claim(job_book, key="k", twin="another call")

    assert not other_twin.created
    assert other_twin.record.id == keyed.record.id


# ----------------------------------------------------------------------------- transitions


def test_submitted_progressed_finished_saved_delivered(
    job_book: JobBook, book_clock: FakeClock
) -> None:
    job = claim(job_book, key="k", twin="t").record
    book_clock.advance(1)
    job_book.submitted(job.id, "rid-1", "https://gw/poll/rid-1", "QUEUED")
    stored = get(job_book, job.id)
    assert (stored.state, stored.request_id, stored.status) == ("submitted", "rid-1", "QUEUED")
    assert stored.submitted_at == stored.updated == START + 1

    job_book.progressed("rid-1", "IN_PROGRESS")
    assert get(job_book, job.id).status == "IN_PROGRESS"

    book_clock.advance(1)
    job_book.finished("rid-1", "COMPLETED", ["https://img/1.png", "https://img/2.png"])
    stored = get(job_book, job.id)
    assert (stored.state, stored.status) == ("finished", "COMPLETED")
    assert stored.image_urls == ["https://img/1.png", "https://img/2.png"]
    assert stored.finished_at == START + 2

    job_book.progressed("rid-1", "IN_PROGRESS")  # a late status read changes nothing
    book_clock.advance(1)
    job_book.finished("rid-1", "COMPLETED", ["https://img/1.png", "https://img/2.png"])
    stored = get(job_book, job.id)
    assert stored.status == "COMPLETED"
    assert stored.finished_at == START + 2  # the first outcome's time is kept

    job_book.saved("rid-1", [Path("/out/1.png"), Path("/out/2.png")])  # type: ignore[list-item]
    assert get(job_book, job.id).paths == ["/out/1.png", "/out/2.png"]

    job_book.delivered(LOCAL_PRINCIPAL, "t", "rid-1")
    stored = get(job_book, job.id)
    assert stored.delivered is True
    assert stored.twin_key is None
    assert stored.idempotency_key == "k"  # the key still holds the job
    assert job_book.find("rid-1") == stored
    assert job_book.find("rid-1", principal=LOCAL_PRINCIPAL) == stored
    assert job_book.find("rid-1", principal="someone else") is None


def test_find_image_finds_only_the_callers_finished_job_with_that_exact_url(
    job_book: JobBook, book_clock: FakeClock
) -> None:
    """view_image fetches a bare URL only when this says one of the caller's jobs returned it:
    exact URLs only (LIKE's wildcards and other URLs' prefixes match nothing)."""
    urls = ["https://cdn.example.com/a_b/1%20x.png", "https://cdn.example.com/a_b/2.png"]
    mine = claim(job_book, key="k").record
    job_book.submitted(mine.id, "rid-1", None, "QUEUED")
    assert job_book.find_image(urls[0]) is None  # not finished: no URLs yet
    job_book.finished("rid-1", "COMPLETED", urls)
    theirs = job_book.claim(make_record(job_book, key="k", principal="bob")).record
    job_book.submitted(theirs.id, "rid-2", None, "QUEUED")
    job_book.finished("rid-2", "COMPLETED", ["https://cdn.example.com/bobs.png"])

    for url in urls:
        found = job_book.find_image(url, principal=LOCAL_PRINCIPAL)
        assert found is not None
        assert found.request_id == "rid-1"
    for near in (
        "https://cdn.example.com/aXb/1%20x.png",  # "_" is a LIKE wildcard
        "https://cdn.example.com/a_b/1%",
        "https://cdn.example.com/a_b/",
        "https://CDN.example.com/a_b/2.png",  # SQLite's LIKE ignores ASCII case
        "cdn.example.com/a_b/2.png",
    ):
        assert job_book.find_image(near) is None, near
    assert (
        job_book.find_image("https://cdn.example.com/bobs.png", principal=LOCAL_PRINCIPAL) is None
    )
    bobs = job_book.find_image("https://cdn.example.com/bobs.png", principal="bob")
    assert bobs is not None
    assert bobs.request_id == "rid-2"
    assert job_book.find_image("https://cdn.example.com/bobs.png") == bobs  # an operator


def test_a_failed_job_keeps_its_error(job_book: JobBook) -> None:
    job = claim(job_book, key="k").record
    job_book.submitted(job.id, "rid-1", None, "QUEUED")
    job_book.finished("rid-1", "FAILED", error="content policy")

    stored = get(job_book, job.id)
    assert (stored.state, stored.status, stored.error) == ("finished", "FAILED", "content policy")


def test_outcomes_of_jobs_not_in_the_book_change_nothing(job_book: JobBook) -> None:
    job_book.finished("not-ours", "COMPLETED", ["https://img/1.png"])
    job_book.progressed("not-ours", "IN_PROGRESS")
    job_book.saved("not-ours", ["/x.png"])

    assert job_book.list() == []
    assert job_book.find("not-ours") is None
    assert job_book.get("no-such-id") is None


def test_release_forgets_an_intent_only(job_book: JobBook) -> None:
    intent = claim(job_book, key="a").record
    sent = claim(job_book, key="b").record
    job_book.submitted(sent.id, "rid-b", None, "QUEUED")

    job_book.release(intent.id)
    job_book.release(sent.id)

    assert job_book.get(intent.id) is None
    assert get(job_book, sent.id).state == "submitted"
    assert claim(job_book, key="a").created  # the released key is free again


def test_unknown_marks_an_intent_only(job_book: JobBook, book_clock: FakeClock) -> None:
    intent = claim(job_book, key="a").record
    sent = claim(job_book, key="b").record
    job_book.submitted(sent.id, "rid-b", None, "QUEUED")
    book_clock.advance(3)

    job_book.unknown(intent.id, "read timeout after the submit was sent")
    job_book.unknown(sent.id, "should not apply")

    stored = get(job_book, intent.id)
    assert (stored.state, stored.error) == ("unknown", "read timeout after the submit was sent")
    assert stored.updated == START + 3
    assert get(job_book, sent.id).state == "submitted"
    assert get(job_book, sent.id).error is None
    assert not claim(job_book, key="a").created  # an unknown job still holds its key


def test_renew_extends_an_intent_lease_only(job_book: JobBook) -> None:
    intent = claim(job_book, key="a").record
    sent = claim(job_book, key="b").record
    job_book.submitted(sent.id, "rid-b", None, "QUEUED")

    job_book.renew(intent.id, START + 999)
    job_book.renew(sent.id, START + 999)

    assert get(job_book, intent.id).lease == START + 999
    assert get(job_book, sent.id).lease == START + 60


# ---------------------------------------------------------------------------- stale intents


def _dead_pid() -> int:
    """The pid of a process that has ended and been reaped (so it exists no more)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_an_intent_whose_lease_passed_is_stale(job_book: JobBook, book_clock: FakeClock) -> None:
    claim(job_book, key="k", lease=10)
    assert not claim(job_book, key="k").stale

    book_clock.advance(11)
    again = claim(job_book, key="k")

    assert not again.created
    assert again.stale


def test_an_intent_whose_owner_died_on_this_host_is_stale(job_book: JobBook) -> None:
    host = owner().rpartition(":")[0]
    claim(job_book, key="k", job_owner=f"{host}:{_dead_pid()}", lease=3600)

    again = claim(job_book, key="k")

    assert not again.created
    assert again.stale


@pytest.mark.parametrize(
    "job_owner",
    [
        pytest.param(None, id="this-process"),
        pytest.param(f"{owner().rpartition(':')[0]}:{os.getppid()}", id="live-process"),
        pytest.param("another-host.example:1", id="another-host"),
    ],
)
def test_an_intent_of_a_live_or_unknowable_owner_is_not_stale(
    job_book: JobBook, job_owner: str | None
) -> None:
    claim(job_book, key="k", job_owner=job_owner, lease=3600)

    assert not claim(job_book, key="k").stale


def test_a_submitted_job_is_never_stale(job_book: JobBook, book_clock: FakeClock) -> None:
    job = claim(job_book, key="k", lease=1).record
    job_book.submitted(job.id, "rid", None, "QUEUED")
    book_clock.advance(100)

    assert not claim(job_book, key="k").stale


# ------------------------------------------------------------------------------- reading


def test_list_filters_newest_first(job_book: JobBook, book_clock: FakeClock) -> None:
    jobs: dict[str, JobRecord] = {}
    for name, principal, surface in [
        ("a", "alice", "client"),
        ("b", "alice", "mcp"),
        ("c", "bob", "mcp"),
        ("d", "alice", "batch"),
    ]:
        jobs[name] = claim(job_book, key=name, principal=principal, surface=surface).record
        book_clock.advance(10)
    job_book.submitted(jobs["b"].id, "rid-b", None, "QUEUED")
    job_book.submitted(jobs["c"].id, "rid-c", None, "QUEUED")
    job_book.finished("rid-c", "COMPLETED", ["https://img/c.png"])

    def names(**filters: Any) -> list[str]:
        return [r.idempotency_key or "" for r in job_book.list(**filters)]

    assert names() == ["d", "c", "b", "a"]
    assert names(principal="alice") == ["d", "b", "a"]
    assert names(surface="mcp") == ["c", "b"]
    assert names(principal="alice", surface="mcp") == ["b"]
    assert names(status="QUEUED") == ["b"]
    assert names(status="COMPLETED") == ["c"]
    assert names(state="intent") == ["d", "a"]
    assert names(state="finished") == ["c"]
    assert names(since=START + 10) == ["d", "c", "b"]
    assert names(limit=2) == ["d", "c"]
    assert names(limit=None) == ["d", "c", "b", "a"]
    assert names(principal="carol") == []


def test_prune_deletes_rows_past_the_retention(open_book: OpenBook, book_clock: FakeClock) -> None:
    book = open_book(retention_days=1)
    old = claim(book, key="old").record
    book_clock.advance(DAY / 2)
    recent = claim(book, key="recent").record
    book_clock.advance(DAY / 2 + 1)

    assert book.prune() == 1
    assert book.get(old.id) is None
    assert book.get(recent.id) is not None
    assert claim(book, key="old").created  # a pruned key is free again
    assert book.prune() == 0


def test_maybe_prune_runs_once_a_day(open_book: OpenBook, book_clock: FakeClock) -> None:
    book = open_book(retention_days=1)  # opening prunes (nothing yet)
    old = claim(book, key="old").record
    book_clock.advance(DAY - 1)
    book.maybe_prune()  # not a day since the last prune: nothing happens
    book_clock.advance(2)
    assert book.get(old.id) is not None

    book_clock.advance(DAY)
    book.maybe_prune()
    assert book.get(old.id) is None


def test_a_bad_retention_is_refused(open_book: OpenBook) -> None:
    with pytest.raises(JobBookError, match="retention_days must be positive"):
        open_book(retention_days=0)


@pytest.mark.parametrize(("value", "stored"), [("off", False), ("on", True), ("", True)])
def test_the_environment_says_whether_prompts_are_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, value: str, stored: bool
) -> None:
    monkeypatch.setenv("MAI_JOB_BOOK_PROMPTS", value)

    book = open_job_book(tmp_path / "jobs.sqlite3")

    assert book is not None
    assert book.store_prompts is stored


def test_a_bad_prompts_setting_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MAI_JOB_BOOK_PROMPTS", "sometimes")

    with pytest.raises(JobBookError, match="MAI_JOB_BOOK_PROMPTS must be 'on' or 'off'"):
        open_job_book(tmp_path / "jobs.sqlite3")


# ---------------------------------------------------------------------------- the schema


def test_a_second_book_on_the_same_store_sees_the_same_jobs(
    job_book: JobBook, open_book: OpenBook
) -> None:
    job = claim(job_book, key="k").record
    other = open_book()

    assert not claim(other, key="k").created
    assert get(other, job.id).idempotency_key == "k"


def test_a_book_of_another_schema_version_is_refused(
    job_book: JobBook, open_book: OpenBook, raw_sql: RawSQL
) -> None:
    raw_sql("UPDATE mai_jobs_meta SET value = ? WHERE key = 'schema'", (str(SCHEMA_VERSION + 1),))

    with pytest.raises(JobBookError, match=rf"schema version {SCHEMA_VERSION + 1}") as caught:
        open_book()
    assert "Upgrade mai-tools" in str(caught.value)


def test_the_schema_version_is_written_once(job_book: JobBook, raw_sql: RawSQL) -> None:
    assert raw_sql("SELECT key, value FROM mai_jobs_meta") == [("schema", str(SCHEMA_VERSION))]


# ------------------------------------------------------------------- two processes at once

_CLAIMER = textwrap.dedent(
    """
    import sys, uuid
    from mai_tools.jobbook import JobRecord, SQLiteJobBook
    from mai_tools.jobbook._record import owner

    location, keys = sys.argv[1], int(sys.argv[2])
    if location.startswith("postgresql://"):
        from mai_tools.jobbook._postgres import PostgresJobBook as Book
    else:
        Book = SQLiteJobBook
    book = Book(location)
    created = []
    for i in range(keys):
        for twin in (False, True):
            record = JobRecord(
                id=uuid.uuid4().hex, principal="local", surface="client",
                operation="generate", fingerprint="f", fields={}, prompt=None,
                idempotency_key=None if twin else f"key-{i}",
                twin_key=f"twin-{i}" if twin else None,
                owner=owner(),
            )
            if book.claim(record).created:
                created.append(record.id)
    book.close()
    print(" ".join(created))
    """
)


def test_concurrent_claims_from_two_processes_create_each_job_once(
    book_location: str, job_book: JobBook
) -> None:
    keys = 40
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", _CLAIMER, book_location, str(keys)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    created: list[str] = []
    for worker in workers:
        out, _ = worker.communicate(timeout=90)
        assert worker.returncode == 0
        created += out.split()

    rows = job_book.list(limit=None)
    assert len(rows) == 2 * keys  # one per key and one per twin key, whoever won each
    assert sorted(created) == sorted(r.id for r in rows)


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_a_forked_child_and_its_parent_share_a_book_object(job_book: JobBook) -> None:
    # Forked workers (multiprocessing's fork, pre-forking servers) inherit the book object:
    # each process must use a connection of its own, at the same time, and the parent's must
    # survive the child.
    claim(job_book, key="before the fork")
    rounds = 100
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child (its coverage is not collected)
        failures = 0
        for i in range(rounds):
            try:
                failures += not claim(job_book, key=f"child-{i}").created
            except Exception:
                failures += 1
        os._exit(min(failures, 100))
    failures = sum(not claim(job_book, key=f"parent-{i}").created for i in range(rounds))
    _, status = os.waitpid(pid, 0)

    assert os.waitstatus_to_exitcode(status) == 0
    assert failures == 0
    assert len(job_book.list(limit=None)) == 1 + 2 * rounds
    assert not claim(job_book, key="after the child ended").stale


# ----------------------------------------------------------------------- opening a book


def test_off_means_no_book(monkeypatch: pytest.MonkeyPatch) -> None:
    assert open_job_book("off") is None
    assert open_job_book("OFF ") is None
    monkeypatch.setenv("MAI_JOB_BOOK", "off")
    assert open_job_book() is None


def test_a_path_opens_one_shared_sqlite_book(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "er" / "jobs.sqlite3"

    book = open_job_book(path)

    assert isinstance(book, SQLiteJobBook)
    assert book.location == str(path)
    assert path.is_file()
    assert open_job_book(str(path)) is book  # one object per place in a process
    assert open_job_book(book) is book


def test_the_environment_names_the_book(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "from-env.sqlite3"
    monkeypatch.setenv("MAI_JOB_BOOK", f"  {path}  ")

    book = open_job_book()

    assert isinstance(book, SQLiteJobBook)
    assert book.path == path


def test_the_default_book_is_in_the_users_state_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MAI_JOB_BOOK", raising=False)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))

    book = open_job_book()

    assert isinstance(book, SQLiteJobBook)
    assert book.path == tmp_path / "state" / "mai-tools" / "jobs.sqlite3"


def test_a_postgres_url_opens_a_postgres_book(postgres_url: str) -> None:
    book = open_job_book(postgres_url)

    assert isinstance(book, PostgresJobBook)
    assert open_job_book(postgres_url) is book


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("ftp://host/jobs", "Unsupported job book URL scheme 'ftp'"),
        ("sqlite:///tmp/jobs.db", "Unsupported job book URL scheme 'sqlite'"),
        ("   ", "empty"),
    ],
)
def test_a_bad_spec_is_a_clear_error(spec: str, message: str) -> None:
    with pytest.raises(JobBookError, match=message):
        open_job_book(spec)


def test_an_object_that_is_no_spec_is_a_clear_error() -> None:
    with pytest.raises(JobBookError, match="got int"):
        open_job_book(42)  # type: ignore[arg-type]


def test_a_directory_is_not_a_book(tmp_path: Path) -> None:
    with pytest.raises(JobBookError) as caught:
        open_job_book(tmp_path)

    message = str(caught.value)
    assert str(tmp_path) in message
    assert "cannot be opened" in message


def test_a_file_that_is_not_a_database_is_not_a_book(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("these are my notes, not a job book\n" * 200)

    with pytest.raises(JobBookError, match="It is not a job book") as caught:
        open_job_book(path)
    assert str(path) in str(caught.value)
    assert path.read_text().startswith("these are my notes")  # left as it was


def test_a_book_where_no_directory_can_be_made_is_a_clear_error(tmp_path: Path) -> None:
    # A path under a regular file: its directory cannot be created, even by root (whom a
    # read-only directory would not stop).
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    path = blocker / "state" / "jobs.sqlite3"

    with pytest.raises(JobBookError, match="cannot be opened") as caught:
        open_job_book(path)
    assert str(path) in str(caught.value)


# ------------------------------------------------------------------------------- Postgres


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://u:s3cret@db.example:5432/jobs", "postgresql://u:***@db.example:5432/jobs"),
        ("postgresql://u:s3cret@[::1]:5432/jobs", "postgresql://u:***@[::1]:5432/jobs"),
        (
            "postgresql://u:s3cret@h1:5432,h2:5433/jobs?target_session_attrs=read-write",
            "postgresql://u:***@h1:5432,h2:5433/jobs?target_session_attrs=read-write",
        ),
        (
            "postgresql://u@db/jobs?sslmode=require&password=s3cret",
            "postgresql://u@db/jobs?sslmode=require&password=***",
        ),
        ("postgres://db/jobs", "postgres://db/jobs"),
        ("postgresql://u@db/jobs", "postgresql://u@db/jobs"),
    ],
)
def test_a_location_never_shows_the_password(url: str, shown: str) -> None:
    assert _without_password(url) == shown


def _with_password(url: str, password: str) -> str:
    scheme, rest = url.split("://", 1)
    user_info, host = rest.split("@", 1)
    return f"{scheme}://{user_info.split(':')[0]}:{password}@{host}"


def test_the_password_is_never_shown(postgres_server: PostgresServer, postgres_url: str) -> None:
    password = postgres_server.password
    book = PostgresJobBook(postgres_url)
    try:
        assert password not in repr(book)
        assert password not in book.location
        assert "***" in book.location
    finally:
        book.close()

    wrong = "Wr0ng-Pa55word-canary"
    failures: list[str] = []
    for url, secret in [
        (_with_password(postgres_url, wrong), wrong),  # authentication fails
        (postgres_url.rsplit("/", 1)[0] + "/no_such_database", password),
        (postgres_url + "?sslmode=bogus", password),  # libpq refuses the URL itself
    ]:
        with pytest.raises(JobBookError) as caught:
            PostgresJobBook(url)
        text = f"{caught.value} {caught.value!r}"
        assert secret not in text
        failures.append(text)
    assert "authentication failed" in failures[0]
    assert "no_such_database" in failures[1]


def test_a_password_in_the_query_string_is_never_shown(
    postgres_server: PostgresServer, postgres_url: str
) -> None:
    password = postgres_server.password
    base = postgres_url.replace(f":{password}@", "@")
    url = f"{base}?password={password}&application_name=mai"

    book = PostgresJobBook(url)
    try:
        assert claim(book, key="k").created
        assert password not in repr(book)
    finally:
        book.close()
    with pytest.raises(JobBookError) as caught:
        PostgresJobBook(f"{base}?password={password}&sslmode=bogus")
    assert password not in str(caught.value)


def test_an_unreachable_server_is_a_clear_error(postgres_server: PostgresServer) -> None:
    url = postgres_server.url().replace(str(postgres_server.port), "1")  # nothing listens

    with pytest.raises(JobBookError, match="cannot be reached") as caught:
        open_job_book(url)
    assert postgres_server.password not in str(caught.value)


def test_a_cut_connection_is_reopened(postgres_url: str, book_clock: FakeClock) -> None:
    book = PostgresJobBook(postgres_url, clock=book_clock.monotonic)
    try:
        first = claim(book, key="k").record
        with psycopg.connect(postgres_url, autocommit=True) as admin:
            cut = admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            ).fetchall()
        assert cut == [(True,)]

        again = claim(book, key="k")  # the next call reconnects by itself
        assert not again.created
        assert again.record.id == first.id
    finally:
        book.close()


def test_a_server_that_went_away_is_an_error_until_it_is_back(
    postgres_server: PostgresServer, postgres_url: str, book_clock: FakeClock
) -> None:
    book = PostgresJobBook(postgres_url, clock=book_clock.monotonic)
    try:
        first = claim(book, key="k").record
        postgres_server.stop()
        try:
            with pytest.raises(JobBookError, match=r"cannot be reached|failed") as caught:
                claim(book, key="k")
            assert postgres_server.password not in str(caught.value)
            with pytest.raises(JobBookError):
                book.list()
        finally:
            postgres_server.start()

        again = claim(book, key="k")  # back: the book reconnects, and the key still holds
        assert not again.created
        assert again.record.id == first.id
    finally:
        book.close()


def test_postgres_is_offloaded_and_sqlite_is_not() -> None:
    assert PostgresJobBook.offload is True
    assert SQLiteJobBook.offload is False
    assert (PostgresJobBook.kind, SQLiteJobBook.kind) == ("postgres", "sqlite")


def test_sweep_marks_the_intents_of_gone_processes_unknown(
    job_book: JobBook, book_clock: FakeClock
) -> None:
    gone = f"{socket.gethostname()}:{dead_pid()}"
    assert claim(job_book, key="gone", job_owner=gone, lease=3600.0).created
    assert claim(job_book, key="live", lease=3600.0).created
    assert claim(job_book, key="expired", job_owner="another-host:1", lease=5.0).created
    book_clock.advance(10)
    assert job_book.sweep() == 2
    states = {r.idempotency_key: r.state for r in job_book.list()}
    assert states == {"gone": "unknown", "live": "intent", "expired": "unknown"}


_OPEN_AT_GO = (
    "import sys\n"
    "from mai_tools.jobbook._postgres import PostgresJobBook\n"
    "print('ready', flush=True)\n"
    "sys.stdin.readline()\n"
    "PostgresJobBook(sys.argv[1]).close()\n"
)


def test_replicas_opening_an_empty_postgres_book_at_once_all_start(
    postgres_server: PostgresServer,
) -> None:
    """Concurrent CREATE TABLE IF NOT EXISTS can fail on Postgres; the books take turns."""
    for _ in range(3):
        url = postgres_server.create_database()
        processes = [
            subprocess.Popen(
                [sys.executable, "-c", _OPEN_AT_GO, url],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                cwd=Path(__file__).resolve().parents[2],
            )
            for _ in range(4)
        ]
        for process in processes:
            assert process.stdout is not None
            assert process.stdout.readline().strip() == "ready"
        for process in processes:  # every interpreter is up: they open the book together
            assert process.stdin is not None
            process.stdin.write("go\n")
            process.stdin.flush()
        errors = [process.communicate(timeout=120)[1] for process in processes]
        assert [p.returncode for p in processes] == [0, 0, 0, 0], errors
