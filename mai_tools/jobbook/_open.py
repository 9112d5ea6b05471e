"""Which job book a client uses: ``job_book=``, else ``MAI_JOB_BOOK``, else the default file.

``MAI_JOB_BOOK`` (and ``job_book=``) take a file path, a ``postgresql://`` URL, or ``off``.
The default is ``jobs.sqlite3`` in the user's state directory (platformdirs): on Linux
``~/.local/state/mai-tools/``. One book object is shared by every client of a process that
names the same place.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Final

import platformdirs

from .._exceptions import JobBookError
from ._book import JobBook
from ._sqlite import SQLiteJobBook

ENV: Final = "MAI_JOB_BOOK"
"""The environment variable naming the job book: a path, a ``postgresql://`` URL or ``off``."""
PROMPTS_ENV: Final = "MAI_JOB_BOOK_PROMPTS"
OFF: Final = frozenset({"off", "none", "0", "false", "no", "disabled"})
_POSTGRES: Final = ("postgresql://", "postgres://")

JobBookSpec = str | os.PathLike[str] | JobBook | None
"""What ``job_book=`` accepts: None (``MAI_JOB_BOOK`` or the default file), ``"off"``, a
path, a ``postgresql://`` URL, or a :class:`JobBook`."""

_open_books: dict[str, JobBook] = {}
_lock = threading.Lock()


def default_job_book_path() -> Path:
    """Where the book lives when nothing says otherwise."""
    return Path(platformdirs.user_state_dir("mai-tools", appauthor=False)) / "jobs.sqlite3"


def _store_prompts() -> bool:
    value = os.environ.get(PROMPTS_ENV, "").strip().lower()
    if value in ("", "on", "1", "true", "yes"):
        return True
    if value in OFF:
        return False
    raise JobBookError(f"{PROMPTS_ENV} must be 'on' or 'off'; got {value!r}.")


def open_job_book(spec: JobBookSpec = None) -> JobBook | None:
    """The job book ``spec`` names (see :data:`JobBookSpec`), or None when it is off.

    Raises:
        JobBookError: the book cannot be opened (a bad path, an unreachable database, a file
            that is not a book, a missing ``mai-tools[postgres]``): never a silent fallback.
    """
    if isinstance(spec, JobBook):
        return spec
    source = "job_book="
    if spec is None:
        env = os.environ.get(ENV)
        if env is None or not env.strip():
            spec, source = default_job_book_path(), "the default job book"
        else:
            spec, source = env.strip(), ENV
    if not isinstance(spec, str | os.PathLike):
        raise JobBookError(
            f"job_book must be a file path, a postgresql:// URL, 'off' or a JobBook; got "
            f"{type(spec).__name__}."
        )
    text = os.fspath(spec)
    if text.strip().lower() in OFF:
        return None
    if not text.strip():
        raise JobBookError(f"{source} is empty: give a file path, a postgresql:// URL or 'off'.")
    store_prompts = _store_prompts()
    if text.startswith(_POSTGRES):
        key = f"{text}|{store_prompts}"
    else:
        key = f"{Path(text).expanduser().resolve()}|{store_prompts}"
    with _lock:
        book = _open_books.get(key)
        if book is None:
            book = _new_book(text, store_prompts)
            _open_books[key] = book
    book.maybe_prune()
    return book


def _new_book(text: str, store_prompts: bool) -> JobBook:
    if text.startswith(_POSTGRES):
        try:
            from ._postgres import PostgresJobBook
        except ImportError as exc:
            raise JobBookError(
                f"A postgresql:// job book needs psycopg: pip install 'mai-tools[postgres]' "
                f"({exc})."
            ) from None
        return PostgresJobBook(text, store_prompts=store_prompts)
    if "://" in text:
        scheme = text.split("://", 1)[0]
        raise JobBookError(
            f"Unsupported job book URL scheme {scheme!r}: use a file path, a postgresql:// URL "
            "or 'off'."
        )
    return SQLiteJobBook(text, store_prompts=store_prompts)


def forget_open_books() -> None:
    """Close and forget every book this process opened (tests; after changing the env)."""
    with _lock:
        books = list(_open_books.values())
        _open_books.clear()
    for book in books:
        book.close()
