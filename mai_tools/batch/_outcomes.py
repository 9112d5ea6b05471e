"""What a run reports: each line's outcome, the run's events, counts and summary, the manifest.

The manifest (``out_dir/manifest.jsonl``) is the readable face of the journal: one JSON line
per input line, in input order, rewritten atomically. :func:`line_outcome` is the one place
that turns a journal row into what the caller and the manifest are told about it.
"""

from __future__ import annotations

import contextlib
import enum
import json
import os
import threading
from collections.abc import Set
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

from ._journal import Row

MANIFEST_NAME: Final = "manifest.jsonl"
"""The run's manifest in its output directory: one JSON line per input line and its outcome."""


class LineStatus(enum.StrEnum):
    """Where a line stands (the manifest's ``status``).

    ``QUEUED`` with no ``request_id`` means not submitted yet (the run stopped, or the budget,
    the balance or the gateway stopped submitting); a rerun submits it.
    """

    QUEUED = "QUEUED"
    """Submitted and waiting for a worker, or (with no ``request_id``) not submitted yet."""
    PROCESSING = "PROCESSING"
    """Submitted, being drawn."""
    COMPLETED = "COMPLETED"
    """Done; its images are saved (``paths``) unless ``error`` says why not."""
    FAILED = "FAILED"
    """The job ended FAILED (the model refused or failed it)."""
    ERROR = "ERROR"
    """The job ended ERROR (a system error)."""
    INVALID = "INVALID"
    """The input line could not be read as a request; nothing was sent."""
    UNKNOWN = "UNKNOWN"
    """A submit that may have created a job whose request id was never recorded; a rerun
    leaves it alone unless ``resubmit_unknown=True``."""


@dataclass(frozen=True)
class LineOutcome:
    """How one input line ended in this run (one per line, also for lines settled earlier).

    Attributes:
        id: the line's id.
        status: see :class:`LineStatus`.
        request_id: the gateway's job id, once known.
        image_urls: the images' URLs (COMPLETED).
        paths: the saved files (COMPLETED and saved).
        error: why the line is not COMPLETED and saved, when it is not.
        line: its line number in the input, when known.
        resumed: it was already settled by an earlier run (nothing was done now).
    """

    id: str
    status: LineStatus
    request_id: str | None = None
    image_urls: tuple[str, ...] = ()
    paths: tuple[Path, ...] = ()
    error: str | None = None
    line: int | None = None
    resumed: bool = False

    @property
    def saved(self) -> bool:
        """COMPLETED with every image on disk."""
        return self.status is LineStatus.COMPLETED and bool(self.paths) and self.error is None

    def to_dict(self, relative_to: Path | None = None) -> dict[str, Any]:
        """The manifest line (paths relative to ``relative_to`` when given)."""
        paths = [
            os.path.relpath(p, relative_to) if relative_to is not None else os.fspath(p)
            for p in self.paths
        ]
        return {
            "id": self.id,
            "line": self.line,
            "status": self.status.value,
            "request_id": self.request_id,
            "image_urls": list(self.image_urls),
            "paths": paths,
            "error": self.error,
        }


EventKind = Literal["submitted", "paused", "retrying", "stopped_submitting", "stopping", "warning"]


@dataclass(frozen=True)
class BatchEvent:
    """Something the run did besides settling a line (for progress displays and logs)."""

    kind: EventKind
    message: str
    id: str | None = None


@dataclass(frozen=True)
class BatchCounts:
    """Live counters of a run (lines, except the image figures)."""

    total: int
    pending: int
    submitting: int
    running: int
    downloading: int
    completed: int
    failed: int
    unknown: int
    invalid: int
    submitted_now: int
    settled_now: int
    images_saved_now: int
    elapsed: float

    @property
    def settled(self) -> int:
        return self.completed + self.failed + self.unknown + self.invalid


