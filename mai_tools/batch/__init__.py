"""Bulk runs: thousands of prompts through one client, with a crash-safe journal.

:func:`run_batch` (or :class:`BatchRun`) submits each line, waits for it, saves its images
and records every step in ``out_dir/journal.sqlite3``; running it again with the same input
resumes without paying for any line twice. ``mai-image batch`` is the same engine on the
command line. See the README's "Bulk runs" section.
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
