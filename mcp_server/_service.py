"""Running the image jobs behind the tools: calls that wait, tasks that return at once.

A call (``tools/call`` answered in full) submits, waits up to ``max_wait`` with progress, and
answers. A task (MCP Tasks, ``_tasks``) submits and answers with the gateway's request id at
once; every ``tasks/get`` reads the job's status once. Both answer through ``_answers.answer``.

**Identical calls share one job, through the job book.** Every submit goes through the
client with a :class:`~mai_tools.jobbook.JobScope` naming the call (its principal, and its tool
and validated arguments as the twin key): the book's claim finds an identical call's job whose
answer was never delivered (the client cancelled or timed out, the stream dropped, the server
was restarted or killed, the call landed on another replica sharing a Postgres book) and the
client continues that job instead of paying again. An identical call made while the first
one's submit is on the wire waits in the claim for its request id. Once an answer reaches the
caller (images, "still running" with the request id, or an error) the book releases the
twin key (:meth:`~mai_tools.jobbook.JobBook.delivered`): the same call after that is a new
job, as the model asked. An answer that never left (the call was cancelled, the client went
away) leaves the job adoptable for :data:`~mai_tools.jobbook.ADOPT_WINDOW` seconds (an hour
while it still runs). A task's answer is
delivered when ``tasks/get`` returns its final result.

Book statements are short: on the event loop for SQLite, in a worker thread for a book whose
``offload`` is set (Postgres): :func:`in_book`.
"""

from __future__ import annotations

import functools
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import anyio
from mcp.server.mcpserver import Context
from mcp.types import CallToolResult

from mai_tools import AsyncMAIImageClient, ImageResult, Job, JobStatus, MAIImageError, Status
from mai_tools._agent import (
    Done,
    Failed,
    FailureKind,
    Outcome,
    Running,
    arun,
    failure_of,
    outcome_of,
)
from mai_tools._exceptions import JobBookError, JobFailedError, JobUnknownError
from mai_tools._models import JobRequest, operation_of
from mai_tools._tools import TOOL_SPECS, TOOLS, job_request
from mai_tools.jobbook import JobBook, JobRecord, JobScope

from ._answers import answer
from ._arguments import EditArguments, GenerateArguments
from ._host_timeouts import HostTimeouts
from ._identity import is_operator, many_principals, principal, visible_principal
from ._jobs import argument_key
from ._limits import audit_refusal
from ._resume import MemoryEventStore, client_gone
from ._saves import TaskSaves
from ._settings import Settings
from ._state import STOPPING, ServerState

logger = logging.getLogger("mcp_server")

T = TypeVar("T")
OnStatus = Callable[[JobStatus, float], Awaitable[None]]
ToolContext = Context[ServerState, Any]
"""What a tool is handed: the request, and the server's lifespan context (its one client)."""
WATCH_INTERVAL = 0.25
"""How often a waiting call checks that its HTTP client is still there."""
SURFACE = "mcp"
"""How the job book names the jobs this server makes."""
TOOL_OF_OPERATION = {spec.operation: spec.name for spec in TOOLS if spec.operation is not None}


def job_started_at(request_id: str) -> datetime | None:
    """When the gateway created the job, from the UUIDv7 in its request id (None if not one)."""
    try:
        value = uuid.UUID(request_id.rsplit("_", 1)[-1])
    except ValueError:
        return None
    if value.version != 7:
        return None
    return datetime.fromtimestamp((value.int >> 80) / 1000, UTC)


async def in_book(book: JobBook, op: Callable[[JobBook], T]) -> T:
    """Run one job-book statement: on the event loop for SQLite (tens of microseconds), in a
    worker thread for a network book (Postgres). A cancel waits for the statement to end."""
    if book.offload:
        return await anyio.to_thread.run_sync(op, book)
    return op(book)


async def noted(book: JobBook | None, op: Callable[[JobBook], object], what: str) -> None:
    """Record something in the book; a failure is logged, never raised (the answer stands)."""
    if book is None:
        return
    try:
        await in_book(book, op)
    except JobBookError as exc:
        logger.warning("job book: could not record %s: %s", what, exc)


