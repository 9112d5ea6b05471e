"""A book written by schema 2 (``num_images`` only inside each row's fields) opened by this
schema: migrated once, however many books open it at once, without changing any day's count.

The old schema, its insert and the daily sum the limits used with it are literals here (as
mai-tools wrote and read them before ``num_images`` became a column), so these tests do not
move when the book's code does. Every test runs on SQLite and on a real Postgres server.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import textwrap
import threading
from typing import Any

import pytest

from mai_tools import SpendingLimitError, SpendingLimits
from mai_tools._exceptions import JobBookError
from mai_tools.jobbook import JobBook, JobRecord, SQLiteJobBook
from mai_tools.jobbook._book import SCHEMA_VERSION
from mai_tools.jobbook._limits import Usage, usage
from mai_tools.jobbook._postgres import PostgresJobBook
from mai_tools.jobbook._record import new_id, owner
from tests.jobbook.conftest import START, OpenBook, RawSQL

DAY = 86400.0
GATEWAYS = ("https://gateway.test", "http://127.0.0.1:9999")
PRINCIPALS = ("ann", "bob", "carol")

V2_SCHEMA = (
    """CREATE TABLE mai_jobs (
    id TEXT PRIMARY KEY,
    principal TEXT NOT NULL,
    gateway TEXT NOT NULL,
    surface TEXT NOT NULL,
    operation TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    fields TEXT NOT NULL,
    prompt TEXT,
    state TEXT NOT NULL,
    idempotency_key TEXT,
    twin_key TEXT,
    request_id TEXT,
    polling_url TEXT,
    status TEXT,
    image_urls TEXT NOT NULL,
    paths TEXT NOT NULL,
    error TEXT,
    owner TEXT NOT NULL,
    lease DOUBLE PRECISION NOT NULL,
    delivered INTEGER NOT NULL,
    created DOUBLE PRECISION NOT NULL,
    submitted_at DOUBLE PRECISION,
    finished_at DOUBLE PRECISION,
    updated DOUBLE PRECISION NOT NULL
)""",
    "CREATE UNIQUE INDEX mai_jobs_key ON mai_jobs "
    "(principal, gateway, idempotency_key) WHERE idempotency_key IS NOT NULL",
    "CREATE UNIQUE INDEX mai_jobs_twin ON mai_jobs "
    "(principal, gateway, twin_key) WHERE twin_key IS NOT NULL",
    "CREATE INDEX mai_jobs_request_id ON mai_jobs (request_id)",
    "CREATE INDEX mai_jobs_created ON mai_jobs (created)",
    "CREATE TABLE mai_jobs_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
)
V2_COLUMNS = (
    "id", "principal", "gateway", "surface", "operation", "fingerprint", "fields", "prompt",
    "state", "idempotency_key", "twin_key", "request_id", "polling_url", "status", "image_urls",
    "paths", "error", "owner", "lease", "delivered", "created", "submitted_at", "finished_at",
    "updated",
)  # fmt: skip
V2_INSERT = (
    f"INSERT INTO mai_jobs ({', '.join(V2_COLUMNS)}) VALUES "  # noqa: S608
    f"({', '.join('?' * len(V2_COLUMNS))})"
)
V2_IMAGES = {
    "sqlite": "json_extract(fields, '$.num_images')",
    "postgres": "CAST(CAST(fields AS jsonb) ->> 'num_images' AS INTEGER)",
}
V2_USAGE = (
    "SELECT COALESCE(SUM(n), 0), COALESCE(SUM(CASE WHEN principal = ? THEN n ELSE 0 END), 0) "
    "FROM (SELECT principal, COALESCE({images}, 1) AS n FROM mai_jobs "
    "WHERE gateway = ? AND created >= ? {mine}"
    "AND (state <> 'finished' OR COALESCE(status, '') <> 'ERROR')) AS today"
)
"""The daily sum of schema 2: each row's num_images parsed from its fields."""

OUTCOMES = (
    ("intent", None),
    ("submitted", "QUEUED"),
    ("finished", "COMPLETED"),
    ("finished", "FAILED"),
    ("finished", "ERROR"),
    ("unknown", None),
)


def make_v2_book(raw_sql: RawSQL, *, version: str | None = "2") -> None:
    for statement in V2_SCHEMA:
        raw_sql(statement)
    if version is not None:
        raw_sql("INSERT INTO mai_jobs_meta (key, value) VALUES ('schema', ?)", (version,))


