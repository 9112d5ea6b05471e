"""What a running server holds: its one client and its job book, opened when the server
starts (its lifespan).

The MCP SDK runs a server's lifespan once per run (stdio, the HTTP app, an in-process
``Client(server)``) and hands what it yields to every request as the lifespan context, typed:
tools reach the client through ``ctx.request_context.lifespan_context`` (a :class:`ServerState`).
The client is closed, and what it learned about job durations saved, when the run ends.

The job book (:mod:`mai_tools.jobbook`; ``job_book`` in the settings, ``MAI_JOB_BOOK``) is
opened first, whether or not there is a key (``list_recent_jobs`` reads it): a book that
cannot be opened stops the server at start, never a silent fallback that could pay twice.
With ``off`` the server keeps a book of its own in a temporary file, removed when it stops:
identical calls within this process still share a job, as before the durable book.

The audit log (``--audit-log``) is opened with the book and attached to it as an observer
(:class:`~mai_tools.jobbook.AuditLog`): each change of a job's state made through this process
becomes a record; it is detached and closed when the run ends.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
import weakref
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING

import anyio

from mai_tools import AsyncMAIImageClient, MAIImageError, WebhookReceiver, _duration_cache
from mai_tools._exceptions import ConfigurationError
from mai_tools._tools import TOOLS
from mai_tools.jobbook import AuditLog, JobBook, SQLiteJobBook, open_job_book

from ._limit_values import limits_of
from ._logs import JobLog
from ._metrics import spend_meter
from ._settings import Settings

STOPPING = threading.Event()
"""Set when this process was asked to stop (SIGTERM or Ctrl-C under the HTTP server). An answer
given while it stops may never reach its caller (the client's other requests already fail), so
it does not release its job: an identical call on the next server continues the job instead of
paying for another."""

if TYPE_CHECKING:
    from mcp.server.mcpserver import MCPServer

_RUNNING: weakref.WeakKeyDictionary[MCPServer[ServerState], ServerState] = (
    weakref.WeakKeyDictionary()
)
"""Each server whose lifespan runs, and its state (``/readyz`` looks here: _health)."""

STORE_EVERY = 10.0
"""Seconds between two saves of the learned job durations (and one more when the server stops)."""


@dataclass
class ServerState:
    """The lifespan context: the server's client, or why it has none (no key: each call then
    says what to set, and the server still starts and lists its tools).

    Attributes:
        book: the job book the client writes every job into, and the tools read (None only
            for a caller's client that has no book: then nothing is adopted or listed).
        owned: the server made the client (it closes it, and saves what it learned); a client
            given to ``create_server(client=...)`` is the caller's.
        audit: the audit log (``--audit-log``), attached to ``book``; its
            :meth:`~mai_tools.jobbook.AuditLog.refused` records a call a limit stopped.
    """

    settings: Settings
    client: AsyncMAIImageClient | None
    book: JobBook | None = None
    problem: MAIImageError | None = None
    owned: bool = True
    audit: AuditLog | None = None
    _stored_at: float | None = field(default=None, repr=False)
    _scratch: Path | None = field(default=None, repr=False)

    @classmethod
    def open(
        cls,
        settings: Settings,
        client: AsyncMAIImageClient | None = None,
        webhooks: WebhookReceiver | None = None,
        *,
        book: JobBook | None = None,
        scratch: Path | None = None,
    ) -> ServerState:
        """The state for one run; ``book`` from :func:`open_server_book` (``scratch``: the
        temporary directory of a book of this process only).

        Raises:
            JobBookError: no ``book`` was given and the settings' book cannot be opened.
            ConfigurationError: the settings set spending limits that a given ``client`` does
                not hold.
        """
        limits = limits_of(settings)
        if client is not None:
            if limits is not None and client.spending_limits != limits:
                # The client does the reserving: limits it does not hold would not be enforced.
                raise ConfigurationError(
                    "The settings set spending limits, and the client given to create_server "
                    "does not hold them: give it spending_limits=SpendingLimits(...) with the "
                    "same values."
                )
            return cls(settings, client, client.job_book, owned=False)
        if book is None:
            book, scratch = open_server_book(settings)
        key = settings.api_key
        try:
            made = AsyncMAIImageClient(
                None if key is None else key.get_secret_value(),
                base_url=settings.base_url,
                wait_timeout=settings.max_wait,
                webhooks=webhooks,
                job_book=book,
                spending_limits=limits,
            )
        except MAIImageError as exc:
            return cls(settings, None, book, problem=exc, _scratch=scratch)
        if settings.remember_durations:
            _duration_cache.restore(made.durations, settings.durations_key or made.base_url)
        return cls(settings, made, book, _scratch=scratch)

    def api(self) -> AsyncMAIImageClient:
        """The client.

        Raises:
            MAIImageError: there is none (no key, a bad base URL); its message says what to set.
        """
        if self.client is None:
            assert self.problem is not None
            raise self.problem.with_traceback(None)
        return self.client

    async def remember(self, *, now: bool = False) -> None:
        """Save what the client has learned about job durations (if the settings say so): at
        most every :data:`STORE_EVERY` seconds (a busy server finishes many jobs a second),
        and at once with ``now`` (when the server stops)."""
        client = self.client
        if client is None or not self.owned or not self.settings.remember_durations:
            return
        last = self._stored_at
        if not now and last is not None and time.monotonic() - last < STORE_EVERY:
            return
        self._stored_at = time.monotonic()
        key = self.settings.durations_key or client.base_url
        # File I/O off the event loop: other calls keep being served meanwhile.
        await anyio.to_thread.run_sync(_duration_cache.store, client.durations, key)

    async def aclose(self) -> None:
        try:
            if self.client is None or not self.owned:
                return
            if self._stored_at is not None:  # learned since the last save: keep it
                await self.remember(now=True)
            await self.client.aclose()
        finally:
            if self.audit is not None:
                if self.book is not None:
                    self.audit.detach(self.book)
                self.audit.close()
            if self._scratch is not None and self.book is not None:
                self.book.close()
                shutil.rmtree(self._scratch, ignore_errors=True)


def lifespan(
    settings: Settings,
    client: AsyncMAIImageClient | None = None,
    webhooks: WebhookReceiver | None = None,
) -> Callable[[MCPServer[ServerState]], AbstractAsyncContextManager[ServerState]]:
    """The server's lifespan: one :class:`ServerState` per run, closed when the run ends."""

    @asynccontextmanager
    async def run(server: MCPServer[ServerState]) -> AsyncIterator[ServerState]:
        audit = open_audit_log(settings)  # first: a bad path stops the run with nothing open
        try:
            book, scratch = None, None
            if client is None:  # a Postgres book connects: not on the event loop
                book, scratch = await anyio.to_thread.run_sync(open_server_book, settings)
            state = ServerState.open(settings, client, webhooks, book=book, scratch=scratch)
        except BaseException:
            if audit is not None:
                audit.close()
            raise
        if audit is not None and state.book is not None:
            audit.attach(state.book)
        state.audit = audit
        jobs = JobLog()  # a line per job event (mcp_server.jobs, INFO): _logs
        spend = spend_meter(settings)  # the estimated spend counter, with a price: _metrics
        observers = [o for o in (jobs, spend) if o is not None]
        if state.book is not None:
            state.book.observers.extend(observers)
        _RUNNING[server] = state
        try:
            yield state
        finally:
            _RUNNING.pop(server, None)
            try:
                await state.aclose()
            finally:
                for observer in observers:
                    if state.book is not None and observer in state.book.observers:
                        state.book.observers.remove(observer)

    return run


def running(server: MCPServer[ServerState]) -> ServerState | None:
    """The state of ``server`` while its lifespan runs (None before it starts, after it
    ends)."""
    return _RUNNING.get(server)


def open_server_book(settings: Settings) -> tuple[JobBook, Path | None]:
    """The job book the settings name (:func:`mai_tools.jobbook.open_job_book`), and None; or,
    when it is ``off``, a book of this process only and its temporary directory.

    Raises:
        JobBookError: the book cannot be opened (a bad path, a file that is not a book, an
            unreachable database, a missing ``mai-tools[postgres]``).
    """
    book = open_job_book(settings.job_book)
    if book is not None:
        return book, None
    scratch = Path(tempfile.mkdtemp(prefix="mai-image-mcp-"))
    return SQLiteJobBook(scratch / "jobs.sqlite3"), scratch


def open_audit_log(settings: Settings) -> AuditLog | None:
    """The audit log the settings name (None without ``--audit-log``).

    Raises:
        ConfigurationError: the file cannot be opened for appending.
    """
    if settings.audit_log is None:
        return None
    secrets = [s.get_secret_value() for s in (settings.api_key, settings.auth_token) if s]
    # The spending limits' price (another part of issue 22) names the cost when it is set.
    price = getattr(settings, "price_per_image", None)
    return AuditLog(
        settings.audit_log,
        prompts=settings.audit_prompts,
        price_per_image=None if price is None else Decimal(str(price)),
        currency=getattr(settings, "currency", None),
        tool_names={spec.operation: spec.name for spec in TOOLS if spec.operation is not None},
        redact=secrets,
    )
