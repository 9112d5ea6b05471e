"""The embedded job book: one SQLite file (WAL), shared by every process of one machine.

Each statement commits on its own (autocommit): WAL with ``synchronous=NORMAL`` makes a
commit cost tens of microseconds and survive a killed process (the data is in the OS cache);
an OS crash or power cut may lose the last moments. ``busy_timeout`` lets many processes
(two MCP servers, a CLI and a notebook) write the same file in turn.
"""

from __future__ import annotations

import contextlib
import os
import random
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

from .._exceptions import JobBookError
from ._book import JobBook
from ._record import RETENTION_DAYS, now

BUSY_TIMEOUT_MS = 10_000


class SQLiteJobBook(JobBook):
    """The job book in a SQLite file, created (with its directory) on first use.

    Raises:
        JobBookError: the file cannot be created or opened, or is not a job book.
    """

    kind: ClassVar[str] = "sqlite"

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        retention_days: float = RETENTION_DAYS,
        store_prompts: bool = True,
        clock: Callable[[], float] = now,
    ) -> None:
        super().__init__(retention_days=retention_days, store_prompts=store_prompts, clock=clock)
        self.path = Path(path).expanduser()
        self._conn: sqlite3.Connection | None = None
        self._pid = 0
        self._conn_lock = threading.Lock()
        with self._lock:
            self._create()

    @property
    def location(self) -> str:
        return str(self.path)

    def _connect(self) -> sqlite3.Connection:
        if self._conn is not None and self._pid == os.getpid():
            return self._conn
        # A forked child must not share its parent's connection: open its own.
        conn: sqlite3.Connection | None = None
        deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
        while True:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                conn = sqlite3.connect(
                    self.path,
                    timeout=BUSY_TIMEOUT_MS / 1000,
                    isolation_level=None,
                    check_same_thread=False,
                )
                conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
                mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()
                conn.execute("PRAGMA synchronous = NORMAL")
                break
            except (OSError, sqlite3.Error) as exc:
                if conn is not None:  # e.g. a file that is not a database: no leaked handle
                    conn.close()
                    conn = None
                # Switching to WAL, or reading the WAL index while another process recovers
                # it, can answer "database is locked" at once, without SQLite's busy handler:
                # processes opening one book together (a host starting a server per call)
                # wait for each other here instead, within the same busy timeout.
                busy = isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc)
                if not busy or time.monotonic() >= deadline:
                    raise self._error("cannot be opened", exc) from None
                time.sleep(random.uniform(0.01, 0.05))
        if mode is None or str(mode[0]).lower() != "wal":  # pragma: no cover - odd filesystems
            conn.close()
            raise JobBookError(
                f"The job book at {self.path} cannot use SQLite's WAL mode (is it on a network "
                "filesystem?): point MAI_JOB_BOOK at a local file or a postgresql:// URL."
            )
        self._conn, self._pid = conn, os.getpid()
        return conn

    def _error(self, what: str, exc: BaseException) -> JobBookError:
        detail = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        hint = ""
        text = str(exc).lower()
        if "not a database" in text or "file is encrypted" in text:
            hint = " It is not a job book: point MAI_JOB_BOOK at another file."
        elif "readonly" in text or "read-only" in text or "permission" in text:
            hint = " Make it writable, or point MAI_JOB_BOOK at a writable file."
        elif "disk" in text and "full" in text:
            hint = " Free some disk space."
        return JobBookError(f"The job book at {self.path} {what}: {detail}.{hint}")

    def _execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._conn_lock:
            conn = self._connect()
            try:
                return conn.execute(sql, tuple(params)).fetchall()
            except sqlite3.Error as exc:
                raise self._error("failed", exc) from None

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[Callable[[str, Sequence[Any]], list[tuple[Any, ...]]]]:
        # BEGIN IMMEDIATE takes the file's write lock at once (waiting up to busy_timeout for
        # another process's): the sum and the insert that follow see and write one state.
        with self._conn_lock:
            conn = self._connect()
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise self._error("failed", exc) from None

            def execute(sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
                try:
                    return conn.execute(sql, tuple(params)).fetchall()
                except sqlite3.Error as exc:
                    raise self._error("failed", exc) from None

            try:
                yield execute
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                raise
            try:
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                raise self._error("failed", exc) from None

    def close(self) -> None:
        with self._conn_lock:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            self._conn = None
