"""The batch journal: one SQLite database in the output directory, one row per input id.

Every state change of a line is one transaction, so a process killed at any moment (``kill
-9``, OOM, power cut aside) leaves each line in exactly one recorded state:

``pending`` → ``submitting`` (intent, written *before* the POST and synced to disk) →
``submitted`` (request id known) → ``completed`` (image URLs known) → ``saved`` (files written).
Side exits: ``failed`` (FAILED or ERROR), ``invalid`` (never sent), ``unknown`` (the POST may
have reached the gateway but its answer was never recorded: it may be charged).

A run that finds a line still ``submitting`` knows the previous run died between the intent
and the answer: that line is ``unknown``, and is sent again only when asked to.

WAL mode with ``synchronous=NORMAL`` makes a commit cost tens of microseconds and survives a
killed process (the data is in the OS's cache). An OS crash or power cut may lose the last
moments of records; a lost intent could then let a rerun send a line again, so
``put(durable=True)`` (``BatchRun(sync_intents=True)``) syncs each intent to disk, at the cost
of one fsync per line (about 6 ms on the benchmark VM's disk under load).
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Final

from .._exceptions import InvalidArgumentError
from .._status import EMPTY_URL
from .._version import __version__

JOURNAL_NAME: Final = "journal.sqlite3"
"""The run's journal in its output directory: what was submitted, so a rerun resumes."""
LOCK_NAME: Final = ".lock"
SCHEMA_VERSION: Final = "1"

STATES: Final = frozenset(
    {"pending", "submitting", "submitted", "completed", "saved", "failed", "invalid", "unknown"}
)


class BatchDirectoryError(InvalidArgumentError):
    """The output directory cannot be used: another input's journal, or another run's lock."""


class JournalError(Exception):
    """Writing the journal failed (disk full, I/O error): nothing more may be submitted."""


@dataclass(slots=True)
class Row:
    """What the journal holds for one id (and the run keeps in memory)."""

    id: str
    line: int | None
    num_images: int
    state: str = "pending"
    status: str = "QUEUED"
    request_id: str | None = None
    image_urls: list[str] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)  # relative to the output directory
    error: str | None = None

    def unfetchable(self) -> list[str]:
        """The notes about the line's images the gateway gave no URL for: its error holds
        them from the moment it completed (:attr:`~mai_tools.JobStatus.unavailable`), and
        keeps them whatever happens to the others."""
        return [part for part in (self.error or "").split("; ") if EMPTY_URL in part]


def with_unfetchable(unfetchable: list[str], text: str) -> str:
    """``text`` after the notes of :meth:`Row.unfetchable`."""
    return "; ".join([*unfetchable, text])


_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS lines (
    id TEXT PRIMARY KEY,
    line INTEGER,
    num_images INTEGER NOT NULL,
    state TEXT NOT NULL,
    status TEXT NOT NULL,
    request_id TEXT,
    image_urls TEXT NOT NULL DEFAULT '[]',
    paths TEXT NOT NULL DEFAULT '[]',
    error TEXT,
    updated REAL NOT NULL
);
"""


class _Damaged(ValueError):
    """A journal row holds what this program never writes."""


_STATUSES: Final = frozenset(
    {"QUEUED", "PROCESSING", "COMPLETED", "FAILED", "ERROR", "INVALID", "UNKNOWN"}
)
_NEEDS_REQUEST_ID: Final = frozenset({"submitted", "completed", "saved"})
MAX_NUM_IMAGES: Final = 1_000_000
"""More images than any row this program writes asks for: a larger number is damage."""


def _storable(value: object) -> object:
    """``value`` as SQLite can store it: text with a lone surrogate (a hostile gateway's
    ``"\\ud800"`` in an error) keeps it as an escape instead of failing the write."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return value.encode("utf-8", "backslashreplace").decode("utf-8")
    return value


def _text(data: bytes) -> str:
    # Text that is not UTF-8 (written by hand) reads as what it can be, not as an exception.
    return data.decode("utf-8", "replace")


