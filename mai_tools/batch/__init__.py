"""Bulk runs: thousands of prompts through one client, with a crash-safe journal.

:func:`run_batch` (or :class:`BatchRun`) submits each line, waits for it, saves its images
and records every step in ``out_dir/journal.sqlite3``; running it again with the same input
resumes without paying for any line twice. ``mai-image batch`` is the same engine on the
command line. See the README's "Bulk runs" section.

Every job a run submits is also in the installation's job book (:mod:`mai_tools.jobbook`,
surface ``batch``), written *through the client*: the run calls ``client.submit(...,
job_scope=JobScope(surface="batch"))``, so the book gets its intent before the POST, the
request id, the outcome (``client.wait``) and, from the run's downloads, the saved paths. The
journal stays the run's own state, one SQLite file per output directory: it is what a rerun
resumes from (line ids, the image budget, the input's hash, what is saved), it is locked by one
run at a time, and it is local whatever the book is. Two stores on purpose: a journal written
through the book would make every resume depend on a (maybe shared, maybe remote) database
being up, and would pour per-directory bookkeeping into everyone's history; the book costs one
short statement per step on the event loop (SQLite; a network book runs in a worker thread).
"""

from __future__ import annotations

from ._engine import (
    DEFAULT_CONCURRENCY,
    DEFAULT_DOWNLOADS_PER_HOST,
    DEFAULT_STATUS_READS_PER_SECOND,
    BatchRun,
    run_batch,
)
from ._input import BatchItem, InvalidLine, parse_lines, parse_shard, read_input
from ._journal import JOURNAL_NAME, BatchDirectoryError, JournalError
from ._outcomes import MANIFEST_NAME, BatchCounts, BatchEvent, BatchSummary, LineOutcome, LineStatus
from ._save import IMAGES_DIR

__all__ = [
    "DEFAULT_CONCURRENCY",
    "DEFAULT_DOWNLOADS_PER_HOST",
    "DEFAULT_STATUS_READS_PER_SECOND",
    "IMAGES_DIR",
    "JOURNAL_NAME",
    "MANIFEST_NAME",
    "BatchCounts",
    "BatchDirectoryError",
    "BatchEvent",
    "BatchItem",
    "BatchRun",
    "BatchSummary",
    "InvalidLine",
    "JournalError",
    "LineOutcome",
    "LineStatus",
    "parse_lines",
    "parse_shard",
    "read_input",
    "run_batch",
]