def v2_row(
    rng: random.Random, *, principal: str = "ann", images: int | None = 1, **columns: Any
) -> tuple[Any, ...]:
    """A row as mai-tools of schema 2 wrote it (``images`` None: fields without num_images)."""
    fields: dict[str, Any] = {"prompt": "a red fox " * 30}
    if images is not None:
        fields["num_images"] = images
    state, status = columns.pop("outcome", rng.choice(OUTCOMES))
    t = columns.pop("created", START)
    row: dict[str, Any] = {
        "id": new_id(), "principal": principal, "gateway": GATEWAYS[0], "surface": "mcp",
        "operation": "generate", "fingerprint": new_id(), "fields": json.dumps(fields),
        "prompt": "a red fox", "state": state, "idempotency_key": None, "twin_key": None,
        "request_id": new_id() if state in ("submitted", "finished") else None,
        "polling_url": None, "status": status, "image_urls": "[]", "paths": "[]", "error": None,
        "owner": owner(), "lease": t + 60.0, "delivered": 0, "created": t,
        "submitted_at": None, "finished_at": None, "updated": t,
    }  # fmt: skip
    row.update(columns)
    return tuple(row[name] for name in V2_COLUMNS)


def random_v2_row(rng: random.Random) -> tuple[Any, ...]:
    return v2_row(
        rng,
        principal=rng.choice(PRINCIPALS),
        images=rng.choice((None, 1, 1, 2, 3, 4)),
        gateway=rng.choice(GATEWAYS),
        created=START + rng.uniform(-1.5 * DAY, 0.5 * DAY),  # yesterday, today, a skewed clock
    )


def v2_usage(raw_sql: RawSQL, backend: str, principal: str, gateway: str, t: float) -> Usage:
    """What schema 2 counted (every principal: both sums in one pass)."""
    sql = V2_USAGE.format(images=V2_IMAGES[backend], mine="")
    ((everyone, own),) = raw_sql(sql, (principal, gateway, t - t % DAY))
    return Usage(int(own), int(everyone))


Counts = dict[tuple[str, str, bool], Usage]
"""(principal, gateway, with a server cap) -> the images counted."""


def counts(book: JobBook, t: float) -> Counts:
    out: Counts = {}
    for principal in PRINCIPALS:
        for gateway in GATEWAYS:
            for server in (False, True):  # without a server cap only the principal's rows
                limits = SpendingLimits(daily_images=10, server_daily_images=10 if server else None)
                counted = usage(book._execute, book.images_sql, limits, principal, gateway, t)
                out[principal, gateway, server] = counted
    return out


def expected(raw_sql: RawSQL, backend: str, t: float) -> Counts:
    out: Counts = {}
    for principal in PRINCIPALS:
        for gateway in GATEWAYS:
            old = v2_usage(raw_sql, backend, principal, gateway, t)
            out[principal, gateway, True] = old
            out[principal, gateway, False] = Usage(old.principal_images, old.principal_images)
    return out


def book_class(backend: str) -> type[JobBook]:
    return PostgresJobBook if backend == "postgres" else SQLiteJobBook


def columns(raw_sql: RawSQL, backend: str) -> set[str]:
    return {name for (name,) in raw_sql(book_class(backend).columns_sql)}


def schema(raw_sql: RawSQL) -> str:
    ((value,),) = raw_sql("SELECT value FROM mai_jobs_meta WHERE key = 'schema'")
    return str(value)


# ------------------------------------------------------------------------------- migrating


def test_a_schema_2_book_is_migrated_without_changing_any_count(
    backend: str, raw_sql: RawSQL, open_book: OpenBook
) -> None:
    rng = random.Random(25)
    make_v2_book(raw_sql)
    for _ in range(200):
        raw_sql(V2_INSERT, random_v2_row(rng))
    days = (START + DAY, START, START - DAY, START - 2 * DAY)
    before = {t: expected(raw_sql, backend, t) for t in days}

    book = open_book()

    assert schema(raw_sql) == str(SCHEMA_VERSION) == "3"
    yesterday = START - START % DAY - DAY
    # The rows a daily sum still reads (from yesterday on) are filled; older ones count their
    # fields, as before, and are never filled (the migration stays short on a full book).
    assert raw_sql(
        "SELECT COUNT(*) FROM mai_jobs WHERE num_images IS NULL AND created >= ?", (yesterday,)
    ) == [(0,)]
    assert raw_sql("SELECT COUNT(*) FROM mai_jobs WHERE num_images IS NULL") != [(0,)]
    assert raw_sql(
        "SELECT num_images FROM mai_jobs WHERE fields NOT LIKE ? AND created >= ?",
        ("%num_images%", yesterday),
    )
    for t, old in before.items():
        assert counts(book, t) == old
    assert len(book.list(limit=None)) == 200