def _string_list(raw: object, name: str) -> list[str]:
    try:
        value = json.loads(raw) if isinstance(raw, str) else None
    except (ValueError, RecursionError):
        value = None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _Damaged(f"{name} is not a JSON list of strings")
    return value


def _relative_path(path: str) -> str:
    parts = Path(path).parts
    if not path or Path(path).is_absolute() or ".." in parts or "\\" in path:
        raise _Damaged(f"saved path {path[:80]!r} is not inside the output directory")
    return path


def _row(values: tuple[object, ...]) -> Row:
    """A row as read: checked field by field, as this program writes it."""
    rid, line, num, state, status, request_id, urls, paths, error = values
    assert isinstance(rid, str)
    try:
        if line is not None and (not isinstance(line, int) or line < 0):
            raise _Damaged("line is not a line number")
        if not isinstance(num, int) or not 0 <= num <= MAX_NUM_IMAGES:
            raise _Damaged("num_images is not a number of images")
        if not isinstance(state, str) or not isinstance(status, str):
            raise _Damaged("state or status is not text")
        if request_id is not None and (not isinstance(request_id, str) or not request_id):
            raise _Damaged("request_id is not text")
        if error is not None and not isinstance(error, str):
            raise _Damaged("error is not text")
        if status not in _STATUSES:
            raise _Damaged(f"status {status[:40]!r} is none this program writes")
        if state in _NEEDS_REQUEST_ID and request_id is None:
            raise _Damaged(f"a {state} line without its request id")
        return Row(
            id=rid,
            line=line,
            num_images=num,
            state=state if state in STATES else "unknown",
            status=status,
            request_id=request_id,
            image_urls=_string_list(urls, "image_urls"),
            paths=[_relative_path(p) for p in _string_list(paths, "paths")],
            error=error,
        )
    except _Damaged as exc:
        return Row(
            id=rid,
            line=line if isinstance(line, int) and line >= 0 else None,
            num_images=num if isinstance(num, int) and 0 <= num <= MAX_NUM_IMAGES else 0,
            state="unknown",
            status="UNKNOWN",
            request_id=request_id if isinstance(request_id, str) and request_id else None,
            error=(
                f"the journal row of this line is damaged ({exc}; was it edited?): it may "
                "have been sent (a job may exist and be charged); it is not sent again unless "
                "you rerun with --resubmit-unknown"
            ),
        )


def _lock(directory: Path) -> IO[bytes]:
    """An exclusive lock on the directory for this process's lifetime (freed when it dies)."""
    handle = (directory / LOCK_NAME).open("a+b")
    try:
        if sys.platform == "win32":  # pragma: no cover - exercised on Windows only
            import msvcrt

            msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)
        else:
            import fcntl

            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        raise BatchDirectoryError(
            f"Another mai-image batch is running on {str(directory)!r}; wait for it to end, "
            "or give this run another --out."
        ) from None
    return handle


