"""The shared job book: a Postgres database, for replicas and workers on many machines.

Needs ``pip install 'mai-tools[postgres]'`` (psycopg 3). One connection per book object, in
autocommit mode, used under a lock; a broken connection is reopened once per statement, so a
database that restarts costs one failed call (a clear :class:`JobBookError`), not the process.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any, ClassVar
from urllib.parse import unquote, urlsplit, urlunsplit

import psycopg

from .._exceptions import JobBookError
from ._book import JobBook
from ._record import RETENTION_DAYS, now

CONNECT_TIMEOUT = 5
SCHEMA_LOCK_KEY = 0x6D61695F736368
"""The advisory lock books hold while they create the tables (another key than the limits')."""

_INHERITED: list[object] = []
"""Connections a forked child inherited from its parent: never used, never closed by it."""


def _without_password(url: str) -> str:
    """``url`` with its password, in the user part or the query string, shown as ``***``.

    The netloc is cut by hand, not parsed: libpq's multi-host form (``h1:5432,h2:5433``) and
    IPv6 hosts must come out as they went in.
    """
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hosts = netloc.rpartition("@")
        user, colon, _password = userinfo.partition(":")
        if colon:
            netloc = f"{user}:***@{hosts}"
    query = "&".join(
        "password=***" if pair.partition("=")[0] == "password" else pair
        for pair in parts.query.split("&")
    )
    return urlunsplit(parts._replace(netloc=netloc, query=query if parts.query else ""))


def _passwords(url: str) -> set[str]:
    """Every form in which ``url``'s password could appear in a message."""
    parts = urlsplit(url)
    found: set[str] = set()
    userinfo = parts.netloc.rpartition("@")[0]
    if ":" in userinfo:
        found.add(userinfo.partition(":")[2])
    for pair in parts.query.split("&"):
        name, _, value = pair.partition("=")
        if name == "password":
            found.add(value)
    found |= {unquote(value) for value in found}
    return {value for value in found if value}


class PostgresJobBook(JobBook):
    """The job book in a Postgres database (the ``mai_jobs`` table, created if missing).

    Raises:
        JobBookError: the database cannot be reached or used.
    """

    kind: ClassVar[str] = "postgres"
    offload: ClassVar[bool] = True
    # Held until the transaction ends: every replica's limited claims queue on one key.
    limit_lock: ClassVar[str | None] = "SELECT pg_advisory_xact_lock(?)"
    images_sql: ClassVar[str] = "CAST(CAST(fields AS jsonb) ->> 'num_images' AS INTEGER)"
    columns_sql: ClassVar[str] = (
        "SELECT column_name FROM information_schema.columns "
        "WHERE table_schema = current_schema() AND table_name = 'mai_jobs'"
    )

    def __init__(
        self,
        url: str,
        *,
        retention_days: float = RETENTION_DAYS,
        store_prompts: bool = True,
        clock: Callable[[], float] = now,
    ) -> None:
        super().__init__(retention_days=retention_days, store_prompts=store_prompts, clock=clock)
        self._url = url
        self._conn: psycopg.Connection[Any] | None = None
        self._pid = 0
        self._conn_lock = threading.Lock()
        with self._lock:
            self._create()

    @property
    def location(self) -> str:
        return _without_password(self._url)

    def _create_tables(self) -> None:
        # Two replicas starting at once on an empty database: concurrent CREATE TABLE IF NOT
        # EXISTS can fail ("duplicate key value violates unique constraint
        # pg_type_typname_nsp_index"); one at a time, the second finds the tables.
        self._execute("SELECT pg_advisory_lock(?)", (SCHEMA_LOCK_KEY,))
        try:
            super()._create_tables()
        finally:
            with contextlib.suppress(JobBookError):  # a dropped session released it anyway
                self._execute("SELECT pg_advisory_unlock(?)", (SCHEMA_LOCK_KEY,))

    def _connect(self) -> psycopg.Connection[Any]:
        if self._conn is not None and self._pid != os.getpid():
            self._forget_inherited()
        if self._conn is not None and not self._conn.closed:
            return self._conn
        try:
            self._conn = psycopg.connect(
                self._url, autocommit=True, connect_timeout=CONNECT_TIMEOUT
            )
        except psycopg.Error as exc:
            raise self._error("cannot be reached", exc) from None
        self._pid = os.getpid()
        return self._conn

    def _forget_inherited(self) -> None:
        """In a forked child: leave the parent's connection alone and open one of its own.

        Two processes speaking on one socket corrupt both sessions ("prepared statement already
        exists", "got no result", hangs). Closing it here would end the parent's session, so
        it is kept referenced and never used (if the child's exit still finalizes it, the
        parent's next statement reconnects, as after any dropped connection).
        """
        _INHERITED.append(self._conn)
        self._conn = None

    def _error(self, what: str, exc: BaseException) -> JobBookError:
        detail = " ".join(str(exc).split()) or type(exc).__name__
        # psycopg's messages may quote the connection string: never the password.
        for password in sorted(_passwords(self._url), key=len, reverse=True):
            detail = detail.replace(password, "***")
        return JobBookError(f"The job book at {self.location} {what}: {detail}")

    def _execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        statement = sql.replace("?", "%s")
        with self._conn_lock:
            for attempt in (1, 2):
                conn = self._connect()
                try:
                    with conn.cursor() as cursor:
                        cursor.execute(statement, tuple(params))
                        return list(cursor.fetchall()) if cursor.description else []
                except psycopg.OperationalError as exc:
                    # The server went away (restart, failover): reopen once and retry. A write
                    # whose commit may have happened is retried only when idempotent, which
                    # every statement of the book is (keyed INSERT … ON CONFLICT, UPDATE, DELETE).
                    self._drop()
                    if attempt == 2:
                        raise self._error("failed", exc) from None
                except psycopg.Error as exc:
                    raise self._error("failed", exc) from None
        raise AssertionError("unreachable")  # pragma: no cover

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[Callable[[str, Sequence[Any]], list[tuple[Any, ...]]]]:
        # Not retried on a dropped connection (unlike one statement): the call fails with a
        # JobBookError before anything is sent, and the transaction's work is rolled back.
        with self._conn_lock:
            conn = self._connect()

            def execute(sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
                with conn.cursor() as cursor:
                    cursor.execute(sql.replace("?", "%s"), tuple(params))
                    return list(cursor.fetchall()) if cursor.description else []

            try:
                with conn.transaction():
                    yield execute
            except psycopg.OperationalError as exc:
                self._drop()
                raise self._error("failed", exc) from None
            except psycopg.Error as exc:
                raise self._error("failed", exc) from None

    def _drop(self) -> None:
        if self._conn is not None and self._pid != os.getpid():
            self._forget_inherited()
        if self._conn is not None:
            with contextlib.suppress(psycopg.Error):  # closing a dead connection
                self._conn.close()
        self._conn = None

    def close(self) -> None:
        with self._conn_lock:
            self._drop()
