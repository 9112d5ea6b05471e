"""The batch engine: thousands of lines through one async client, journaled, resumable.

Per line: validate (nothing sent if invalid) → record the intent when the POST is admitted,
right before it leaves → POST → record the request id → ``client.wait`` (every request paced by
the run's gate) → record the result → download (retried, a few at a time per host) → record
the saved paths. The journal (:mod:`._journal`) makes a rerun of
the same input resume where the last run stopped, without paying for any line twice.

This module owns the run: its options, its lifecycle (the directory's lock, the plan, the
workers, the stop), the manifest's rewrites and the reports. The steps are elsewhere, over one
shared :class:`._state.RunState`: planning in :mod:`._plan`, sending and waiting in
:mod:`._submit` (through the client, behind the run's gate: :mod:`._gate`), saving in
:mod:`._save`; the outcome types in :mod:`._outcomes`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from decimal import Decimal
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self

import httpx

from .._async_client import AsyncMAIImageClient
from .._config import require_positive, require_whole
from .._exceptions import InvalidArgumentError
from .._policies import RetryPolicy
from ..jobbook._limits import DEFAULT_CURRENCY
from ._budget import Budget
from ._gate import RunGate
from ._input import (
    BatchItem,
    InputLine,
    check_shard,
    fingerprint,
    mark_duplicates,
    normalize,
    select_shard,
)
from ._journal import Journal, Row
from ._outcomes import (
    MANIFEST_NAME,
    BatchCounts,
    BatchEvent,
    BatchSummary,
    LineOutcome,
    ManifestWriter,
)
from ._pacing import Pacer
from ._plan import plan
from ._save import Downloads
from ._state import RunState, Stopped
from ._submit import Submitter

logger = logging.getLogger("mai_tools.batch")

DEFAULT_CONCURRENCY: Final = 32
"""How many jobs a run keeps in flight at once without ``concurrency``."""
DEFAULT_STATUS_READS_PER_SECOND: Final = 100.0
"""Without ``rps``, the run's status reads are held to at most this many per second."""
DEFAULT_DOWNLOADS_PER_HOST: Final = 8
"""How many images a run downloads at once from one host without ``downloads_per_host``."""
STOP_GRACE: Final = 10.0
"""After a stop, requests already in flight get this long to finish and be recorded."""
MANIFEST_INTERVAL: Final = 2.0
"""The manifest is rewritten at most this often while a run goes (and once at its end)."""
_ENGINE_RETRY: Final = RetryPolicy(initial_backoff=0.5, max_backoff=8.0)


def _whole(value: object, name: str, *, minimum: int = 1) -> int:
    return require_whole(value, name, minimum=minimum, error=InvalidArgumentError)


def _positive(value: object, name: str) -> float:
    return require_positive(value, name, error=InvalidArgumentError)