def test_every_change_counts_as_the_old_sum_did(
    backend: str, raw_sql: RawSQL, open_book: OpenBook
) -> None:
    """The column sum against schema 2's sum over the fields, on one store, after every step of
    a random mix: claims (limited or not), every outcome, ERROR give-backs, releases, intents
    marked unknown, and rows a process of schema 2 still writes (no num_images column)."""
    rng = random.Random(22)
    make_v2_book(raw_sql)
    book = open_book()
    mine: list[JobRecord] = []
    for step in range(150):
        action = rng.randrange(4)
        if action == 0:  # an older process sharing the migrated book
            raw_sql(V2_INSERT, random_v2_row(rng))
        elif action == 1 or not mine:
            images = rng.randint(1, 4)
            record = JobRecord(
                id=new_id(), principal=rng.choice(PRINCIPALS), surface="mcp",
                operation="generate", fingerprint=new_id(),
                fields={"prompt": "a fox", "num_images": images}, prompt="a fox",
                gateway=rng.choice(GATEWAYS), owner=owner(),
            )  # fmt: skip
            limits = SpendingLimits(daily_images=40, server_daily_images=90)
            try:
                if book.claim(record, 60.0, limits=rng.choice((limits, None))).created:
                    mine.append(record)
            except SpendingLimitError:
                pass
        else:
            record = rng.choice(mine)
            change = rng.randrange(4)
            if change == 0:
                book.release(record.id)
            elif change == 1:
                book.unknown(record.id, "the connection dropped")
            else:
                book.submitted(record.id, f"req-{record.id}", None, "QUEUED")
                book.finished(f"req-{record.id}", rng.choice(("COMPLETED", "FAILED", "ERROR")))
        if step % 10 == 0:
            for t in (book.clock(), book.clock() - DAY):
                assert counts(book, t) == expected(raw_sql, backend, t), f"step {step}"
    assert raw_sql("SELECT COUNT(*) FROM mai_jobs WHERE num_images IS NULL") != [(0,)]
    assert counts(book, book.clock()) == expected(raw_sql, backend, book.clock())


def test_a_new_intent_stores_its_num_images(job_book: JobBook, raw_sql: RawSQL) -> None:
    record = JobRecord(
        id=new_id(), principal="ann", surface="mcp", operation="generate", fingerprint="f",
        fields={"prompt": "a fox", "num_images": 3}, prompt="a fox", owner=owner(),
    )  # fmt: skip
    assert job_book.claim(record, 60.0).created

    assert raw_sql("SELECT num_images FROM mai_jobs WHERE id = ?", (record.id,)) == [(3,)]


def test_a_row_an_older_process_writes_after_the_migration_counts_its_fields(
    raw_sql: RawSQL, open_book: OpenBook
) -> None:
    make_v2_book(raw_sql)
    book = open_book()
    rng = random.Random(1)
    raw_sql(V2_INSERT, v2_row(rng, images=3, outcome=("submitted", "QUEUED")))

    limits = SpendingLimits(daily_images=4)
    with pytest.raises(SpendingLimitError) as caught:
        book.claim(JobRecord(
            id=new_id(), principal="ann", surface="mcp", operation="generate", fingerprint="f",
            fields={"prompt": "a fox", "num_images": 2}, prompt="a fox", owner=owner(),
            gateway=GATEWAYS[0],
        ), 60.0, limits=limits)  # fmt: skip
    assert (caught.value.used, caught.value.remaining) == (3, 1)


def test_a_schema_2_table_without_its_version_gets_the_column(
    backend: str, raw_sql: RawSQL, open_book: OpenBook
) -> None:
    """A process of schema 2 that stopped between creating the table and writing its version."""
    make_v2_book(raw_sql, version=None)
    raw_sql(V2_INSERT, v2_row(random.Random(2), images=2))

    open_book()

    assert "num_images" in columns(raw_sql, backend)
    assert raw_sql("SELECT num_images FROM mai_jobs") == [(2,)]
    assert schema(raw_sql) == "3"


