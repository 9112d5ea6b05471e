"""The job book: durable memory of every job this installation submits.

A job is written *before* its submit is sent and gets its request id right after, so no
process that dies, restarts, times out or has a twin pays for the same job twice: a call with
the same ``idempotency_key`` (or, for the agent tools, the same undelivered call) continues
the job the book already holds. SQLite by default (one file per user, many processes),
Postgres across machines (``MAI_JOB_BOOK=postgresql://…``); ``MAI_JOB_BOOK=off`` turns it off.
"""

from ._audit import AuditLog
from ._book import BookObserver, JobBook
from ._limits import SpendingLimits
from ._open import (
    ENV,
    JobBookSpec,
    default_job_book_path,
    forget_open_books,
    open_job_book,
)
from ._record import (
    ADOPT_WINDOW,
    EVENTS,
    LOCAL_PRINCIPAL,
    RETENTION_DAYS,
    STATES,
    SURFACES,
    Claim,
    JobRecord,
    JobScope,
)
from ._sqlite import SQLiteJobBook

__all__ = [
    "ADOPT_WINDOW",
    "ENV",
    "EVENTS",
    "LOCAL_PRINCIPAL",
    "RETENTION_DAYS",
    "STATES",
    "SURFACES",
    "AuditLog",
    "BookObserver",
    "Claim",
    "JobBook",
    "JobBookSpec",
    "JobRecord",
    "JobScope",
    "SQLiteJobBook",
    "SpendingLimits",
    "default_job_book_path",
    "forget_open_books",
    "open_job_book",
]


def __getattr__(name: str) -> object:
    if name == "PostgresJobBook":  # imported on use: psycopg is an optional extra
        from ._postgres import PostgresJobBook

        return PostgresJobBook
    raise AttributeError(name)
