"""The batch engine: thousands of lines through one async client, journaled, resumable.

Per line: validate (nothing sent if invalid) → record the intent → POST → record the request
id → poll (paced, shared by the whole run) → record the result → download (retried, a few at
a time per host) → record the saved paths. The journal (:mod:`._journal`) makes a rerun of
the same input resume where the last run stopped, without paying for any line twice.

Waiting is done here, with the client's public :meth:`get_status`, its poll policy and its
learned durations, rather than with ``client.wait``: every status read must pass the run's
token bucket and its run-wide 429 pause, and the schedule must thin out when thousands of
jobs are in flight. Push waiting (webhooks) would replace :meth:`BatchRun._wait_for` only.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import errno
import json
import logging
import math
import os
import random
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Literal, Self, cast
from urllib.parse import urlsplit

import httpx
import pydantic

from .._async_client import AsyncMAIImageClient
from .._exceptions import (
    APIConnectionError,
    APIResponseError,
    APIStatusError,
    AuthenticationError,
    BadRequestError,
    DownloadError,
    InsufficientBalanceError,
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    ServerError,
)
from .._models import EditAspectRatio, GenerateAspectRatio, ImageResult, Job, OutputFormat, Status
from .._policies import RetryPolicy
from ._download import RetryAfterHints, save_with_retries
from ._input import (
    BatchItem,
    InputLine,
    InvalidLine,
    check_item,
    fingerprint,
    image_source,
    mark_duplicates,
    normalize,
    select_shard,
)
from ._journal import Journal, JournalError, Row
from ._pacing import Pacer

logger = logging.getLogger("mai_tools.batch")

MANIFEST_NAME: Final = "manifest.jsonl"
IMAGES_DIR: Final = "images"
DEFAULT_CONCURRENCY: Final = 32
DEFAULT_STATUS_READS_PER_SECOND: Final = 100.0
"""Without ``rps``, status reads are spread to average at most this many per second."""
DEFAULT_DOWNLOADS_PER_HOST: Final = 8
MAX_IMAGE_BYTES: Final = 20 * 1024 * 1024
STOP_GRACE: Final = 10.0
"""After a stop, requests already in flight get this long to finish and be recorded."""
SUBMIT_CONNECT_ATTEMPTS: Final = 3
"""Tries of one line whose POST could not even connect (certainly not sent)."""
UNREACHABLE_AFTER: Final = 20
"""Consecutive submissions that could not connect before the run stops submitting."""
_DISK_FULL: Final = tuple(os.strerror(code) for code in (errno.ENOSPC, errno.EDQUOT))
_ENGINE_RETRY: Final = RetryPolicy(initial_backoff=0.5, max_backoff=8.0)


class LineStatus(enum.StrEnum):
    """Where a line stands (the manifest's ``status``).

    ``QUEUED`` with no ``request_id`` means not submitted yet (the run stopped, or the budget,
    the balance or the gateway stopped submitting); a rerun submits it.
    """

    QUEUED = "QUEUED"
    PROCESSING = "PROCESSING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    ERROR = "ERROR"
    INVALID = "INVALID"
    UNKNOWN = "UNKNOWN"


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
        budget_reached: ``max_images`` held lines back.
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


def _positive_int(value: object, name: str, *, minimum: int = 1) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise InvalidArgumentError(f"{name} must be a whole number, at least {minimum}.")
    return value


def _positive_float(value: object, name: str) -> float:
    if (
        not isinstance(value, int | float)
        or isinstance(value, bool)
        or not (value > 0 and math.isfinite(value))
    ):
        raise InvalidArgumentError(f"{name} must be a positive number.")
    return float(value)


def _manifest_status(row: Row) -> LineStatus:
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


def _write_manifest(path: Path, lines: list[dict[str, Any]]) -> None:
    """Rewrite the manifest atomically: a temporary file, synced, renamed over the old one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with tmp.open("w", encoding="utf-8") as fh:
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


class _Stop(Exception):
    """Internal: the run is stopping; leave the line as recorded."""


class BatchRun:
    """One batch run over ``items`` into ``out_dir``; see :func:`run_batch`.

    Use as an async context manager (it holds the directory's lock and journal) and iterate it
    for each line's :class:`LineOutcome`; :meth:`summary` tells what is left afterwards::

        async with BatchRun(client, items, "out", concurrency=64) as run:
            async for outcome in run:
                print(outcome.id, outcome.status)
        print(run.summary())

    Raises (on entering):
        BatchDirectoryError: ``out_dir`` holds another input's journal (pass ``force=True``
            to reuse it) or another run is using it.
        InvalidArgumentError: an option is out of range.
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
        shard: tuple[int, int] | None = None,
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
        self._sync_intents = sync_intents
        self._concurrency = _positive_int(concurrency, "concurrency")
        self._rps = None if rps is None else _positive_float(rps, "rps")
        self._max_images = (
            None if max_images is None else _positive_int(max_images, "max_images", minimum=0)
        )
        if shard is not None:
            k, n = shard
            if not (isinstance(k, int) and isinstance(n, int) and 1 <= k <= n):
                raise InvalidArgumentError("shard must be (K, N) with 1 <= K <= N.")
        self._resubmit_unknown = resubmit_unknown
        self._force = force
        self._dir = Path(out_dir).expanduser().absolute()
        self._images_dir = self._dir / IMAGES_DIR
        self._base_dir = Path(base_dir) if base_dir is not None else Path.cwd()
        self._job_timeout = (
            client.wait_timeout
            if job_timeout is None
            else _positive_float(job_timeout, "job_timeout")
        )
        reads = status_reads_per_second
        if reads is None:
            reads = 0.8 * self._rps if self._rps is not None else DEFAULT_STATUS_READS_PER_SECOND
        self._reads_per_second = _positive_float(reads, "status_reads_per_second")
        self._per_host = _positive_int(downloads_per_host, "downloads_per_host")
        self._user_download_client = download_client
        self._on_event = on_event
        self._retry = retry_policy or _ENGINE_RETRY
        self._rng = random.Random()

        every = mark_duplicates(normalize(items))
        self._fingerprint = fingerprint(every, shard)
        self._lines = select_shard(every, shard)

        self._journal: Journal | None = None
        self._rows: dict[str, Row] = {}
        self._items: dict[str, BatchItem] = {}
        self._order: list[str | LineOutcome] = []  # ids, or outcomes of unjournaled duplicates
        self._waits: deque[Row] = deque()
        self._submits: deque[Row] = deque()
        self._unsaved: list[Row] = []
        self._initial: list[LineOutcome] = []
        self._emitted: set[str] = set()
        self._resumed: set[str] = set()
        self._submitted_at: dict[str, float] = {}
        self._connect_failures: dict[str, int] = {}
        self._consecutive_unreachable = 0
        self._outcomes: asyncio.Queue[LineOutcome | None] = asyncio.Queue()
        self._stop_event = asyncio.Event()
        self._pacer = Pacer(self._rps)
        self._hints = RetryAfterHints()
        self._host_limits: dict[str, asyncio.Semaphore] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._http: httpx.AsyncClient | None = None
        self._downloads: set[asyncio.Task[None]] = set()
        self._polling = 0
        self._images_requested = 0
        self._submitted_now = 0
        self._settled_now = 0
        self._images_saved_now = 0
        self._stop_reason: str | None = None
        self._hold_reason: str | None = None
        self._fatal = False
        self._balance = False
        self._budget_reached = False
        self._gateway_trouble = False
        self._disk_trouble = False
        self._manifest_error: str | None = None
        self._dirty = True
        self._started = time.monotonic()
        self._finished: float | None = None
        self._running = False

    # ------------------------------------------------------------------ lifecycle

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
        if self._journal is not None:
            return
        journal = Journal(self._dir)
        try:
            journal.claim(self._fingerprint, force=self._force)
            self._journal = journal
            self._plan()
        except BaseException:
            self._journal = None
            journal.close()
            raise

    def close(self) -> None:
        """Write the manifest one last time and release the directory."""
        if self._journal is None:
            return
        if self._running:
            self.stop("closed", now=True)
        self._write_manifest_now()
        self._journal.close()
        self._journal = None

    def stop(self, reason: str = "stopped", *, now: bool = False) -> None:
        """Stop: submit nothing more, stop waiting; requests in flight finish and are recorded
        (for up to 10 s, or not at all with ``now``). Lines keep their recorded state, so a
        rerun resumes them."""
        if self._stop_reason is None:
            self._stop_reason = reason
            self._emit("stopping", reason)
        self._stop_event.set()
        if now:
            for task in [*self._tasks, *self._downloads]:
                task.cancel()

    def __aiter__(self) -> AsyncIterator[LineOutcome]:
        return self._run()

    # ------------------------------------------------------------------ planning

    def _plan(self) -> None:
        journal = self._journal
        assert journal is not None
        existing = journal.rows()
        new: list[Row] = []
        for entry in self._lines:
            if entry.id in self._rows:  # a duplicate id: reported, never journaled or sent
                assert isinstance(entry, InvalidLine)
                self._order.append(
                    LineOutcome(entry.id, LineStatus.INVALID, error=entry.reason, line=entry.line)
                )
                continue
            problem = (
                entry.reason
                if isinstance(entry, InvalidLine)
                else check_item(entry, self._base_dir, max_image_bytes=MAX_IMAGE_BYTES)
            )
            num = entry.num_images if isinstance(entry, BatchItem) else 0
            if isinstance(entry, BatchItem):
                self._items[entry.id] = entry
            row = existing.get(entry.id)
            if row is None:
                row = Row(id=entry.id, line=entry.line, num_images=num)
                self._set_fields(row, problem)
                new.append(row)
            else:
                self._reconcile(row, entry, problem)
            self._rows[row.id] = row
            self._order.append(row.id)
        journal.add(new)
        for row_id in self._order:
            if isinstance(row_id, str):
                self._classify(self._rows[row_id])

    @staticmethod
    def _set_fields(row: Row, problem: str | None) -> None:
        if problem is None:
            row.state, row.status, row.error = "pending", "QUEUED", None
        else:
            row.state, row.status, row.error = "invalid", "INVALID", problem

    def _reconcile(self, row: Row, entry: InputLine, problem: str | None) -> None:
        """Bring a row from an earlier run up to date with this run's options and files."""
        journal = self._journal
        assert journal is not None
        if row.state in ("pending", "invalid"):
            # Never sent: checked again, so a fixed image file or line gets its chance.
            before = (row.state, row.error, row.line, row.num_images)
            self._set_fields(row, problem)
            row.line = entry.line
            row.num_images = entry.num_images if isinstance(entry, BatchItem) else 0
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
        if row.state == "unknown" and self._resubmit_unknown and isinstance(entry, BatchItem):
            row.state, row.status, row.error, row.request_id = "pending", "QUEUED", None, None
            journal.put(row)
            return
        if row.state == "saved":
            missing = [p for p in row.paths if not (self._dir / p).is_file()]
            if missing or not row.paths:
                row.state, row.paths = "completed", []
                row.error = f"{len(missing)} saved file(s) missing; downloading again"
                journal.put(row)

    def _classify(self, row: Row) -> None:
        if row.state in ("submitting", "submitted", "completed", "saved", "failed", "unknown"):
            self._images_requested += row.num_images
        if row.state == "pending":
            self._submits.append(row)
        elif row.state == "submitted":
            self._waits.append(row)
        elif row.state == "completed":
            self._unsaved.append(row)
        else:
            if row.state in ("saved", "failed", "unknown"):
                self._resumed.add(row.id)
            self._initial.append(self._outcome(row))
            self._emitted.add(row.id)

    # ------------------------------------------------------------------ running

    async def _run(self) -> AsyncIterator[LineOutcome]:
        if self._running or self._finished is not None:
            raise RuntimeError("a BatchRun runs once; make a new one to run again")
        opened_here = self._journal is None
        if opened_here:
            self.open()
        self._running = True
        self._started = time.monotonic()
        supervisor = asyncio.create_task(self._supervise())
        try:
            for outcome in self._initial:
                yield outcome
            while True:
                got = await self._outcomes.get()
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
        owned = self._user_download_client is None
        http = self._user_download_client or httpx.AsyncClient(
            timeout=httpx.Timeout(60.0, connect=10.0),
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=64),
        )
        http.event_hooks.setdefault("response", []).append(self._hints)
        self._http = http
        manifest = asyncio.create_task(self._manifest_loop())
        try:
            for row in self._unsaved:
                self._start_download(row)
            work = len(self._waits) + len(self._submits)
            for _ in range(min(self._concurrency, work)):
                self._spawn(self._worker())
            main = asyncio.create_task(self._drain())
            stopper = asyncio.create_task(self._stop_event.wait())
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
                for task in [*self._tasks, *self._downloads]:
                    task.cancel()
                await asyncio.gather(main, *self._tasks, *self._downloads, return_exceptions=True)
        finally:
            manifest.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await manifest
            with contextlib.suppress(ValueError):
                http.event_hooks["response"].remove(self._hints)
            if owned:
                await http.aclose()
            self._finished = time.monotonic()
            for row_id in self._order:
                if isinstance(row_id, LineOutcome):
                    self._outcomes.put_nowait(row_id)
                elif row_id not in self._emitted:
                    self._settle(self._rows[row_id])
            await asyncio.to_thread(self._write_manifest_now)
            self._outcomes.put_nowait(None)

    async def _drain(self) -> None:
        """Until every worker and download has ended; re-raises a worker's bug."""
        while self._tasks or self._downloads:
            tasks = [*self._tasks, *self._downloads]
            results = await asyncio.gather(*tasks, return_exceptions=True)
            for result in results:
                if isinstance(result, Exception):
                    raise result

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _emit(self, kind: EventKind, message: str, line_id: str | None = None) -> None:
        if kind in ("warning", "stopped_submitting", "stopping"):
            logger.warning("batch: %s", message)
        if self._on_event is not None:
            self._on_event(BatchEvent(kind, message, line_id))

    def _record(self, row: Row, *, durable: bool = False, **changes: Any) -> None:
        """Apply ``changes`` to ``row`` in the journal (one transaction), then in memory."""
        journal = self._journal
        if journal is None:
            raise _Stop
        old = {name: getattr(row, name) for name in changes}
        for name, value in changes.items():
            setattr(row, name, value)
        try:
            journal.put(row, durable=durable)
        except JournalError as exc:
            for name, value in old.items():
                setattr(row, name, value)
            self._disk_trouble = True
            self._fatal = True
            self.stop(f"{exc} Free some space and rerun the same command to resume.")
            raise _Stop from exc
        self._dirty = True

    def _settle(self, row: Row) -> None:
        if row.id in self._emitted:
            return
        self._emitted.add(row.id)
        self._settled_now += 1
        self._outcomes.put_nowait(self._outcome(row))
        self._dirty = True

    def _outcome(self, row: Row) -> LineOutcome:
        status = _manifest_status(row)
        error = row.error
        if row.state == "submitting":
            # Sent, but its answer could not be journaled: the next run reports it UNKNOWN.
            status = LineStatus.UNKNOWN
            error = (
                "its POST was sent but the journal could not record the answer; it may be "
                "charged: the next run reports it UNKNOWN (--resubmit-unknown sends it again)"
            )
        elif row.state == "pending" and error is None:
            error = f"not submitted: {self._hold_reason or self._stop_reason or 'run stopped'}"
        elif row.state == "submitted" and error is None:
            error = "still running when the run stopped; rerun to keep waiting"
        return LineOutcome(
            id=row.id,
            status=status,
            request_id=row.request_id,
            image_urls=tuple(row.image_urls),
            paths=tuple(self._dir / p for p in row.paths) if row.state == "saved" else (),
            error=error,
            line=row.line,
            resumed=row.id in self._resumed,
        )

    def _hold(self, reason: str) -> None:
        """Stop submitting (waiting and downloads go on)."""
        if self._hold_reason is None:
            self._hold_reason = reason
            self._emit("stopped_submitting", reason)

    def _fail(self, reason: str) -> None:
        """A problem nothing in this run can fix (key, permission, base URL): stop."""
        self._fatal = True
        self.stop(reason)

    # ------------------------------------------------------------------ one line

    def _next_row(self) -> Row | None:
        if self._stop_event.is_set():
            return None
        if self._waits:
            return self._waits.popleft()
        if self._hold_reason is not None or not self._submits:
            return None
        row = self._submits[0]
        if self._max_images is not None and (
            self._images_requested + row.num_images > self._max_images
        ):
            self._budget_reached = True
            self._hold(
                f"--max-images {self._max_images} reached ({self._images_requested} images "
                "requested so far, this input's earlier runs included)"
            )
            return None
        self._submits.popleft()
        # Counted when taken, not when sent: two workers must not both fit in the last slot.
        self._images_requested += row.num_images
        return row

    async def _worker(self) -> None:
        while (row := self._next_row()) is not None:
            try:
                if row.state == "pending":
                    await self._submit(row)
                if row.state == "submitted":
                    await self._wait_for(row)
                if row.state == "completed":
                    self._start_download(row)
                elif row.state not in ("pending", "submitted", "submitting"):
                    self._settle(row)
            except _Stop:
                return

    async def _sleep(self, seconds: float) -> None:
        """Sleep, unless the run stops meanwhile (then raise _Stop)."""
        if self._stop_event.is_set():
            raise _Stop
        if seconds <= 0:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop_event.wait(), seconds)
        if self._stop_event.is_set():
            raise _Stop

    async def _acquire(self) -> None:
        if not await self._pacer.acquire(self._stop_event):
            raise _Stop

    def _rate_limited(self, exc: RateLimitError, what: str) -> None:
        seconds = exc.retry_after if exc.retry_after is not None else 1.0
        if self._pacer.pause(seconds):
            self._emit("paused", f"the gateway answered 429 to {what}: the run pauses {seconds:g}s")

    async def _submit(self, row: Row) -> None:
        item = self._items[row.id]
        try:
            await self._acquire()
            # The intent is on disk before the POST: a crash after this point leaves the line
            # "submitting", which the next run reports as UNKNOWN instead of sending it again.
            self._record(row, durable=self._sync_intents, state="submitting", error=None)
        except _Stop:
            self._images_requested -= row.num_images
            raise
        try:
            job = await self._post(item)
        except (pydantic.ValidationError, InvalidArgumentError) as exc:
            self._images_requested -= row.num_images
            self._record(row, state="invalid", status="INVALID", error=_reason(exc))
            return
        except RateLimitError as exc:
            self._images_requested -= row.num_images
            self._record(row, state="pending")
            self._submits.appendleft(row)
            self._rate_limited(exc, "a submission")
            return
        except InsufficientBalanceError as exc:
            self._images_requested -= row.num_images
            self._record(row, state="pending")
            self._balance = True
            self._hold(f"no balance (HTTP 402: {exc}); waiting for the jobs already submitted")
            return
        except (AuthenticationError, PermissionDeniedError) as exc:
            self._images_requested -= row.num_images
            self._record(row, state="pending")
            self._fail(f"{exc}; nothing is lost: fix the key and rerun the same command")
            return
        except NotFoundError as exc:
            self._images_requested -= row.num_images
            self._record(row, state="pending")
            self._fail(f"{exc} (the submit path does not exist: is the base URL right?)")
            return
        except BadRequestError as exc:
            self._images_requested -= row.num_images
            self._record(row, state="invalid", status="INVALID", error=f"gateway refused: {exc}")
            return
        except (ServerError, APIResponseError) as exc:
            self._gateway_trouble = True
            self._record(row, state="unknown", status="UNKNOWN", error=_unknown(exc))
            return
        except APIStatusError as exc:  # another 4xx: refused, so nothing was created
            self._images_requested -= row.num_images
            self._record(row, state="invalid", status="INVALID", error=f"gateway refused: {exc}")
            return
        except APIConnectionError as exc:
            if exc.may_have_arrived:
                self._gateway_trouble = True
                self._record(row, state="unknown", status="UNKNOWN", error=_unknown(exc))
                return
            self._images_requested -= row.num_images
            await self._not_sent(row, exc)
            return
        self._consecutive_unreachable = 0
        self._submitted_now += 1
        self._submitted_at[row.id] = time.monotonic()
        self._record(
            row, state="submitted", status=_job_status(job), request_id=job.request_id, error=None
        )
        self._emit("submitted", f"{row.id}: submitted as {job.request_id}", row.id)

    async def _post(self, item: BatchItem) -> Job:
        if item.image is None:
            return await self._client.submit_generate(
                item.prompt,
                num_images=item.num_images,
                aspect_ratio=cast(GenerateAspectRatio, item.aspect_ratio),
                output_format=cast(OutputFormat, item.output_format),
            )
        return await self._client.submit_edit(
            item.prompt,
            image_source(item.image, self._base_dir),
            num_images=item.num_images,
            aspect_ratio=cast(EditAspectRatio, item.aspect_ratio),
            output_format=cast(OutputFormat, item.output_format),
        )

    async def _not_sent(self, row: Row, exc: APIConnectionError) -> None:
        """The POST certainly never left (no connection): try the line again later."""
        self._gateway_trouble = True
        self._consecutive_unreachable += 1
        attempts = self._connect_failures.get(row.id, 0) + 1
        self._connect_failures[row.id] = attempts
        self._record(row, state="pending", error=f"not submitted: {exc}")
        if self._consecutive_unreachable >= UNREACHABLE_AFTER:
            self._hold(f"the gateway cannot be reached ({exc})")
            return
        if attempts < SUBMIT_CONNECT_ATTEMPTS:
            self._submits.append(row)
            delay = self._retry.backoff(attempts, None, self._rng)
            self._emit("retrying", f"{row.id}: not sent ({exc}); retrying in {delay:.1f}s", row.id)
            await self._sleep(delay)

    def _poll_floor(self) -> float:
        """The shortest gap between two reads of one job, so that all jobs in flight together
        stay within the status-read budget: thousands of jobs poll less often each."""
        return self._polling / self._reads_per_second

    async def _wait_for(self, row: Row) -> None:
        """Poll ``row``'s job until it ends, the job timeout passes, or the run stops."""
        item = self._items.get(row.id)
        operation = item.operation if item is not None else "generate"
        request_id = row.request_id
        assert request_id is not None
        policy = self._client.poll_policy
        started = self._submitted_at.pop(row.id, None)
        origin = started if started is not None else time.monotonic()
        deadline = origin + self._job_timeout
        gap: float | None = None
        polls = failures = 0
        self._polling += 1
        try:
            while True:
                now = time.monotonic()
                if failures:
                    delay = self._retry.backoff(failures, None, self._rng)
                elif polls == 0 and started is None:
                    delay = 0.0  # resumed: read at once
                else:
                    window = (
                        self._client.durations.window(operation, policy)
                        if started is not None
                        else None
                    )
                    delay = policy.next_delay(elapsed=now - origin, last_gap=gap, window=window)
                    delay = max(delay, self._poll_floor())
                    gap = delay if polls else max(delay, policy.first_delay)
                if now + delay >= deadline:
                    await self._sleep(max(deadline - now, 0.0))
                    final = True
                else:
                    await self._sleep(delay)
                    final = False
                await self._acquire()
                try:
                    status = await self._client.get_status(request_id)
                except RateLimitError as exc:
                    self._rate_limited(exc, "a status read")
                    continue
                except (AuthenticationError, PermissionDeniedError) as exc:
                    self._fail(f"{exc}; nothing is lost: fix the key and rerun the same command")
                    raise _Stop from exc
                except NotFoundError as exc:
                    self._record(
                        row,
                        state="failed",
                        status="ERROR",
                        error=f"the gateway does not know this job ({exc}); was it submitted "
                        "to another gateway?",
                    )
                    return
                except (APIConnectionError, APIResponseError, APIStatusError) as exc:
                    failures += 1
                    if final:
                        self._record(
                            row,
                            error=f"still running after {self._job_timeout:g}s (last status "
                            f"read failed: {exc}); rerun to keep waiting",
                        )
                        self._settle(row)
                        return
                    continue
                failures = 0
                polls += 1
                if status.status is Status.COMPLETED:
                    self._learn(operation, status, started)
                    if not status.image_urls:
                        self._record(
                            row,
                            state="failed",
                            status="ERROR",
                            error="the job COMPLETED without any image URL",
                        )
                        return
                    self._record(
                        row, state="completed", status="COMPLETED", image_urls=status.image_urls
                    )
                    return
                if status.status.is_failure:
                    self._record(
                        row,
                        state="failed",
                        status=status.status.value,
                        error=status.error or f"the job ended {status.status.value}",
                    )
                    return
                if status.status.value in ("QUEUED", "PROCESSING") and (
                    status.status.value != row.status
                ):
                    self._record(row, status=status.status.value)
                if final:
                    self._record(
                        row,
                        error=f"still {status.status.value} after {self._job_timeout:g}s; rerun "
                        "to keep waiting",
                    )
                    self._settle(row)
                    return
        finally:
            self._polling -= 1

    def _learn(self, operation: str, status: Any, started: float | None) -> None:
        """Feed the client's learned durations, so later jobs poll by them."""
        if started is None:
            return
        observed = time.monotonic() - started
        duration = observed
        if status.created_at is not None and status.completed_at is not None:
            server = (status.completed_at - status.created_at).total_seconds()
            if 0 <= server <= observed + 1.0:
                duration = server
        self._client.durations.record(operation, duration)

    # ------------------------------------------------------------------ downloads

    def _start_download(self, row: Row) -> None:
        task = asyncio.create_task(self._download(row))
        self._downloads.add(task)
        task.add_done_callback(self._downloads.discard)

    async def _download(self, row: Row) -> None:
        host = urlsplit(row.image_urls[0]).netloc if row.image_urls else ""
        limit = self._host_limits.setdefault(host, asyncio.Semaphore(self._per_host))
        assert row.request_id is not None
        result = ImageResult(request_id=row.request_id, image_urls=list(row.image_urls))

        def retrying(exc: DownloadError, delay: float) -> None:
            self._emit("retrying", f"{row.id}: download failed ({exc}); retrying in {delay:.1f}s")

        try:
            try:
                async with limit:
                    paths = await save_with_retries(
                        result,
                        self._images_dir,
                        http_client=self._http,
                        hints=self._hints,
                        policy=self._retry,
                        on_retry=retrying,
                    )
            except DownloadError as exc:
                text = str(exc)
                if any(marker in text for marker in _DISK_FULL):
                    self._disk_trouble = True
                    self._hold(f"the disk is full ({text}); free some space and rerun")
                self._record(row, error=f"images not saved: {text}; rerun to download them again")
            else:
                relative = [p.relative_to(self._dir).as_posix() for p in paths]
                self._record(row, state="saved", paths=relative, error=None)
                self._images_saved_now += len(paths)
        except _Stop:
            return
        self._settle(row)

    # ------------------------------------------------------------------ manifest

    def _manifest_lines(self) -> list[dict[str, Any]]:
        out = []
        for entry in self._order:
            if isinstance(entry, LineOutcome):
                out.append(entry.to_dict(self._dir))
            else:
                out.append(self._outcome(self._rows[entry]).to_dict(self._dir))
        return out

    def _write_manifest_now(self) -> None:
        try:
            _write_manifest(self.manifest_path, self._manifest_lines())
            self._manifest_error = None
        except OSError as exc:
            self._manifest_error = f"cannot write {str(self.manifest_path)!r}: {exc}"
        self._dirty = False

    async def _manifest_loop(self) -> None:
        # Rewriting 10,000 lines costs ~30 ms: every few seconds, not on every change.
        interval = max(2.0, len(self._order) / 2000)
        while True:
            await asyncio.sleep(interval)
            if not self._dirty:
                continue
            self._dirty = False
            lines = self._manifest_lines()
            try:
                await asyncio.to_thread(_write_manifest, self.manifest_path, lines)
            except OSError as exc:
                self._emit("warning", f"cannot write the manifest: {exc}")

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
            submitted_now=self._submitted_now,
            settled_now=self._settled_now,
            images_saved_now=self._images_saved_now,
            elapsed=end - self._started,
        )

    def summary(self) -> BatchSummary:
        """Where every line stands, and why the run stopped early if it did."""
        lines = self._manifest_lines()
        counts: dict[str, int] = {}
        for data in lines:
            counts[data["status"]] = counts.get(data["status"], 0) + 1
        states = [self._rows[e].state for e in self._order if isinstance(e, str)]
        saved = sum(1 for data in lines if data["status"] == "COMPLETED" and data["paths"])
        end = self._finished or time.monotonic()
        journal = self._journal
        return BatchSummary(
            total=len(lines),
            counts=counts,
            saved=saved,
            unsaved=states.count("completed"),
            not_submitted=states.count("pending"),
            running=states.count("submitted"),
            images_saved=sum(len(data["paths"]) for data in lines),
            submitted_now=self._submitted_now,
            images_saved_now=self._images_saved_now,
            elapsed=end - self._started,
            manifest=self.manifest_path,
            stop_reason=self._stop_reason,
            hold_reason=self._hold_reason,
            fatal=self._fatal,
            balance=self._balance,
            budget_reached=self._budget_reached,
            gateway_trouble=self._gateway_trouble,
            disk_trouble=self._disk_trouble,
            manifest_error=self._manifest_error,
            journal_seconds=journal.seconds if journal is not None else 0.0,
            journal_writes=journal.writes if journal is not None else 0,
        )


def _job_status(job: Job) -> str:
    return job.status.value if job.status.value in ("QUEUED", "PROCESSING") else "QUEUED"


def _reason(exc: pydantic.ValidationError | InvalidArgumentError) -> str:
    if isinstance(exc, pydantic.ValidationError):
        return "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'input'}: {e['msg']}" for e in exc.errors()
        )
    return str(exc)


def _unknown(exc: Exception) -> str:
    return (
        f"{exc} The gateway may have received this line: a job may exist (and be charged). "
        "It is not sent again unless you rerun with --resubmit-unknown."
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
    ``shard``, ``resubmit_unknown``, ``force``, ``base_dir``, ``job_timeout``, ...). Running
    it again with the same items and ``out_dir`` resumes. Use it inside
    ``contextlib.aclosing(...)`` to stop early cleanly::

        async with AsyncMAIImageClient(max_retries=0) as client:
            async for outcome in run_batch(client, ["a red fox", "a blue bird"], "out"):
                print(outcome.id, outcome.status, outcome.paths)
    """
    async with BatchRun(client, items, out_dir, **options) as run:
        async for outcome in run:
            yield outcome
