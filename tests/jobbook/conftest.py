"""Fixtures for the job book's contract, run on both backends.

``job_book`` is a fresh, empty book (a new SQLite file, or a new database on the session's
Postgres server) whose clock is ``book_clock`` (a :class:`FakeClock`: tests move time with
``book_clock.advance(seconds)``, never by sleeping). ``book_location`` is where it lives (a
path or a URL), for a second book on the same store, and ``raw_sql`` runs one statement there
without the book (to plant what a book cannot write itself).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from mai_tools._policies import FakeClock
from mai_tools.jobbook import JobBook, SQLiteJobBook

START: float = 1_800_000_000.0
"""The fake clock's first reading (wall-clock seconds: the book stores epoch times)."""

BACKENDS = ["sqlite", "postgres"]

OpenBook = Callable[..., JobBook]
RawSQL = Callable[..., list[tuple[Any, ...]]]


@pytest.fixture
def book_clock() -> FakeClock:
    return FakeClock(start=START)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    kind: str = request.param
    return kind


@pytest.fixture
def book_location(backend: str, request: pytest.FixtureRequest, tmp_path: Any) -> str:
    """A path (SQLite) or a postgresql:// URL (a new database) for an empty book."""
    if backend == "postgres":
        url: str = request.getfixturevalue("postgres_url")
        return url
    return str(tmp_path / "jobs.sqlite3")


@pytest.fixture
def open_book(backend: str, book_location: str, book_clock: FakeClock) -> Iterator[OpenBook]:
    """``open_book(**kwargs)``: another book object on the same store (closed at the end)."""
    books: list[JobBook] = []

    def _open(**kwargs: Any) -> JobBook:
        kwargs.setdefault("clock", book_clock.monotonic)
        book: JobBook
        if backend == "postgres":
            from mai_tools.jobbook._postgres import PostgresJobBook

            book = PostgresJobBook(book_location, **kwargs)
        else:
            book = SQLiteJobBook(book_location, **kwargs)
        books.append(book)
        return book

    yield _open
    for book in books:
        book.close()


@pytest.fixture
def job_book(open_book: OpenBook) -> JobBook:
    """A fresh, empty book on the backend of the test's parameter, on the fake clock."""
    return open_book()


@pytest.fixture
def raw_sql(backend: str, book_location: str) -> RawSQL:
    """``raw_sql(statement, params)``: run one statement on the book's store, outside it."""

    def _run(sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        if backend == "postgres":
            import psycopg

            with psycopg.connect(book_location, autocommit=True) as conn:
                cursor = conn.execute(sql.replace("?", "%s"), params)
                return list(cursor.fetchall()) if cursor.description else []
        conn3 = sqlite3.connect(book_location, isolation_level=None)
        try:
            return conn3.execute(sql, params).fetchall()
        finally:
            conn3.close()

    return _run
