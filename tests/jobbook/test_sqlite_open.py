"""Processes opening one SQLite book together: a "database is locked" answered at once while
another process switches the file to WAL (or recovers its index) is waited out, within the
busy timeout; any other error is not."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from mai_tools import JobBookError
from mai_tools.jobbook import SQLiteJobBook, _sqlite


def _flaky_connect(failures: list[str]) -> Any:
    real = sqlite3.connect

    def connect(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        if failures:
            raise sqlite3.OperationalError(failures.pop(0))
        conn: sqlite3.Connection = real(*args, **kwargs)
        return conn

    return connect


def test_a_book_locked_while_opening_is_waited_for(tmp_path: Path) -> None:
    failures = ["database is locked", "database is locked"]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sqlite3, "connect", _flaky_connect(failures))
        book = SQLiteJobBook(tmp_path / "jobs.sqlite3")
    assert failures == []  # both refusals were retried
    book.close()


def test_a_book_that_stays_locked_fails_after_the_busy_timeout(tmp_path: Path) -> None:
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(_sqlite, "BUSY_TIMEOUT_MS", 200)
        mp.setattr(sqlite3, "connect", _flaky_connect(["database is locked"] * 10_000))
        with pytest.raises(JobBookError, match="cannot be opened: database is locked"):
            SQLiteJobBook(tmp_path / "jobs.sqlite3")


def test_another_error_is_not_retried(tmp_path: Path) -> None:
    failures = ["unable to open database file", "unable to open database file"]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sqlite3, "connect", _flaky_connect(failures))
        with pytest.raises(JobBookError, match="unable to open database file"):
            SQLiteJobBook(tmp_path / "jobs.sqlite3")
    assert failures == ["unable to open database file"]  # one attempt only
