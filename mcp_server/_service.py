"""Running the image jobs behind the tools: calls that wait, tasks that return at once.

A call (``tools/call`` answered in full) submits, waits up to ``max_wait`` with progress, and
answers; an identical call continues a job whose answer was never delivered (``_jobs``). A task
(MCP Tasks, ``_tasks``) submits and answers with the gateway's request id at once; every
``tasks/get`` reads the job's status once. Both answer through ``_answers.answer``.
"""

from __future__ import annotations

import functools
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import anyio
from mcp.server.mcpserver import Context
from mcp.types import CallToolResult

from mai_tools import AsyncMAIImageClient, ImageResult, Job, JobStatus, MAIImageError, Status
from mai_tools._agent import (
    Done,
    FailureKind,
    Outcome,
    Running,
    arun,
    asave_or_report,
    failure_of,
    outcome_of,
)
from mai_tools._exceptions import JobFailedError
from mai_tools._models import JobRequest, operation_of
from mai_tools._tools import TOOL_SPECS, job_request

from ._answers import answer
from ._arguments import EditArguments, GenerateArguments
from ._jobs import JobBook, argument_key
from ._resume import MemoryEventStore, client_gone
from ._settings import Settings
from ._state import ServerState

logger = logging.getLogger("mcp_server")

OnStatus = Callable[[JobStatus, float], Awaitable[None]]
ToolContext = Context[ServerState, Any]
"""What a tool is handed: the request, and the server's lifespan context (its one client)."""
WATCH_INTERVAL = 0.25
"""How often a waiting call checks that its HTTP client is still there."""


def job_started_at(request_id: str) -> datetime | None:
    """When the gateway created the job, from the UUIDv7 in its request id (None if not one)."""
    try:
        value = uuid.UUID(request_id.rsplit("_", 1)[-1])
    except ValueError:
        return None
    if value.version != 7:
        return None
    return datetime.fromtimestamp((value.int >> 80) / 1000, UTC)


@dataclass
class TaskState:
    """What ``tasks/get`` says about a job that has not finished (or could not be read)."""

    request_id: str
    created: datetime
    poll_interval: float
    message: str


@dataclass
class _Call:
    key: str
    request_id: str | None = None
    started: datetime | None = None