class Journal:
    """The SQLite journal of one output directory. Use from one thread (the event loop's).

    Attributes:
        seconds: time spent in journal writes so far (for the overhead figure).
        writes: transactions committed so far.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise BatchDirectoryError(
                f"Cannot create the output directory {str(directory)!r}: {exc.strerror or exc}."
            ) from None
        self._lock = _lock(directory)
        self.seconds = 0.0
        self.writes = 0
        try:
            self._db = sqlite3.connect(directory / JOURNAL_NAME, isolation_level=None)
            self._db.text_factory = _text
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as exc:
            self._lock.close()
            raise BatchDirectoryError(
                f"{str(directory / JOURNAL_NAME)!r} is not a usable journal ({exc}); give this "
                "run another --out."
            ) from None

    def close(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self._db.close()
        self._lock.close()

    # ------------------------------------------------------------------ meta

    def meta(self, key: str) -> str | None:
        try:
            found = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        except sqlite3.Error as exc:
            raise BatchDirectoryError(
                f"{str(self.directory / JOURNAL_NAME)!r} cannot be read ({exc}); give this run "
                "another --out."
            ) from None
        return None if found is None else str(found[0])

    def claim(self, input_fingerprint: str, *, force: bool) -> None:
        """Tie this directory to one input, or check it already is.

        Raises:
            BatchDirectoryError: the journal belongs to another input (and not ``force``).
        """
        recorded = self.meta("input_sha256")
        if recorded is not None and recorded != input_fingerprint and not force:
            raise BatchDirectoryError(
                f"{str(self.directory)!r} holds the journal of another input (or another "
                "--shard): resuming it with this one could mix up their lines. Use another "
                "--out, or add --force to reuse it (lines are then matched by id)."
            )
        self._write(
            "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?), (?, ?), (?, ?)",
            ("input_sha256", input_fingerprint, "schema", SCHEMA_VERSION, "version", __version__),
        )

    # ------------------------------------------------------------------ rows

    def rows(self) -> dict[str, Row]:
        """Every row; one that cannot be read as written (edited by hand, damaged) comes back
        ``unknown`` with the reason, never as an exception.

        Raises:
            BatchDirectoryError: the journal itself cannot be read.
        """
        out: dict[str, Row] = {}
        query = (
            "SELECT id, line, num_images, state, status, request_id, image_urls, paths, error "
            "FROM lines"
        )
        try:
            found = self._db.execute(query).fetchall()
        except sqlite3.Error as exc:
            raise BatchDirectoryError(
                f"{str(self.directory / JOURNAL_NAME)!r} cannot be read ({exc}); give this run "
                "another --out."
            ) from None
        for values in found:
            rid = values[0]
            if isinstance(rid, str):  # another id matches no line of any input
                out[rid] = _row(values)
        return out

    def add(self, rows: list[Row]) -> None:
        """Insert new lines, all in one transaction."""
        if not rows:
            return
        now = time.time()
        self._write_many(
            "INSERT INTO lines (id, line, num_images, state, status, request_id, image_urls, "
            "paths, error, updated) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    r.id,
                    r.line,
                    r.num_images,
                    r.state,
                    r.status,
                    r.request_id,
                    json.dumps(r.image_urls),
                    json.dumps(r.paths),
                    r.error,
                    now,
                )
                for r in rows
            ],
        )

    def put(self, row: Row, *, durable: bool = False) -> None:
        """Record ``row``'s current state: one transaction (synced to disk if ``durable``)."""
        args = (
            row.line,
            row.num_images,
            row.state,
            row.status,
            row.request_id,
            json.dumps(row.image_urls),
            json.dumps(row.paths),
            row.error,
            time.time(),
            row.id,
        )
        sql = (
            "UPDATE lines SET line = ?, num_images = ?, state = ?, status = ?, request_id = ?, "
            "image_urls = ?, paths = ?, error = ?, updated = ? WHERE id = ?"
        )
        if not durable:
            self._write(sql, args)
            return
        self._db.execute("PRAGMA synchronous=FULL")
        try:
            self._write(sql, args)
        finally:
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("PRAGMA synchronous=NORMAL")

    # ------------------------------------------------------------------ plumbing

    def _write(self, sql: str, args: tuple[object, ...]) -> None:
        start = time.perf_counter()
        args = tuple(_storable(a) for a in args)
        try:
            self._db.execute(sql, args)
        except sqlite3.Error as exc:
            raise JournalError(f"Writing the journal in {self.directory} failed: {exc}.") from exc
        finally:
            self.seconds += time.perf_counter() - start
        self.writes += 1

    def _write_many(self, sql: str, rows: list[tuple[object, ...]]) -> None:
        start = time.perf_counter()
        try:
            with self._db:  # one transaction
                self._db.execute("BEGIN")
                self._db.executemany(sql, [tuple(_storable(a) for a in r) for r in rows])
        except sqlite3.Error as exc:
            raise JournalError(f"Writing the journal in {self.directory} failed: {exc}.") from exc
        finally:
            self.seconds += time.perf_counter() - start
        self.writes += 1