def _when(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%H:%M:%S")


@dataclass
class TaskState:
    """What ``tasks/get`` says about a job that has not finished (or could not be read)."""

    request_id: str
    created: datetime
    poll_interval: float
    message: str


@dataclass
class _Call:
    scope: JobScope
    since: float
    """The book's clock when the call began: a job the book made before is an earlier call's."""
    request_id: str | None = None
    note: str | None = None
    gateway: str = ""
    """The gateway the client sends to (the book matches identical calls per gateway)."""
    max_wait: float = 0.0
    """How long this call may wait: the server's ``max_wait``, or less for a client known to
    give up sooner (:class:`~._host_timeouts.HostTimeouts`)."""


def _request_id_of(outcome: Outcome) -> str | None:
    if isinstance(outcome, Done):
        return outcome.result.request_id
    return outcome.request_id


class Service:
    """The tools' logic over the server's client and job book (its lifespan context, handed to
    each call) and (HTTP) event store."""

    def __init__(self, settings: Settings, events: MemoryEventStore | None = None) -> None:
        self.settings = settings
        self.events = events
        self.host_timeouts = HostTimeouts()
        self._task_saves = TaskSaves(settings)

    def _scope(
        self, request_context: object, tool: str, args: GenerateArguments | EditArguments
    ) -> JobScope:
        return JobScope(
            principal=principal(request_context),
            surface=SURFACE,
            twin_key=argument_key(tool, args.model_dump(mode="json")),
        )

    async def _earlier(
        self, book: JobBook | None, call: _Call, request_id: str
    ) -> JobRecord | None:
        """The book's entry of ``request_id`` if an earlier call made it (this call adopted it)."""
        if book is None:
            return None
        try:
            found = await in_book(
                book, lambda b: b.find(request_id, principal=call.scope.principal)
            )
        except JobBookError as exc:
            logger.warning("job book: could not read job %s: %s", request_id, exc)
            return None
        if found is None or found.created >= call.since:
            return None
        return found

    async def _delivered(self, book: JobBook | None, call: _Call, outcome: Outcome) -> None:
        """The answer reached the caller: an identical call is now a new job."""
        twin = call.scope.twin_key
        if book is None or twin is None:
            return
        if STOPPING.is_set():
            logger.info(
                "stopping: the answer about %s may not reach its caller; its job stays "
                "adoptable by an identical call",
                call.request_id,
            )
            return
        who = call.scope.principal
        request_id = call.request_id or _request_id_of(outcome)
        if request_id is not None:
            await noted(book, lambda b: b.delivered(who, twin, request_id), "a delivered answer")
            return
        if isinstance(outcome, Failed) and isinstance(outcome.error, JobUnknownError):
            # "A job for an identical call may have been created ... calling again now makes a
            # new job": that is true once the entry it named lets go of the call. (A submit of
            # this very call that may have arrived keeps it: the next identical call is told.)
            def release_unknown(b: JobBook) -> None:
                for record in b.list(
                    principal=who, gateway=call.gateway, state="unknown", limit=None
                ):
                    if record.twin_key == twin:
                        b.untwin(record.id)

            await noted(book, release_unknown, "a delivered answer")

    # ------------------------------------------------------------------ calls

    async def call(
        self, ctx: ToolContext, tool: str, args: GenerateArguments | EditArguments
    ) -> CallToolResult:
        """generate_image / edit_image answered in full (or "still running" at max_wait)."""
        started = time.monotonic()
        state = ctx.request_context.lifespan_context
        try:
            api = state.api()
        except MAIImageError as exc:
            return await answer(outcome_of(exc), self.settings)
        book = state.book
        call = _Call(
            self._scope(ctx.request_context, tool, args),
            book.clock() if book else 0.0,
            gateway=api.base_url,
            max_wait=self.host_timeouts.max_wait(ctx.request_context, self.settings.max_wait),
        )

        def job(on_status: OnStatus) -> Awaitable[ImageResult]:
            return self._submit_and_wait(api, tool, args, on_status, call)

        async def first_seen(request_id: str) -> None:
            if call.request_id is not None:
                return
            call.request_id = request_id
            earlier = await self._earlier(book, call, request_id)
            if earlier is not None:
                call.note = (
                    f"(Continuing the job you started at {_when(earlier.created)} UTC, "
                    f"request_id {request_id}, whose answer did not reach you: no new job was "
                    "made.)"
                )

        outcome, gone = await self._wait(ctx, job, first_seen, call)
        audit_refusal(state.audit, call.scope, tool, args, outcome)
        result = await answer(
            outcome, self.settings, started=started, note=call.note, max_wait=call.max_wait
        )
        if gone:
            logger.info("answer about %s not delivered: kept for adoption", call.request_id)
        else:
            await self._delivered(book, call, outcome)
        return result

    async def resume(self, ctx: ToolContext, request_id: str) -> CallToolResult:
        """get_image_job: wait (up to max_wait) for a job started earlier."""
        state = ctx.request_context.lifespan_context
        try:
            api = state.api()
        except MAIImageError as exc:
            return await answer(outcome_of(exc), self.settings)
        book = state.book
        who = principal(ctx.request_context)
        try:
            record = await self._own(book, ctx.request_context, request_id)
        except JobBookError as exc:
            return await answer(outcome_of(exc), self.settings)
        if isinstance(record, Failed):
            return await answer(record, self.settings)
        scope = JobScope(who, SURFACE, record.twin_key if record is not None else None)
        wait = self.host_timeouts.max_wait(ctx.request_context, self.settings.max_wait)
        call = _Call(scope, 0.0, request_id=request_id, max_wait=wait)
        started = time.monotonic()

        def job(on_status: OnStatus) -> Awaitable[ImageResult]:
            return api.wait(request_id, timeout=wait, on_status=on_status)

        async def first_seen(rid: str) -> None:
            return None

        outcome, gone = await self._wait(ctx, job, first_seen, call)
        result = await answer(outcome, self.settings, started=started, max_wait=wait)
        if not gone and not isinstance(outcome, Running):
            # The job's end reached the model: an identical generate call is a new job now.
            await self._delivered(book, call, outcome)
        return result

    async def _own(
        self, book: JobBook | None, request_context: object, request_id: str
    ) -> JobRecord | Failed | None:
        """The book's entry of ``request_id`` if the caller may read it; None: not in the book
        (a job started elsewhere, read from the gateway as before).

        Another principal's job is answered exactly like an unknown id (nothing about it is
        told). On a server with many principals (:func:`~._identity.many_principals`) a job
        the book does not hold is answered so too, without asking the gateway, and so is
        every id while the book cannot be read (it fails closed). An operator reads any job.

        Raises:
            JobBookError: the book cannot be read on a server with many principals.
        """
        who = principal(request_context)
        operator = is_operator(request_context, self.settings.operators)
        strict = many_principals(self.settings) and not operator
        record: JobRecord | None = None
        if book is not None:
            try:
                record = await in_book(book, lambda b: b.find(request_id))
            except JobBookError as exc:
                logger.warning("job book: could not read job %s: %s", request_id, exc)
                if strict:
                    raise
        foreign = record is not None and record.principal != who and not operator
        if foreign or (record is None and strict):
            text = (
                f"Request '{request_id}' not found. Use the request_id exactly as a tool "
                "returned it."
            )
            return Failed(FailureKind.UNKNOWN_JOB, text, LookupError(text), request_id)
        return record

    async def _request(
        self, api: AsyncMAIImageClient, tool: str, args: GenerateArguments | EditArguments
    ) -> JobRequest:
        """The tool's request (a local image is read off the event loop, inside the allowed
        directories only)."""
        build = functools.partial(
            job_request,
            TOOL_SPECS[tool],
            args,
            allowed_dirs=self.settings.allowed_dirs,
            max_image_bytes=api.options.max_input_image_bytes,
        )
        return await anyio.to_thread.run_sync(build)

    async def _submit_and_wait(
        self,
        api: AsyncMAIImageClient,
        tool: str,
        args: GenerateArguments | EditArguments,
        on_status: OnStatus,
        call: _Call,
    ) -> ImageResult:
        request = await self._request(api, tool, args)
        return await api.run(
            request, timeout=call.max_wait, on_status=on_status, job_scope=call.scope
        )

    async def _wait(
        self,
        ctx: ToolContext,
        job: Callable[[OnStatus], Awaitable[ImageResult]],
        first_seen: Callable[[str], Awaitable[None]],
        call: _Call,
    ) -> tuple[Outcome, bool]:
        """Run ``job`` with progress (each status, and a heartbeat), watching the HTTP client.

        Returns the outcome and whether the client is gone (the wait then stopped early).
        """
        server = ctx.request_context.lifespan_context
        api = server.api()
        settings = self.settings
        start = time.monotonic()
        state = {"status": "SUBMITTING", "request_id": call.request_id or ""}
        request = ctx.request_context.request
        gone = False

        async def report() -> None:
            elapsed = time.monotonic() - start
            rid = f" {state['request_id']}" if state["request_id"] else ""
            await ctx.report_progress(elapsed, None, f"{state['status']} {elapsed:.0f}s{rid}")

        async def on_status(status: JobStatus, elapsed: float) -> None:
            state["status"] = status.status.value
            state["request_id"] = status.request_id
            await first_seen(status.request_id)
            await report()

        async def heartbeat() -> None:
            while True:
                await anyio.sleep(settings.heartbeat)
                await report()

        async def watch(scope: anyio.CancelScope) -> None:
            nonlocal gone
            while True:
                await anyio.sleep(WATCH_INTERVAL)
                # Never stop a submit half-way: only a wait on a known job is dropped.
                if call.request_id and client_gone(request, ctx.request_id, self.events):
                    logger.info("the client of %s disconnected: no more polling", call.request_id)
                    gone = True
                    scope.cancel()
                    return

        outcome: Outcome | None = None
        with anyio.CancelScope() as scope:
            async with anyio.create_task_group() as group:
                group.start_soon(heartbeat)
                if request is not None:
                    group.start_soon(watch, scope)
                try:
                    outcome = await arun(
                        api,
                        lambda _client: job(on_status),
                        save_to=settings.output_dir,
                        budget=call.max_wait,
                    )
                finally:
                    group.cancel_scope.cancel()
        if outcome is None:  # the client went away: the job goes on, remembered
            outcome = Running(
                call.request_id or "",
                state["status"],
                round(time.monotonic() - start, 1),
                reason="the client disconnected",
            ).expecting(api.durations)
        elif isinstance(outcome, Done):
            await server.remember()
        return outcome, gone

    # ------------------------------------------------------------------ listing

    async def recent(
        self, state: ServerState, request_context: object, limit: int, *, everyone: bool = True
    ) -> list[JobRecord] | None:
        """The caller's newest jobs made through MCP (by any server sharing the book) on this
        server's gateway (any gateway when it has no client), every principal's for an
        operator (unless not ``everyone``); None when there is no book.

        Raises:
            JobBookError: the book cannot be read.
        """
        book = state.book
        if book is None:
            return None
        who = (
            visible_principal(request_context, self.settings.operators)
            if everyone
            else principal(request_context)
        )
        gateway = state.client.base_url if state.client is not None else None
        return await in_book(
            book, lambda b: b.list(principal=who, gateway=gateway, surface=SURFACE, limit=limit)
        )

    # ------------------------------------------------------------------ tasks

    async def start_task(
        self,
        state: ServerState,
        tool: str,
        args: GenerateArguments | EditArguments,
        request_context: object = None,
    ) -> TaskState | CallToolResult:
        """Submit (or continue an identical call's undelivered job) and return at once."""
        try:
            api = state.api()
        except MAIImageError as exc:
            return await answer(outcome_of(exc), self.settings)
        book = state.book
        call = _Call(
            self._scope(request_context, tool, args),
            book.clock() if book else 0.0,
            gateway=api.base_url,
        )
        try:
            submitted = await self._submit(api, tool, args, call.scope)
        except MAIImageError as exc:
            failed = outcome_of(exc)
            audit_refusal(state.audit, call.scope, tool, args, failed)
            await self._delivered(book, call, failed)
            return await answer(failed, self.settings)
        message = submitted.status.value
        if await self._earlier(book, call, submitted.request_id) is not None:
            logger.info("task for %s: continuing undelivered job %s", tool, submitted.request_id)
            message = "continuing an earlier job"
        created = job_started_at(submitted.request_id) or datetime.now(UTC)
        return self._task_state(api, submitted.request_id, created, message)

    async def _submit(
        self,
        api: AsyncMAIImageClient,
        tool: str,
        args: GenerateArguments | EditArguments,
        scope: JobScope,
    ) -> Job:
        return await api.submit(await self._request(api, tool, args), job_scope=scope)

    def _task_state(
        self, api: AsyncMAIImageClient, request_id: str, created: datetime, message: str
    ) -> TaskState:
        elapsed = max((datetime.now(UTC) - created).total_seconds(), 0.0)
        operation = operation_of(request_id)
        window = None if operation is None else api.durations.window(operation, api.poll_policy)
        typical = None if operation is None else api.durations.typical(operation)
        if typical is not None:
            message += f"; jobs like it usually take about {max(round(typical), 1)}s in all"
        return TaskState(
            request_id, created, next_poll(api, elapsed=elapsed, window=window), message
        )

    async def read_task(
        self, state: ServerState, task_id: str, request_context: object = None
    ) -> TaskState | CallToolResult:
        """One status read: the final tool result when the job has ended, else its state.

        A final result marks the task's job delivered in the book (an identical call after it
        is a new job); until then an identical call continues this job.

        Raises:
            UnknownTask: the gateway knows no such job (for this key), the id is malformed, or
                the book holds it for another principal.
        """
        started = time.monotonic()
        api = state.api()  # a missing key raises here: the task cannot exist
        book = state.book
        who = principal(request_context)
        record = await self._own(book, request_context, task_id)
        if isinstance(record, Failed):
            raise UnknownTask(record.message)
        created = job_started_at(task_id)
        try:
            # A gateway whose status endpoint stalls or drips (no HTTP timeout ends a drip)
            # costs max_wait, never more: the task is then still running, as far as we know.
            budget = max(self.settings.max_wait - (time.monotonic() - started), 0.0)
            with anyio.move_on_after(budget) as read:
                status = await api.get_status(task_id)
            if read.cancelled_caught:
                return self._task_state(
                    api,
                    task_id,
                    created or datetime.now(UTC),
                    f"the gateway did not answer a status read of {task_id} within "
                    f"{self.settings.max_wait:g}s; the job may still be running",
                )
        except MAIImageError as exc:
            failed = failure_of(exc)
            if failed.kind in (FailureKind.UNKNOWN_JOB, FailureKind.INVALID_INPUT):
                raise UnknownTask(failed.message) from None
            if failed.kind in (FailureKind.SERVICE, FailureKind.RATE_LIMITED):
                # Transient: the job may well be running; the client polls again.
                return self._task_state(
                    api,
                    task_id,
                    created or datetime.now(UTC),
                    f"could not read the job's status right now ({exc}); it may still be running",
                )
            return await answer(failed, self.settings)
        created = created or status.created_at or datetime.now(UTC)
        final: Outcome | None = None
        if status.status is Status.COMPLETED and status.image_urls:
            result = ImageResult.from_status(status)
            final = Done(result, *(await self._task_saves.save(api, result, record, started)))
        elif status.status.is_failure:
            final = failure_of(JobFailedError(status))
        if final is None:
            await noted(
                book, lambda b: b.progressed(task_id, status.status.value), "a task's status"
            )
            return self._task_state(api, task_id, created, status.status.value)
        await noted(
            book,
            lambda b: b.finished(
                task_id, status.status.value, list(status.image_urls), status.error
            ),
            "a task's outcome",
        )
        done = await answer(final, self.settings, started=started)
        if record is not None and record.twin_key is not None:
            call = _Call(JobScope(who, SURFACE, record.twin_key), 0.0, request_id=task_id)
            await self._delivered(book, call, final)
        return done


class UnknownTask(LookupError):
    """``tasks/get`` for an id the gateway does not know (under this server's key)."""


def next_poll(api: AsyncMAIImageClient, *, elapsed: float, window: Any) -> float:
    """Seconds until the client's next poll, on the schedule the client itself would follow
    (its poll policy and the learned duration window), ``elapsed`` seconds into the job."""
    policy = api.poll_policy
    at, gap = 0.0, None
    for _ in range(10_000):
        delay = policy.next_delay(elapsed=at, last_gap=gap, window=window)
        if at + delay > elapsed:
            return max(at + delay - elapsed, MIN_POLL)
        at, gap = at + max(delay, MIN_POLL), delay
    return max(policy.max_interval, MIN_POLL)


MIN_POLL = 0.05
"""The shortest poll interval a task advertises."""