def test_a_failed_migration_leaves_the_book_as_it_was(
    backend: str, raw_sql: RawSQL, open_book: OpenBook
) -> None:
    make_v2_book(raw_sql)
    raw_sql(V2_INSERT, v2_row(random.Random(3), images=2))

    with pytest.MonkeyPatch.context() as mp:  # the back-fill fails after the column was added
        mp.setattr(book_class(backend), "images_sql", "no_such_function(fields)")
        with pytest.raises(JobBookError, match="no_such_function"):
            open_book()

    assert schema(raw_sql) == "2"
    assert "num_images" not in columns(raw_sql, backend)
    open_book()
    assert raw_sql("SELECT num_images FROM mai_jobs") == [(2,)]


def test_books_opening_a_schema_2_book_at_once_migrate_it_once_and_keep_the_cap(
    raw_sql: RawSQL, open_book: OpenBook
) -> None:
    """Replicas restarted on a new mai-tools at once: each its own connection, released at one
    barrier, each opening the old book and then claiming; the day's 10 images hold across."""
    make_v2_book(raw_sql)
    rng = random.Random(4)
    for images in (2, 3):
        raw_sql(V2_INSERT, v2_row(rng, images=images, outcome=("finished", "COMPLETED")))
    raw_sql(V2_INSERT, v2_row(rng, images=4, outcome=("finished", "ERROR")))  # given back
    limits = SpendingLimits(daily_images=10)
    callers = 8
    barrier = threading.Barrier(callers)
    created: list[str] = []
    errors: list[BaseException] = []

    def replica() -> None:
        try:
            barrier.wait()
            book = open_book()
            for _ in range(2):
                record = JobRecord(
                    id=new_id(), principal="ann", surface="mcp", operation="generate",
                    fingerprint=new_id(), fields={"prompt": "a fox", "num_images": 1},
                    prompt="a fox", gateway=GATEWAYS[0], owner=owner(),
                )  # fmt: skip
                try:
                    if book.claim(record, 60.0, limits=limits).created:
                        created.append(record.id)
                except SpendingLimitError:
                    pass
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=replica) for _ in range(callers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert len(created) == 10 - 5
    assert schema(raw_sql) == "3"
    assert raw_sql("SELECT COUNT(*) FROM mai_jobs WHERE num_images IS NULL") == [(0,)]


_REPLICA = textwrap.dedent(
    """
    import sys
    from mai_tools import SpendingLimitError, SpendingLimits
    from mai_tools.jobbook import JobRecord, SQLiteJobBook
    from mai_tools.jobbook._postgres import PostgresJobBook
    from mai_tools.jobbook._record import new_id, owner

    location, gateway = sys.argv[1], sys.argv[2]
    Book = PostgresJobBook if location.startswith("postgresql://") else SQLiteJobBook
    print("ready", flush=True)
    sys.stdin.readline()  # every replica has started: open the old book together
    book = Book(location)
    created = []
    for _ in range(3):
        record = JobRecord(
            id=new_id(), principal="ann", surface="mcp", operation="generate",
            fingerprint=new_id(), fields={"prompt": "a fox", "num_images": 1},
            prompt="a fox", gateway=gateway, owner=owner(),
        )
        try:
            if book.claim(record, 60.0, limits=SpendingLimits(daily_images=10)).created:
                created.append(record.id)
        except SpendingLimitError:
            pass
    book.close()
    print(" ".join(created), flush=True)
    """
)


def test_processes_opening_a_schema_2_book_at_once_migrate_it_once_and_keep_the_cap(
    book_location: str, raw_sql: RawSQL
) -> None:
    """The same with processes (replicas restarted together), released by one line on stdin
    once all have started."""
    make_v2_book(raw_sql)
    rng = random.Random(5)
    raw_sql(V2_INSERT, v2_row(rng, images=4, outcome=("finished", "FAILED")))  # charged
    replicas = [
        subprocess.Popen(
            [sys.executable, "-c", _REPLICA, book_location, GATEWAYS[0]],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    for replica in replicas:
        assert replica.stdout is not None
        assert replica.stdout.readline().strip() == "ready"
    for replica in replicas:  # all released before any is waited for
        assert replica.stdin is not None
        replica.stdin.write("go\n")
        replica.stdin.flush()
    outs = [replica.communicate(timeout=90)[0] for replica in replicas]

    assert [replica.returncode for replica in replicas] == [0] * len(replicas)
    created = " ".join(outs).split()
    assert len(created) == 10 - 4
    assert schema(raw_sql) == "3"
    assert raw_sql("SELECT COUNT(*) FROM mai_jobs WHERE num_images IS NULL") == [(0,)]
