"""What the steps of one run share: the journal, the stop, the pacing, the budget, the counters.

The steps (:mod:`._submit`, :mod:`._save`), the run's gate (:mod:`._gate`) and the run
(:mod:`._engine`) work on
one :class:`RunState` instead of reaching into each other. Every change of a line goes through
:meth:`RunState.record` (journal first, memory second), every settled line through
:meth:`RunState.settle`, and a step that finds the run stopping raises :class:`Stopped`.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from .._exceptions import RateLimitError
from .._policies import RetryPolicy
from ._journal import Journal, JournalError, Row
from ._outcomes import BatchEvent, EventKind, LineOutcome, line_outcome
from ._pacing import Pacer

logger = logging.getLogger("mai_tools.batch")


class Stopped(Exception):
    """Internal: the run is stopping; leave the line as recorded."""


class RunState:
    """The mutable state of one run, and the few moves every step makes with it.

    Attributes:
        journal: the open journal (None once the run is closed: recording raises Stopped).
        submits: lines waiting to be sent, in order (a 429 puts one back at the front).
        submitted_at: when each line still to be waited for was sent in this run.
        images_requested: images asked for by this input (earlier runs included), counted
            when a line is taken for sending and given back when it certainly was not sent.
        tasks: every worker and download of the run (``stop(now=True)`` cancels them).
        crashes: what ended a task other than a stop (a bug: the run re-raises the first).
    """

    def __init__(
        self,
        out_dir: Path,
        *,
        pacer: Pacer,
        retry: RetryPolicy,
        on_event: Callable[[BatchEvent], object] | None,
    ) -> None:
        self.out_dir = out_dir
        self.pacer = pacer
        self.retry = retry
        self.on_event = on_event
        self.journal: Journal | None = None
        self.stop_event = asyncio.Event()
        self.outcomes: asyncio.Queue[LineOutcome | None] = asyncio.Queue()
        self.tasks: set[asyncio.Task[None]] = set()
        self.crashes: list[BaseException] = []
        self.submits: deque[Row] = deque()
        self.submitted_at: dict[str, float] = {}
        self.emitted: set[str] = set()
        self.resumed: set[str] = set()
        self.images_requested = 0
        self.submitted_now = 0
        self.settled_now = 0
        self.images_saved_now = 0
        self.stop_reason: str | None = None
        self.hold_reason: str | None = None
        self.fatal = False
        self.balance = False
        self.budget_reached = False
        self.gateway_trouble = False
        self.disk_trouble = False
        self.dirty = True

    # ------------------------------------------------------------------ reporting

    def emit(self, kind: EventKind, message: str, line_id: str | None = None) -> None:
        if kind in ("warning", "stopped_submitting", "stopping"):
            logger.warning("batch: %s", message)
        if self.on_event is not None:
            self.on_event(BatchEvent(kind, message, line_id))

    def outcome(self, row: Row) -> LineOutcome:
        return line_outcome(
            row,
            self.out_dir,
            resumed=self.resumed,
            not_sent_because=self.hold_reason or self.stop_reason,
        )

    def settle(self, row: Row) -> None:
        """Report ``row``'s outcome (once per line)."""
        if row.id in self.emitted:
            return
        self.emitted.add(row.id)
        self.settled_now += 1
        self.outcomes.put_nowait(self.outcome(row))
        self.dirty = True

    # ------------------------------------------------------------------ recording

    def record(self, row: Row, *, durable: bool = False, **changes: Any) -> None:
        """Apply ``changes`` to ``row`` in the journal (one transaction), then in memory."""
        journal = self.journal
        if journal is None:
            raise Stopped
        old = {name: getattr(row, name) for name in changes}
        for name, value in changes.items():
            setattr(row, name, value)
        try:
            journal.put(row, durable=durable)
        except JournalError as exc:
            for name, value in old.items():
                setattr(row, name, value)
            self.disk_trouble = True
            self.fatal = True
            self.stop(f"{exc} Free some space and rerun the same command to resume.")
            raise Stopped from exc
        self.dirty = True

    # ------------------------------------------------------------------ stopping

    def stop(self, reason: str = "stopped", *, now: bool = False) -> None:
        """Submit nothing more, stop waiting; with ``now``, cancel every task at once."""
        if self.stop_reason is None:
            self.stop_reason = reason
            self.emit("stopping", reason)
        self.stop_event.set()
        if now:
            for task in [*self.tasks]:
                task.cancel()

    def hold(self, reason: str) -> None:
        """Stop submitting (waiting and downloads go on)."""
        if self.hold_reason is None:
            self.hold_reason = reason
            self.emit("stopped_submitting", reason)

    def fail(self, reason: str) -> None:
        """A problem nothing in this run can fix (key, permission, base URL): stop."""
        self.fatal = True
        self.stop(reason)

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run ``coro`` as one of the run's tasks."""
        task = asyncio.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self._reap)

    def _reap(self, task: asyncio.Task[None]) -> None:
        # Every task's end is looked at here, however soon it ends: one that ended before the
        # run gathered its tasks must not take its exception with it.
        self.tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None and not isinstance(exc, Stopped):
            self.crashes.append(exc)

    # ------------------------------------------------------------------ pacing

    async def acquire(self) -> None:
        """Wait for this request's slot in the run's token bucket (and any 429 pause)."""
        if not await self.pacer.acquire(self.stop_event):
            raise Stopped

    def rate_limited(self, exc: RateLimitError, what: str) -> None:
        """A 429 the client gave up on: the whole run pauses for its Retry-After (1 s without
        one); nothing happens if the gate already paused the run for it."""
        seconds = exc.retry_after if exc.retry_after is not None else 1.0
        self.pause(seconds, f"{exc.status_code} to {what}")

    def pause(self, seconds: float, answer: str) -> None:
        """Hold every request of the run for ``seconds`` (``answer``: what the gateway said)."""
        if self.pacer.pause(seconds):
            self.emit("paused", f"the gateway answered {answer}: the run pauses {seconds:g}s")