@dataclass(frozen=True)
class BatchSummary:
    """What a finished (or stopped) run did and what is left.

    Attributes:
        counts: lines per manifest status.
        saved: COMPLETED lines with their images on disk.
        unsaved: COMPLETED lines whose images are not saved (a rerun downloads them).
        not_submitted: lines never sent (a rerun sends them).
        running: lines submitted and still QUEUED/PROCESSING (a rerun waits for them).
        images_saved: images on disk for this input (all runs).
        submitted_now, images_saved_now: what this run did.
        stop_reason: why the run stopped early (interrupted, 401/403, disk, ...), if it did.
        hold_reason: why submitting stopped (budget, 402, unreachable gateway), if it did.
        fatal: the stop was a key, permission, configuration or disk problem.
        balance: submitting stopped on 402 (no balance).
        budget_reached: ``max_images`` or ``max_spend`` held lines back.
        spend: with a price per image, what the images requested cost (earlier runs included).
        journal_seconds: time spent writing the journal.
    """

    total: int
    counts: dict[str, int]
    saved: int
    unsaved: int
    not_submitted: int
    running: int
    images_saved: int
    submitted_now: int
    images_saved_now: int
    elapsed: float
    manifest: Path
    stop_reason: str | None = None
    hold_reason: str | None = None
    fatal: bool = False
    balance: bool = False
    budget_reached: bool = False
    spend: str | None = None
    gateway_trouble: bool = False
    disk_trouble: bool = False
    manifest_error: str | None = None
    journal_seconds: float = 0.0
    journal_writes: int = 0

    @property
    def clean(self) -> bool:
        """Every line COMPLETED with its images saved, nothing left to do."""
        return self.saved == self.total and self.manifest_error is None

    def to_dict(self) -> dict[str, Any]:
        data = dict(vars(self))
        data["manifest"] = os.fspath(self.manifest)
        data["clean"] = self.clean
        return data


def manifest_status(row: Row) -> LineStatus:
    """The manifest's status of a journal row."""
    if row.state in ("pending", "submitting"):
        return LineStatus.QUEUED
    if row.state == "submitted":
        return LineStatus.PROCESSING if row.status == "PROCESSING" else LineStatus.QUEUED
    if row.state in ("completed", "saved"):
        return LineStatus.COMPLETED
    if row.state == "failed":
        return LineStatus.FAILED if row.status == "FAILED" else LineStatus.ERROR
    if row.state == "invalid":
        return LineStatus.INVALID
    return LineStatus.UNKNOWN


def write_manifest(path: Path, lines: list[dict[str, Any]]) -> None:
    """Rewrite the manifest atomically: a temporary file, synced, renamed over the old one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        # A lone surrogate (a hostile gateway's "\\ud800") is written as its JSON escape.
        with tmp.open("w", encoding="utf-8", errors="backslashreplace") as fh:
            for data in lines:
                fh.write(json.dumps(data, ensure_ascii=False))
                fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


class ManifestWriter:
    """Writes one run's manifest from any thread: one write at a time, never an older snapshot
    over a newer one.

    The periodic rewrite runs in a worker thread, which cancelling its task does not stop; the
    final rewrite must neither run at the same time (both would write the same temporary file:
    one rename then fails, and the manifest may mix the two) nor be overwritten by the older
    snapshot afterwards. Take a :meth:`ticket` when the lines are collected, then
    :meth:`write` them with it.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._tickets = 0
        self._written = 0

    def ticket(self) -> int:
        with self._lock:
            self._tickets += 1
            return self._tickets

    def write(self, lines: list[dict[str, Any]], ticket: int) -> bool:
        """Write ``lines`` (collected under ``ticket``); False if a newer snapshot is on disk.

        Raises:
            OSError: writing failed (the old manifest, if any, is left whole).
        """
        with self._lock:
            if ticket <= self._written:
                return False
            write_manifest(self.path, lines)
            self._written = ticket
            return True


def line_outcome(
    row: Row, out_dir: Path, *, resumed: Set[str], not_sent_because: str | None
) -> LineOutcome:
    """What ``row`` tells the caller now (``not_sent_because``: why pending lines were not sent)."""
    status = manifest_status(row)
    error = row.error
    if row.state == "submitting":
        # Sent, but its answer could not be journaled: the next run reports it UNKNOWN.
        status = LineStatus.UNKNOWN
        error = (
            "its POST was sent but the journal could not record the answer; it may be "
            "charged: the next run reports it UNKNOWN (--resubmit-unknown sends it again)"
        )
        if row.request_id is not None:
            error = (
                f"its job {row.request_id} was created but the journal could not record it; "
                "keep this request id: the next run reports the line UNKNOWN "
                "(--resubmit-unknown sends it again)"
            )
    elif row.state == "pending" and error is None:
        error = f"not submitted: {not_sent_because or 'run stopped'}"
    elif row.state == "submitted" and error is None:
        error = "still running when the run stopped; rerun to keep waiting"
    return LineOutcome(
        id=row.id,
        status=status,
        request_id=row.request_id,
        image_urls=tuple(row.image_urls),
        paths=tuple(out_dir / p for p in row.paths) if row.state == "saved" else (),
        error=error,
        line=row.line,
        resumed=row.id in resumed,
    )
