"""Planning a run: each input line against what the journal knows of it from earlier runs.

A line never seen gets a new row (pending, or invalid with the reason: nothing is sent). A row
from an earlier run is brought up to date (:func:`_reconcile`): a line never sent is checked
again, a line the last run died submitting becomes UNKNOWN (charged, maybe), a saved line whose
files are gone is downloaded again. Then every row goes where the run picks it up
(:func:`plan`): to send, to wait for, to download, or already settled.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from .._constants import DEFAULT_MAX_INPUT_BYTES
from ._input import BatchItem, InputLine, InvalidLine, check_item
from ._journal import Journal, Row, with_unfetchable
from ._outcomes import LineOutcome, LineStatus

_SENT = frozenset({"submitting", "submitted", "completed", "saved", "failed", "unknown"})


@dataclass
class Plan:
    """Where every line of the input stands before the run begins.

    Attributes:
        rows: the journal row of each id.
        items: the sendable line of each id (the rows of unreadable lines have none).
        order: the input order: ids, or the outcomes of duplicate ids (never journaled).
        submits, waits, unsaved: rows to send, to wait for, to download.
        settled: rows with nothing left to do (reported at once).
        resumed: ids settled by an earlier run.
        images_requested: images already asked for by earlier runs of this input.
    """

    rows: dict[str, Row] = field(default_factory=dict)
    items: dict[str, BatchItem] = field(default_factory=dict)
    order: list[str | LineOutcome] = field(default_factory=list)
    submits: deque[Row] = field(default_factory=deque)
    waits: deque[Row] = field(default_factory=deque)
    unsaved: list[Row] = field(default_factory=list)
    settled: list[Row] = field(default_factory=list)
    resumed: set[str] = field(default_factory=set)
    images_requested: int = 0


def plan(
    journal: Journal,
    lines: list[InputLine],
    *,
    out_dir: Path,
    base_dir: Path,
    resubmit_unknown: bool,
) -> Plan:
    """Journal the new lines, reconcile the known ones, and sort them all for the run."""
    found = Plan()
    existing = journal.rows()
    new: list[Row] = []
    for entry in lines:
        if entry.id in found.rows:  # a duplicate id: reported, never journaled or sent
            assert isinstance(entry, InvalidLine)
            found.order.append(
                LineOutcome(entry.id, LineStatus.INVALID, error=entry.reason, line=entry.line)
            )
            continue
        problem = (
            entry.reason
            if isinstance(entry, InvalidLine)
            else check_item(entry, base_dir, max_image_bytes=DEFAULT_MAX_INPUT_BYTES)
        )
        num = _images_of(entry, problem)
        if isinstance(entry, BatchItem):
            found.items[entry.id] = entry
        row = existing.get(entry.id)
        if row is None:
            row = Row(id=entry.id, line=entry.line, num_images=num)
            _set_fields(row, problem)
            new.append(row)
        else:
            _reconcile(journal, row, entry, problem, out_dir, resubmit_unknown)
        found.rows[row.id] = row
        found.order.append(row.id)
    journal.add(new)
    for row_id in found.order:
        if isinstance(row_id, str):
            _classify(found, found.rows[row_id])
    return found


def _images_of(entry: InputLine, problem: str | None) -> int:
    """The images a line asks for; none for a line that is never sent (whose number may be
    anything a JSON line can hold, 10**30 included, which SQLite cannot)."""
    return entry.num_images if isinstance(entry, BatchItem) and problem is None else 0


def _set_fields(row: Row, problem: str | None) -> None:
    if problem is None:
        row.state, row.status, row.error = "pending", "QUEUED", None
    else:
        row.state, row.status, row.error = "invalid", "INVALID", problem


def _reconcile(
    journal: Journal,
    row: Row,
    entry: InputLine,
    problem: str | None,
    out_dir: Path,
    resubmit_unknown: bool,
) -> None:
    """Bring a row from an earlier run up to date with this run's options and files."""
    if row.state in ("pending", "invalid"):
        # Never sent: checked again, so a fixed image file or line gets its chance.
        before = (row.state, row.error, row.line, row.num_images)
        _set_fields(row, problem)
        row.line = entry.line
        row.num_images = _images_of(entry, problem)
        if (row.state, row.error, row.line, row.num_images) != before:
            journal.put(row)
        return
    if row.state == "submitting":
        # The last run recorded the intent and died before recording the answer.
        row.state, row.status = "unknown", "UNKNOWN"
        row.error = (
            "the previous run stopped while submitting this line: the gateway may have "
            "received it (a job may exist and be charged); rerun with --resubmit-unknown "
            "to send it again"
        )
        journal.put(row)
    if row.state == "unknown" and resubmit_unknown and isinstance(entry, BatchItem):
        row.state, row.status, row.error, row.request_id = "pending", "QUEUED", None, None
        journal.put(row)
        return
    if row.state == "saved":
        missing = [p for p in row.paths if not (out_dir / p).is_file()]
        if missing or not row.paths:
            row.state, row.paths = "completed", []
            row.error = with_unfetchable(
                row.unfetchable(), f"{len(missing)} saved file(s) missing; downloading again"
            )
            journal.put(row)


def _classify(found: Plan, row: Row) -> None:
    if row.state in _SENT:
        found.images_requested += row.num_images
    if row.state == "pending":
        found.submits.append(row)
    elif row.state == "submitted":
        found.waits.append(row)
    elif row.state == "completed":
        found.unsaved.append(row)
    else:
        if row.state in ("saved", "failed", "unknown"):
            found.resumed.add(row.id)
        found.settled.append(row)