class BatchRun:
    """One batch run over ``items`` into ``out_dir``; see :func:`run_batch`.

    Use as an async context manager (it holds the directory's lock and journal) and iterate it
    for each line's :class:`LineOutcome`; :meth:`summary` tells what is left afterwards::

        async with BatchRun(client, items, "out", concurrency=64) as run:
            async for outcome in run:
                print(outcome.id, outcome.status)
        print(run.summary())

    Raises:
        BatchDirectoryError: on entering: ``out_dir`` holds another input's journal (pass
            ``force=True`` to reuse it) or another run is using it.
        InvalidArgumentError: on entering: an option is out of range.
    """

    def __init__(
        self,
        client: AsyncMAIImageClient,
        items: Iterable[InputLine | Mapping[str, object] | str],
        out_dir: str | os.PathLike[str],
        *,
        concurrency: int = DEFAULT_CONCURRENCY,
        rps: float | None = None,
        max_images: int | None = None,
        price_per_image: Decimal | str | None = None,
        max_spend: Decimal | str | None = None,
        currency: str = DEFAULT_CURRENCY,
        shard: tuple[int, int] | str | None = None,
        resubmit_unknown: bool = False,
        force: bool = False,
        base_dir: str | os.PathLike[str] | None = None,
        job_timeout: float | None = None,
        status_reads_per_second: float | None = None,
        downloads_per_host: int = DEFAULT_DOWNLOADS_PER_HOST,
        download_client: httpx.AsyncClient | None = None,
        on_event: Callable[[BatchEvent], object] | None = None,
        retry_policy: RetryPolicy | None = None,
        sync_intents: bool = False,
    ) -> None:
        self._client = client
        self._concurrency = _whole(concurrency, "concurrency")
        rate = None if rps is None else _positive(rps, "rps")
        self._budget = Budget.of(max_images, price_per_image, max_spend, currency)
        parts = check_shard(shard)
        self._resubmit_unknown = resubmit_unknown
        self._force = force
        self._dir = Path(out_dir).expanduser().absolute()
        self._base_dir = Path(base_dir) if base_dir is not None else Path.cwd()
        wait_limit = (
            client.wait_timeout if job_timeout is None else _positive(job_timeout, "job_timeout")
        )
        reads = status_reads_per_second
        if reads is None:
            reads = 0.8 * rate if rate is not None else DEFAULT_STATUS_READS_PER_SECOND
        reads_per_second = _positive(reads, "status_reads_per_second")
        per_host = _whole(downloads_per_host, "downloads_per_host")

        every = mark_duplicates(normalize(items))
        self._fingerprint = fingerprint(every, parts)
        self._lines = select_shard(every, parts)

        self._state = state = RunState(
            self._dir, pacer=Pacer(rate), retry=retry_policy or _ENGINE_RETRY, on_event=on_event
        )
        self._submitter = Submitter(
            state,
            client,
            RunGate(state, reads_per_second=reads_per_second),
            base_dir=self._base_dir,
            sync_intents=sync_intents,
            job_timeout=wait_limit,
        )
        self._downloads = Downloads(
            state,
            per_host=per_host,
            http_client=download_client,
            max_bytes=client.max_download_bytes,
            book=client.job_book,
        )
        self._rows: dict[str, Row] = {}
        self._items: dict[str, BatchItem] = {}
        self._order: list[str | LineOutcome] = []  # ids, or outcomes of unjournaled duplicates
        self._waits: deque[Row] = deque()
        self._unsaved: list[Row] = []
        self._initial: list[LineOutcome] = []
        self._manifest = ManifestWriter(self._dir / MANIFEST_NAME)
        self._manifest_error: str | None = None
        self._started = time.monotonic()
        self._finished: float | None = None
        self._running = False

    # ------------------------------------------------------------------ lifecycle

    @property
    def _on_event(self) -> Callable[[BatchEvent], object] | None:
        # The callback may be swapped after construction (a test stops the run from it).
        return self._state.on_event

    @_on_event.setter
    def _on_event(self, callback: Callable[[BatchEvent], object] | None) -> None:
        self._state.on_event = callback

    @property
    def out_dir(self) -> Path:
        return self._dir

    @property
    def manifest_path(self) -> Path:
        return self._dir / MANIFEST_NAME

    async def __aenter__(self) -> Self:
        self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def open(self) -> None:
        """Lock ``out_dir``, check its journal belongs to this input, and plan the run."""
        state = self._state
        if state.journal is not None:
            return
        journal = Journal(self._dir)
        try:
            journal.claim(self._fingerprint, force=self._force)
            state.journal = journal
            self._downloads.remove_leftovers()
            self._plan(journal)
        except BaseException:
            state.journal = None
            journal.close()
            raise

    def close(self) -> None:
        """Write the manifest one last time and release the directory."""
        journal = self._state.journal
        if journal is None:
            return
        if self._running:
            self.stop("closed", now=True)
        self._write_manifest_now()
        journal.close()
        self._state.journal = None

    def stop(self, reason: str = "stopped", *, now: bool = False) -> None:
        """Stop: submit nothing more, stop waiting; requests in flight finish and are recorded
        (for up to 10 s, or not at all with ``now``). Lines keep their recorded state, so a
        rerun resumes them."""
        self._state.stop(reason, now=now)

    def __aiter__(self) -> AsyncIterator[LineOutcome]:
        return self._run()

    def _plan(self, journal: Journal) -> None:
        found = plan(
            journal,
            self._lines,
            out_dir=self._dir,
            base_dir=self._base_dir,
            resubmit_unknown=self._resubmit_unknown,
        )
        state = self._state
        self._rows, self._items, self._order = found.rows, found.items, found.order
        self._waits, self._unsaved = found.waits, found.unsaved
        state.submits, state.resumed = found.submits, found.resumed
        state.images_requested = found.images_requested
        for row in found.settled:
            self._initial.append(state.outcome(row))
            state.emitted.add(row.id)

    # ------------------------------------------------------------------ running

    async def _run(self) -> AsyncIterator[LineOutcome]:
        if self._running or self._finished is not None:
            raise RuntimeError("a BatchRun runs once; make a new one to run again")
        opened_here = self._state.journal is None
        if opened_here:
            self.open()
        self._running = True
        self._started = time.monotonic()
        supervisor = asyncio.create_task(self._supervise())
        try:
            for outcome in self._initial:
                yield outcome
            while True:
                got = await self._state.outcomes.get()
                if got is None:
                    break
                yield got
            await supervisor
        finally:
            if not supervisor.done():
                self.stop("the caller stopped reading outcomes", now=True)
                supervisor.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await supervisor
            self._running = False
            if opened_here:
                self.close()

    async def run(self) -> BatchSummary:
        """Run to the end, discarding the outcomes; returns :meth:`summary`."""
        async for _ in self:
            pass
        return self.summary()

    async def _supervise(self) -> None:
        state = self._state
        try:
            async with self._downloads.connected():
                manifest = asyncio.create_task(self._manifest_loop())
                try:
                    await self._work()
                finally:
                    manifest.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await manifest
        finally:
            self._finished = time.monotonic()
            try:
                for row_id in self._order:
                    if isinstance(row_id, LineOutcome):
                        state.outcomes.put_nowait(row_id)
                    elif row_id not in state.emitted:
                        state.settle(self._rows[row_id])
                await asyncio.to_thread(self._write_manifest_now)
            finally:  # whatever happened: the reader must not wait for ever
                state.outcomes.put_nowait(None)

    async def _work(self) -> None:
        """Start the downloads and workers; wait until they end, or the stop and its grace."""
        state = self._state
        for row in self._unsaved:
            self._downloads.start(row)
        work = len(self._waits) + len(state.submits)
        for _ in range(min(self._concurrency, work)):
            state.spawn(self._worker())
        main = asyncio.create_task(self._drain())
        stopper = asyncio.create_task(state.stop_event.wait())
        try:
            await asyncio.wait({main, stopper}, return_when=asyncio.FIRST_COMPLETED)
            if not main.done():
                done, _ = await asyncio.wait({main}, timeout=STOP_GRACE)
                if not done:
                    self.stop("stopping", now=True)
            await main
        finally:
            stopper.cancel()
            if not main.done():
                main.cancel()
            for task in [*state.tasks]:
                task.cancel()
            await asyncio.gather(main, *state.tasks, return_exceptions=True)

    async def _drain(self) -> None:
        """Until every worker and download has ended; re-raises a task's bug."""
        state = self._state
        while state.tasks:
            await asyncio.wait([*state.tasks])
        if state.crashes:
            raise state.crashes[0]

    # ------------------------------------------------------------------ one line

    def _next_row(self) -> Row | None:
        state = self._state
        if state.stop_event.is_set():
            return None
        if self._waits:
            return self._waits.popleft()
        if state.hold_reason is not None or not state.submits:
            return None
        row = state.submits[0]
        held = self._budget.hold(state.images_requested, row.num_images)
        if held is not None:
            state.budget_reached = True
            state.hold(held)
            return None
        state.submits.popleft()
        # Counted when taken, not when sent: two workers must not both fit in the last slot.
        state.images_requested += row.num_images
        return row

    async def _worker(self) -> None:
        while (row := self._next_row()) is not None:
            try:
                if row.state == "pending":
                    await self._submitter.submit(row, self._items[row.id])
                if row.state == "submitted":
                    await self._submitter.wait_for(row)
                if row.state == "completed":
                    self._downloads.start(row)
                elif row.state not in ("pending", "submitted", "submitting"):
                    self._state.settle(row)
            except Stopped:
                return
            except Exception as exc:  # nothing foresaw it: this line's error, the run goes on
                try:
                    self._line_failed(row, exc)
                except Stopped:
                    return

    def _line_failed(self, row: Row, exc: Exception) -> None:
        state = self._state
        logger.error("batch: line %s failed unexpectedly", row.id, exc_info=exc)
        what = f"{type(exc).__name__}: {exc}"
        if row.state == "submitting":  # admitted: its POST may have left
            state.gateway_trouble = True
            state.record(
                row,
                state="unknown",
                status="UNKNOWN",
                error=f"unexpected error while submitting ({what}). The gateway may have "
                "received this line: a job may exist (and be charged). It is not sent again "
                "unless you rerun with --resubmit-unknown.",
            )
        elif row.state == "pending":  # the gate never admitted its POST: nothing was sent
            state.images_requested -= row.num_images
            state.record(row, error=f"not submitted: unexpected error ({what}); rerun to retry")
        else:
            state.record(row, error=f"unexpected error ({what}); rerun to continue this line")
        state.settle(row)

    # ------------------------------------------------------------------ manifest

    def _manifest_lines(self) -> list[dict[str, Any]]:
        out = []
        for entry in self._order:
            if isinstance(entry, LineOutcome):
                out.append(entry.to_dict(self._dir))
            else:
                out.append(self._state.outcome(self._rows[entry]).to_dict(self._dir))
        return out

    def _write_manifest_now(self) -> None:
        try:
            ticket = self._manifest.ticket()
            self._manifest.write(self._manifest_lines(), ticket)
            self._manifest_error = None
        except OSError as exc:
            self._manifest_error = f"cannot write {str(self.manifest_path)!r}: {exc}"
        self._state.dirty = False

    async def _manifest_loop(self) -> None:
        # Rewriting 10,000 lines costs ~30 ms: every few seconds, not on every change.
        interval = max(MANIFEST_INTERVAL, len(self._order) / 2000)
        state = self._state
        while True:
            await asyncio.sleep(interval)
            if not state.dirty:
                continue
            state.dirty = False
            ticket = self._manifest.ticket()
            lines = self._manifest_lines()
            try:
                await asyncio.to_thread(self._manifest.write, lines, ticket)
            except OSError as exc:
                state.emit("warning", f"cannot write the manifest: {exc}")

    # ------------------------------------------------------------------ reports

    def counts(self) -> BatchCounts:
        """Live counters (cheap enough to call a few times a second)."""
        tally = dict.fromkeys(
            ("pending", "submitting", "submitted", "completed", "saved", "failed", "invalid"), 0
        )
        unknown = 0
        for row in self._rows.values():
            if row.state in tally:
                tally[row.state] += 1
            else:
                unknown += 1
        duplicates = sum(1 for e in self._order if isinstance(e, LineOutcome))
        end = self._finished or time.monotonic()
        state = self._state
        return BatchCounts(
            total=len(self._order),
            pending=tally["pending"],
            submitting=tally["submitting"],
            running=tally["submitted"],
            downloading=tally["completed"],
            completed=tally["saved"],
            failed=tally["failed"],
            unknown=unknown,
            invalid=tally["invalid"] + duplicates,
            submitted_now=state.submitted_now,
            settled_now=state.settled_now,
            images_saved_now=state.images_saved_now,
            elapsed=end - self._started,
        )

    def summary(self) -> BatchSummary:
        """Where every line stands, and why the run stopped early if it did."""
        lines = self._manifest_lines()
        counts: dict[str, int] = {}
        for data in lines:
            counts[data["status"]] = counts.get(data["status"], 0) + 1
        states = [self._rows[e].state for e in self._order if isinstance(e, str)]
        # A line with an image the gateway gave no URL for is not saved (nor "unsaved": a
        # rerun cannot fetch it); its error says which image.
        saved = sum(
            1
            for data in lines
            if data["status"] == "COMPLETED" and data["paths"] and data["error"] is None
        )
        end = self._finished or time.monotonic()
        state = self._state
        journal = state.journal
        return BatchSummary(
            total=len(lines),
            counts=counts,
            saved=saved,
            unsaved=states.count("completed"),
            not_submitted=states.count("pending"),
            running=states.count("submitted"),
            images_saved=sum(len(data["paths"]) for data in lines),
            submitted_now=state.submitted_now,
            images_saved_now=state.images_saved_now,
            elapsed=end - self._started,
            manifest=self.manifest_path,
            stop_reason=state.stop_reason,
            hold_reason=state.hold_reason,
            fatal=state.fatal,
            balance=state.balance,
            budget_reached=state.budget_reached,
            spend=self._budget.spent(state.images_requested),
            gateway_trouble=state.gateway_trouble,
            disk_trouble=state.disk_trouble,
            manifest_error=self._manifest_error,
            journal_seconds=journal.seconds if journal is not None else 0.0,
            journal_writes=journal.writes if journal is not None else 0,
        )


async def run_batch(
    client: AsyncMAIImageClient,
    items: Iterable[InputLine | Mapping[str, object] | str],
    out_dir: str | os.PathLike[str],
    **options: Any,
) -> AsyncIterator[LineOutcome]:
    """Run a batch and yield each line's :class:`LineOutcome` as it settles.

    ``items`` are :class:`BatchItem` objects, dicts with the JSONL keys (``id``, ``prompt``,
    ``image``, ``num_images``, ``aspect_ratio``, ``output_format``) or prompt strings.
    ``options`` are those of :class:`BatchRun` (``concurrency``, ``rps``, ``max_images``,
    ``price_per_image`` with ``max_spend`` (Decimal amounts in ``currency``, USD by default),
    ``shard``, ``resubmit_unknown``, ``force``, ``base_dir``, ``job_timeout``, ...). Running
    it again with the same items and ``out_dir`` resumes. Use it inside
    ``contextlib.aclosing(...)`` to stop early cleanly::

        async with AsyncMAIImageClient() as client:
            async for outcome in run_batch(client, ["a red fox", "a blue bird"], "out"):
                print(outcome.id, outcome.status, outcome.paths)
    """
    async with BatchRun(client, items, out_dir, **options) as run:
        async for outcome in run:
            yield outcome
