"""The job book: every operation, in SQL that SQLite and Postgres both run.

A backend supplies a connection (:meth:`JobBook._execute`); everything else is here, so both
backends pass one test suite. Each operation is one statement in autocommit mode, so no
transaction is ever left open (a claim under daily spending limits is one short transaction:
:mod:`._limits`); :meth:`JobBook.claim` is an ``INSERT … ON CONFLICT DO NOTHING``
that either writes the new intent or finds the earlier job holding the same key (two partial
unique indexes: the idempotency key, and the twin key of an undelivered call).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, ClassVar, Final

from .._exceptions import JobBookError
from ._limits import DAY, day_start, images_of, insert_within_limits
from ._record import (
    ADOPT_WINDOW,
    RETENTION_DAYS,
    RUNNING_ADOPT_WINDOW,
    Claim,
    Event,
    JobRecord,
    now,
    owner_is_dead,
)

if TYPE_CHECKING:
    from ._limits import Execute, SpendingLimits

logger = logging.getLogger("mai_tools.jobbook")

SCHEMA_VERSION: Final = 3
"""3 added the ``num_images`` column (a book of version 2 is migrated when opened: see
:meth:`JobBook._migrate`)."""

COLUMNS: Final = (
    "id",
    "principal",
    "gateway",
    "surface",
    "operation",
    "fingerprint",
    "fields",
    "prompt",
    "state",
    "idempotency_key",
    "twin_key",
    "request_id",
    "polling_url",
    "status",
    "image_urls",
    "paths",
    "error",
    "owner",
    "lease",
    "delivered",
    "created",
    "submitted_at",
    "finished_at",
    "updated",
)
_JSON_COLUMNS: Final = frozenset({"fields", "image_urls", "paths"})

SCHEMA: Final = (
    """CREATE TABLE IF NOT EXISTS mai_jobs (
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
    updated DOUBLE PRECISION NOT NULL,
    num_images INTEGER
)""",
    "CREATE UNIQUE INDEX IF NOT EXISTS mai_jobs_key ON mai_jobs "
    "(principal, gateway, idempotency_key) WHERE idempotency_key IS NOT NULL",
    "CREATE UNIQUE INDEX IF NOT EXISTS mai_jobs_twin ON mai_jobs "
    "(principal, gateway, twin_key) WHERE twin_key IS NOT NULL",
    "CREATE INDEX IF NOT EXISTS mai_jobs_request_id ON mai_jobs (request_id)",
    "CREATE INDEX IF NOT EXISTS mai_jobs_created ON mai_jobs (created)",
    "CREATE TABLE IF NOT EXISTS mai_jobs_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
)
DAY_INDEX: Final = (
    "CREATE INDEX IF NOT EXISTS mai_jobs_day ON mai_jobs "
    "(gateway, created, principal, state, status, num_images)"
)
"""Every column of the daily limits' sum (:mod:`._limits`), a gateway's day in order: SQLite
sums from the index alone (it reads a row only when its ``num_images`` is NULL); Postgres
reads the day's rows, but no row's JSON. Made by :meth:`JobBook._migrate`, after the column."""

# Column names are this module's constants, never input: the f-strings below build no SQL from
# data (every value is a placeholder).
_SELECT: Final = f"SELECT {', '.join(COLUMNS)} FROM mai_jobs"  # noqa: S608
# num_images is written, never read back into a record: it is the fields' own num_images, kept
# as a column so that a day's images are summed without parsing each row's JSON (:mod:`._limits`).
_INSERTED: Final = (*COLUMNS, "num_images")
_INSERT: Final = (
    f"INSERT INTO mai_jobs ({', '.join(_INSERTED)}) VALUES "  # noqa: S608
    f"({', '.join('?' * len(_INSERTED))}) ON CONFLICT DO NOTHING RETURNING id"
)
_RETURNING: Final = f" RETURNING {', '.join(COLUMNS)}"
_PRUNE_EVERY: Final = 86400.0

BookObserver = Callable[[Event, JobRecord], None]
"""Told each committed change of a job's state (see :attr:`JobBook.observers`)."""


def _row(values: Sequence[Any]) -> JobRecord:
    data = dict(zip(COLUMNS, values, strict=True))
    for name in _JSON_COLUMNS:
        data[name] = json.loads(data[name])
    data["delivered"] = bool(data["delivered"])
    return JobRecord(**data)