class Service:
    """The tools' logic over the server's client (its lifespan context, handed to each call),
    job book and (HTTP) event store."""

    def __init__(
        self, settings: Settings, book: JobBook, events: MemoryEventStore | None = None
    ) -> None:
        self.settings = settings
        self.book = book
        self.events = events
        self._submitting: dict[str, anyio.Event] = {}
        """Argument sets whose submit is on its way (no request id yet), by argument key."""

    async def _after_identical_submit(self, key: str) -> tuple[str, datetime] | None:
        """An identical call's job, waiting (up to ``max_wait``) for its submit to be answered.

        Two identical calls in flight are one job: the second must not POST while the first's
        POST is on the wire, before the book knows the first's request id.
        """
        adopted = self.book.adoptable(key)
        pending = self._submitting.get(key)
        if adopted is None and pending is not None:
            with anyio.move_on_after(self.settings.max_wait):
                await pending.wait()
            adopted = self.book.adoptable(key)
        return adopted

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
        call = _Call(argument_key(tool, args.model_dump(mode="json")))
        adopted = await self._after_identical_submit(call.key)
        note: str | None = None
        if adopted is not None:
            call.request_id, call.started = adopted
            self.book.started(call.key, call.request_id, call.started)
            note = (
                f"(Continuing the job you started at {call.started:%H:%M:%S} UTC, request_id "
                f"{call.request_id}, whose answer did not reach you: no new job was made.)"
            )

        submitting: anyio.Event | None = None
        if call.request_id is None and call.key not in self._submitting:
            submitting = self._submitting[call.key] = anyio.Event()

        def job(on_status: OnStatus) -> Awaitable[ImageResult]:
            if call.request_id is not None:
                return api.wait(
                    call.request_id, timeout=self.settings.max_wait, on_status=on_status
                )
            return self._submit_and_wait(api, tool, args, on_status)

        def submitted() -> None:
            # The request id is in the book (or the submit ended): identical calls go on.
            if submitting is not None and self._submitting.get(call.key) is submitting:
                del self._submitting[call.key]
                submitting.set()

        async def first_seen(request_id: str) -> None:
            if call.request_id is None:
                call.request_id, call.started = request_id, datetime.now(UTC)
                self.book.started(call.key, request_id, call.started)
                self.book.record(request_id, tool=tool, prompt=args.prompt)
            submitted()

        delivered = False
        try:
            outcome, gone = await self._wait(ctx, job, first_seen, call)
            result = await answer(outcome, self.settings, started=started, note=note)
            delivered = not gone
            return result
        finally:
            submitted()
            if call.request_id is not None and call.started is not None:
                if delivered:
                    self.book.delivered(call.key, call.request_id)
                else:
                    logger.info("answer about %s not delivered: kept for adoption", call.request_id)
                    self.book.orphaned(call.key, call.request_id, call.started)

    async def resume(self, ctx: ToolContext, request_id: str) -> CallToolResult:
        """get_image_job: wait (up to max_wait) for a job started earlier."""
        state = ctx.request_context.lifespan_context
        try:
            api = state.api()
        except MAIImageError as exc:
            return await answer(outcome_of(exc), self.settings)
        call = _Call(key="", request_id=request_id)
        started = time.monotonic()

        def job(on_status: OnStatus) -> Awaitable[ImageResult]:
            return api.wait(request_id, timeout=self.settings.max_wait, on_status=on_status)

        async def first_seen(rid: str) -> None:
            self.book.record(rid)

        outcome, _ = await self._wait(ctx, job, first_seen, call)
        return await answer(outcome, self.settings, started=started)

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
    ) -> ImageResult:
        request = await self._request(api, tool, args)
        return await api.run(request, timeout=self.settings.max_wait, on_status=on_status)

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
            self.book.record(status.request_id, status=status.status.value)
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
                        budget=settings.max_wait,
                    )
                finally:
                    group.cancel_scope.cancel()
        if outcome is None:  # the client went away: the job goes on, remembered
            outcome = Running(
                call.request_id or "",
                state["status"],
                round(time.monotonic() - start, 1),
                reason="the client disconnected",
            )
        elif isinstance(outcome, Done):
            self.book.record(
                outcome.result.request_id,
                status=outcome.result.status.value,
                image_urls=outcome.result.image_urls,
            )
            await server.remember()
        return outcome, gone

    # ------------------------------------------------------------------ tasks

    async def start_task(
        self, state: ServerState, tool: str, args: GenerateArguments | EditArguments
    ) -> TaskState | CallToolResult:
        """Submit (or adopt an undelivered identical job) and return at once."""
        try:
            api = state.api()
        except MAIImageError as exc:
            return await answer(outcome_of(exc), self.settings)
        key = argument_key(tool, args.model_dump(mode="json"))
        adopted = self.book.adoptable(key)
        if adopted is not None:
            request_id, created = adopted
            self.book.delivered(key, request_id)  # the task hands its id to the client
            logger.info("task for %s: continuing undelivered job %s", tool, request_id)
            return self._task_state(api, request_id, created, "continuing an earlier job")
        try:
            submitted = await self._submit(api, tool, args)
        except MAIImageError as exc:
            return await answer(outcome_of(exc), self.settings)
        self.book.record(submitted.request_id, tool=tool, prompt=args.prompt)
        created = job_started_at(submitted.request_id) or datetime.now(UTC)
        return self._task_state(api, submitted.request_id, created, submitted.status.value)

    async def _submit(
        self, api: AsyncMAIImageClient, tool: str, args: GenerateArguments | EditArguments
    ) -> Job:
        return await api.submit(await self._request(api, tool, args))

    def _task_state(
        self, api: AsyncMAIImageClient, request_id: str, created: datetime, message: str
    ) -> TaskState:
        elapsed = max((datetime.now(UTC) - created).total_seconds(), 0.0)
        operation = operation_of(request_id)
        window = None if operation is None else api.durations.window(operation, api.poll_policy)
        return TaskState(
            request_id, created, next_poll(api, elapsed=elapsed, window=window), message
        )

    async def read_task(self, state: ServerState, task_id: str) -> TaskState | CallToolResult:
        """One status read: the final tool result when the job has ended, else its state.

        Raises:
            UnknownTask: the gateway knows no such job (for this key), or the id is malformed.
        """
        api = state.api()  # a missing key raises here: the task cannot exist
        created = job_started_at(task_id)
        try:
            status = await api.get_status(task_id)
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
        self.book.record(task_id, status=status.status.value, image_urls=status.image_urls)
        created = created or status.created_at or datetime.now(UTC)
        if status.status is Status.COMPLETED and status.image_urls:
            result = ImageResult.from_status(status)
            saved = await asave_or_report(api, result, self.settings.output_dir)
            return await answer(Done(result, *saved), self.settings)
        if status.status.is_failure:
            return await answer(failure_of(JobFailedError(status)), self.settings)
        return self._task_state(api, task_id, created, status.status.value)


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