def _like_escape(text: str) -> str:
    """``text`` matched literally by LIKE (with ``ESCAPE '\\'``)."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _values(record: JobRecord) -> list[Any]:
    out: list[Any] = []
    for name in COLUMNS:
        value = getattr(record, name)
        if name in _JSON_COLUMNS:
            value = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
        elif name == "delivered":
            value = int(value)
        out.append(value)
    out.append(images_of(record.fields))
    return out


class JobBook:
    """The durable memory of every job an installation submits (abstract: see the backends).

    Thread-safe; safe for many processes at once (SQLite on one machine, Postgres across
    machines). Every method is one short statement; the async client calls them directly for
    SQLite and in a worker thread for Postgres (:attr:`offload`).

    Args:
        retention_days: rows older than this are deleted.
        store_prompts: keep a short prompt per job (else only a digest of it).
        clock: wall-clock seconds (tests inject one).
    """

    kind: ClassVar[str] = "abstract"
    offload: ClassVar[bool] = False
    """Whether an event loop should call this book from a worker thread (network backends)."""
    limit_lock: ClassVar[str | None] = None
    """The statement that serializes limited claims inside :meth:`_transaction` (None: the
    transaction itself does, as SQLite's ``BEGIN IMMEDIATE``); see :mod:`._limits`."""
    images_sql: ClassVar[str] = "json_extract(fields, '$.num_images')"
    """A row's ``num_images`` read from its fields (NULL if they lack it), in the backend's SQL:
    for rows whose ``num_images`` column is NULL (see :meth:`_migrate`)."""
    columns_sql: ClassVar[str] = "SELECT name FROM pragma_table_info('mai_jobs')"
    """The names of ``mai_jobs``'s columns, in the backend's SQL."""

    def __init__(
        self,
        *,
        retention_days: float = RETENTION_DAYS,
        store_prompts: bool = True,
        clock: Callable[[], float] = now,
    ) -> None:
        if not retention_days > 0:
            raise JobBookError(f"retention_days must be positive; got {retention_days!r}.")
        self.retention = float(retention_days) * 86400.0
        self.store_prompts = store_prompts
        self.clock = clock
        self._lock = threading.RLock()
        self._pruned_at = 0.0
        self.observers: list[BookObserver] = []
        """Called with (event, the row as committed) after each change of a job's state made
        through this object: ``intent`` (claimed), ``submitted``, ``finished`` (the first
        time), ``unknown`` (also a peer's stale intent, by :meth:`sweep`) and ``released``.
        An observer's exception is logged, never raised: the change stands. (The audit log,
        :class:`~mai_tools.jobbook.AuditLog`, is one.)"""

    # ------------------------------------------------------------------ backend hooks

    @property
    def location(self) -> str:
        """Where the book lives (a path, or a URL without its password)."""
        raise NotImplementedError

    def _execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run one statement (``?`` placeholders) in autocommit mode; the rows it returns."""
        raise NotImplementedError

    def _transaction(self) -> AbstractContextManager[Execute]:
        """One transaction (committed on leaving, rolled back on an exception) that holds the
        book's write lock or :attr:`limit_lock` against every other limited claim; yields a
        function that runs one statement in it."""
        raise NotImplementedError

    def close(self) -> None:
        """Close the book's connections (it reopens them if used again)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.location!r})"

    # ------------------------------------------------------------------ set up

    def _create(self) -> None:
        """Create the tables (if new) and check the schema version; then prune old rows.

        On failure the connection it opened is closed: the caller never gets the book.
        """
        try:
            self._create_tables()
        except BaseException:
            self.close()
            raise

    def _create_tables(self) -> None:
        for statement in SCHEMA:
            self._execute(statement)
        if self._schema_version(self._execute) != str(SCHEMA_VERSION):
            # Again in one transaction holding the book's write lock (SQLite; a Postgres book
            # holds its schema lock around all of this): processes opening an old book at once
            # migrate it once, and a migration that fails leaves the book as it was.
            with self._transaction() as execute:
                if self._schema_version(execute) != str(SCHEMA_VERSION):
                    self._migrate(execute)
                    execute(
                        "INSERT INTO mai_jobs_meta (key, value) VALUES ('schema', ?) "
                        "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                        (str(SCHEMA_VERSION),),
                    )
        self.prune()

    def _schema_version(self, execute: Execute) -> str | None:
        """The book's schema version: this one, one it migrates from, or None (new).

        Raises:
            JobBookError: another version (a newer mai-tools wrote it).
        """
        rows = execute("SELECT value FROM mai_jobs_meta WHERE key = 'schema'", ())
        found: str | None = rows[0][0] if rows else None
        if found not in (None, "2", str(SCHEMA_VERSION)):
            raise JobBookError(
                f"The job book at {self.location} has schema version {found}; this "
                f"mai-tools reads version {SCHEMA_VERSION}. Upgrade mai-tools, or point "
                "MAI_JOB_BOOK at another book."
            )
        return found

    def _migrate(self, execute: Execute) -> None:
        """Bring a book of schema 2 (or one whose version was never written) to this schema.

        3 added ``num_images``: added if missing (a table created by schema 2), then
        :data:`DAY_INDEX`. A row without it (NULL) counts its fields' ``num_images``, as every
        row did before, so nothing has to be filled for the counts to stay the same: only the
        rows a daily sum still reads (from yesterday on, a day's margin for replicas' clocks)
        are filled, so the sum reads their column. The migration holds the book's lock (and
        Postgres's lock on the table) throughout: for a 30-day book of 300,000 rows on a busy
        2-core VM it took 0.4 s on SQLite and 1.0 s on Postgres, against 1.9 s and 22 s to
        fill every row. Rows that a process of schema 2 still running writes after the
        migration are NULL too, and count the same way.
        """
        if "num_images" not in {name for (name,) in execute(self.columns_sql, ())}:
            execute("ALTER TABLE mai_jobs ADD COLUMN num_images INTEGER", ())
        execute(
            f"UPDATE mai_jobs SET num_images = COALESCE({self.images_sql}, 1) "  # noqa: S608
            "WHERE num_images IS NULL AND created >= ?",
            (day_start(self.clock()) - DAY,),
        )
        execute(DAY_INDEX, ())

    # ------------------------------------------------------------------ the submit path

    def claim(
        self, record: JobRecord, lease: float = 130.0, *, limits: SpendingLimits | None = None
    ) -> Claim:
        """Write ``record`` as a new intent, or find the earlier job holding one of its keys.

        ``lease``: seconds the new intent's owner may take to send its submit; past that a
        peer treats the intent as stale (its submit may have arrived: state unknown).
        ``limits``: with daily limits, the new intent is written only if the day's images
        leave room for it, atomically (:mod:`._limits`); finding an earlier job is never
        refused.

        Raises:
            SpendingLimitError: a new intent would pass a daily limit (nothing was written).

        An earlier job is found by the same (principal, idempotency key), or by the same
        (principal, twin key) while its answer is undelivered and it is within the adoption
        window (an expired one gives its twin key up, and the new intent is written).
        """
        self.maybe_prune()  # a long-lived server prunes once a day, not only at start
        with self._lock:
            for _ in range(8):
                t = self.clock()
                record.created = record.updated = t
                record.lease = t + lease
                if limits is not None and limits.daily:
                    inserted = insert_within_limits(self, _INSERT, _values(record), record, limits)
                else:
                    inserted = bool(self._execute(_INSERT, _values(record)))
                if inserted:
                    self._notify("intent", [record])
                    return Claim(record, created=True)
                earlier = self._holder(record)
                if earlier is None:
                    continue  # freed between the two statements: try again
                if earlier.id == record.id:  # our own insert, committed before a reconnect
                    return Claim(earlier, created=True)
                if (
                    earlier.idempotency_key is None
                    or earlier.idempotency_key != record.idempotency_key
                ) and not self._adoptable(earlier, t):
                    self.untwin(earlier.id)
                    continue
                stale = earlier.state == "intent" and (
                    earlier.lease < t or owner_is_dead(earlier.owner)
                )
                age = t - earlier.submitted_at if earlier.submitted_at is not None else 0.0
                return Claim(earlier, created=False, stale=stale, age=max(age, 0.0))
        raise JobBookError(  # pragma: no cover - eight races in a row
            f"The job book at {self.location} kept changing under this call; nothing was sent."
        )

    def _holder(self, record: JobRecord) -> JobRecord | None:
        # The idempotency key first: a key names its job whatever the twin says.
        for column, key in (
            ("idempotency_key", record.idempotency_key),
            ("twin_key", record.twin_key),
        ):
            if key is None:
                continue
            rows = self._execute(
                f"{_SELECT} WHERE principal = ? AND gateway = ? AND {column} = ?",
                (record.principal, record.gateway, key),
            )
            if rows:
                return _row(rows[0])
        return None

    @staticmethod
    def _adoptable(record: JobRecord, t: float) -> bool:
        if record.delivered:
            return False
        if record.state in ("intent", "unknown"):
            return t - record.updated < ADOPT_WINDOW or record.lease >= t
        if record.state == "submitted" and record.submitted_at is not None:
            return t - record.submitted_at < RUNNING_ADOPT_WINDOW
        return t - record.updated < ADOPT_WINDOW

    def renew(self, job_id: str, lease: float) -> None:
        """Extend an intent's lease (its submit is being retried)."""
        self._execute(
            "UPDATE mai_jobs SET lease = ? WHERE id = ? AND state = 'intent'", (lease, job_id)
        )

    def release(self, job_id: str) -> None:
        """Forget an intent whose submit certainly created nothing (never sent, 429, 4xx)."""
        self._changed(
            "released", "DELETE FROM mai_jobs WHERE id = ? AND state = 'intent'", (job_id,)
        )

    def unknown(self, job_id: str, error: str | None = None) -> None:
        """The intent's submit may have arrived, and no request id is known."""
        self._changed(
            "unknown",
            "UPDATE mai_jobs SET state = 'unknown', error = ?, updated = ? "
            "WHERE id = ? AND state = 'intent'",
            (error, self.clock(), job_id),
        )

    def submitted(self, job_id: str, request_id: str, polling_url: str | None, status: str) -> None:
        """The gateway answered the submit: the job is ``request_id``."""
        t = self.clock()
        self._changed(
            "submitted",
            "UPDATE mai_jobs SET state = 'submitted', request_id = ?, polling_url = ?, "
            "status = ?, submitted_at = ?, updated = ? WHERE id = ?",
            (request_id, polling_url, status, t, t, job_id),
        )

    def finished(
        self,
        request_id: str,
        status: str,
        image_urls: Sequence[str] = (),
        error: str | None = None,
    ) -> None:
        """The job ``request_id`` ended (COMPLETED, FAILED or ERROR); no-op if not in the book."""
        t = self.clock()
        self._changed(
            "finished",
            "UPDATE mai_jobs SET state = 'finished', status = ?, image_urls = ?, error = ?, "
            "finished_at = COALESCE(finished_at, ?), updated = ? WHERE request_id = ?",
            (status, json.dumps(list(image_urls)), error, t, t, request_id),
        )

    def progressed(self, request_id: str, status: str) -> None:
        """A status read of a running job (QUEUED, IN_PROGRESS)."""
        self._execute(
            "UPDATE mai_jobs SET status = ? WHERE request_id = ? AND state = 'submitted'",
            (status, request_id),
        )

    def saved(self, request_id: str, paths: Sequence[str]) -> None:
        """Where the images of ``request_id`` were written."""
        self._execute(
            "UPDATE mai_jobs SET paths = ?, updated = ? WHERE request_id = ?",
            (json.dumps([str(p) for p in paths]), self.clock(), request_id),
        )

    def delivered(self, principal: str, twin_key: str, request_id: str | None = None) -> None:
        """The answer of the call ``twin_key`` reached its caller (images, "still running",
        or an error): an identical call is now a new job. With ``request_id``, only that
        job's entry is released (a newer identical call may hold the key by then)."""
        if request_id is None:
            self._execute(
                "UPDATE mai_jobs SET delivered = 1, twin_key = NULL, updated = ? "
                "WHERE principal = ? AND twin_key = ? AND request_id IS NULL",
                (self.clock(), principal, twin_key),
            )
        else:
            self._execute(
                "UPDATE mai_jobs SET delivered = 1, twin_key = NULL, updated = ? "
                "WHERE principal = ? AND twin_key = ? AND request_id = ?",
                (self.clock(), principal, twin_key, request_id),
            )

    def untwin(self, job_id: str) -> None:
        """Stop ``job_id`` from being adopted by identical calls (its content changed)."""
        self._execute("UPDATE mai_jobs SET twin_key = NULL WHERE id = ?", (job_id,))

    # ------------------------------------------------------------------ observers

    def _changed(self, event: Event, sql: str, params: Sequence[Any]) -> None:
        """Run one state change; with observers, tell them each row it changed."""
        if not self.observers:
            self._execute(sql, params)
            return
        rows = [_row(r) for r in self._execute(sql + _RETURNING, params)]
        if event == "finished":
            # finished_at is set once (COALESCE) and updated every time: only the first
            # outcome of a job is a change (a task's result read again is not).
            rows = [r for r in rows if r.finished_at == r.updated]
        self._notify(event, rows)

    def _notify(self, event: Event, records: Sequence[JobRecord]) -> None:
        for record in records:
            for observer in list(self.observers):
                try:
                    observer(event, record)
                except Exception:
                    logger.exception("job book: an observer of %s events failed", event)

    # ------------------------------------------------------------------ reading

    def get(self, job_id: str) -> JobRecord | None:
        rows = self._execute(f"{_SELECT} WHERE id = ?", (job_id,))
        return _row(rows[0]) if rows else None

    def find(self, request_id: str, *, principal: str | None = None) -> JobRecord | None:
        """The job ``request_id`` (of ``principal``, when given)."""
        if principal is None:
            rows = self._execute(f"{_SELECT} WHERE request_id = ?", (request_id,))
        else:
            rows = self._execute(
                f"{_SELECT} WHERE request_id = ? AND principal = ?", (request_id, principal)
            )
        return _row(rows[0]) if rows else None

    def find_image(self, url: str, *, principal: str | None = None) -> JobRecord | None:
        """The newest finished job (of ``principal``, when given) that returned the image
        ``url``, exactly; None if no such job is in the book. ``view_image`` fetches only
        such URLs (any other would let a caller make the server fetch what it names)."""
        patterns = {
            "%" + _like_escape(json.dumps(url, ensure_ascii=plain)) + "%" for plain in (True, False)
        }
        where = " OR ".join("image_urls LIKE ? ESCAPE '\\'" for _ in patterns)
        params: list[Any] = [*sorted(patterns)]
        sql = f"{_SELECT} WHERE state = 'finished' AND ({where})"
        if principal is not None:
            sql += " AND principal = ?"
            params.append(principal)
        for row in self._execute(sql + " ORDER BY created DESC, id LIMIT 20", params):
            record = _row(row)
            if url in record.image_urls:
                return record
        return None

    def list(
        self,
        *,
        principal: str | None = None,
        surface: str | None = None,
        status: str | None = None,
        state: str | None = None,
        since: float | None = None,
        limit: int | None = 50,
        gateway: str | None = None,
    ) -> list[JobRecord]:
        """Jobs, the newest first, filtered by whatever is given."""
        where: list[str] = []
        params: list[Any] = []
        for column, value in (
            ("principal", principal),
            ("gateway", gateway),
            ("surface", surface),
            ("status", status),
            ("state", state),
        ):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        if since is not None:
            where.append("created >= ?")
            params.append(since)
        sql = _SELECT + (f" WHERE {' AND '.join(where)}" if where else "")
        sql += " ORDER BY created DESC, id"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        return [_row(r) for r in self._execute(sql, params)]

    def prune(self) -> int:
        """Delete rows older than the retention; how many went."""
        t = self.clock()
        self._pruned_at = t
        rows = self._execute(
            "DELETE FROM mai_jobs WHERE created < ? RETURNING id", (t - self.retention,)
        )
        self.sweep()
        return len(rows)

    def sweep(self) -> int:
        """Mark ``unknown`` every intent whose process is gone (dead on this machine) or whose
        lease ran out: its submit may have arrived, and no request id will ever be recorded.
        How many were marked."""
        t = self.clock()
        rows = self._execute("SELECT id, owner, lease FROM mai_jobs WHERE state = 'intent'")
        stale = [job_id for job_id, who, lease in rows if lease < t or owner_is_dead(who)]
        for job_id in stale:
            self.unknown(job_id, "its process stopped before the gateway's answer was recorded")
        return len(stale)

    def maybe_prune(self) -> None:
        if self.clock() - self._pruned_at > _PRUNE_EVERY:
            try:
                self.prune()
            except JobBookError as exc:
                logger.warning("job book: pruning old rows failed: %s", exc)
