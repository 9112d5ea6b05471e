"""MCP Tasks, in both flavours: SEP-2663 (extension ``io.modelcontextprotocol/tasks``,
protocol 2026-07-28) and the earlier 2025-11-25 tasks (VS Code Copilot, the TypeScript SDK 1.x).

A client that opts in on a ``tools/call`` of ``generate_image`` or ``edit_image`` gets a task
at once instead of a call that waits: the job is submitted and the answer is
``{"resultType": "task", "taskId": <the gateway's request_id>, "status": "working", ...}``.
``tasks/get`` reads the job's status (one gateway read) and, once the job has ended, returns the
very CallToolResult the waiting call would have (text, previews, structuredContent valid
against the output schema; a failed job is a completed task whose result ``isError``).
The task id *is* the request id, so any replica answers. The job is written into the job
book like a call's (``_service``): an identical call, as a task or not, continues it until a
``tasks/get`` has returned its final result.
``pollIntervalMs`` follows the schedule the client library would poll on (learned durations
included). ``tasks/cancel`` is acknowledged, but the gateway has no cancel: the answer says the
job goes on.

**The 2025-11-25 flavour** is negotiated by the handshake: a client on 2025-11-25 sees the
``tasks`` server capability and ``execution.taskSupport: "optional"`` on the two job tools
(:class:`LegacyTasksSurface` adds both), asks for a task with ``params.task`` on
``tools/call``, and gets ``{"task": {...}}`` at once. ``tasks/get`` answers the task's status
only (``completed``, or ``failed`` for an error result); ``tasks/result`` waits for the end and
returns the CallToolResult; ``tasks/list`` lists the caller's jobs from the job book;
``tasks/cancel`` answers as above (or, per that spec, refuses a task that has ended). The task
id is the same request id, and the job book adopts identical calls the same way.

The same interceptor checks every tool's arguments first (``_arguments``), so an invalid call
and an invalid task are refused alike, in the server's words, before anything is sent; then,
for a call or a task alike, the steps before a job is sent (``_confirm``: the spending limits'
precheck, then the user's confirmation of a costly call).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import anyio
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.extension import Extension, MethodBinding
from mcp.shared.exceptions import MCPError
from mcp.types import CallToolRequestParams, CallToolResult, TextContent
from mcp_types import CLIENT_CAPABILITIES_META_KEY, INTERNAL_ERROR, INVALID_PARAMS, RequestParams
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from pydantic import ConfigDict, Field, ValidationError

from mai_tools import MAIImageError
from mai_tools._agent import failure_of, validation_text
from mai_tools.jobbook import JobRecord

from ._arguments import ARGUMENTS, EditArguments, GenerateArguments
from ._confirm import Confirmation, ConfirmPolicy
from ._gallery import for_client
from ._service import Service, TaskState, UnknownTask, job_started_at
from ._state import ServerState

logger = logging.getLogger("mcp_server")

TASKS_EXTENSION = "io.modelcontextprotocol/tasks"
TASK_TOOLS = frozenset({"generate_image", "edit_image"})
TASK_TTL_MS = 24 * 3600 * 1000
"""How long a task id stays readable, as far as this server is concerned: the gateway keeps
results for a time it does not document; nothing here expires."""
_MODERN = frozenset(MODERN_PROTOCOL_VERSIONS)
LEGACY_TASKS_VERSION = "2025-11-25"
"""The handshake version whose core protocol has tasks (they left the core in 2026-07-28)."""
_TASK_ERAS = frozenset({*_MODERN, LEGACY_TASKS_VERSION})
RELATED_TASK_META = "io.modelcontextprotocol/related-task"
TASK_RESULT_LIMIT = 30 * 60.0
"""Longest ``tasks/result`` waits for a job to end (the gateway's jobs take seconds to minutes;
a job still running then is answered with an error that says to ask again)."""
LIST_PAGE = 50


class ListParams(RequestParams):
    """``tasks/list`` parameters (2025-11-25)."""

    model_config = ConfigDict(populate_by_name=True)

    cursor: str | None = None


class TaskParams(RequestParams):
    """``tasks/get``, ``tasks/cancel`` and ``tasks/result`` parameters."""

    model_config = ConfigDict(populate_by_name=True)

    task_id: str = Field(alias="taskId")  # checked as a request id, with a clear error


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _opted_in(params: CallToolRequestParams, ctx: ServerRequestContext[Any, Any]) -> bool:
    """Did the client ask for tasks on this request (modern protocol only)?"""
    if ctx.protocol_version not in _MODERN:
        return False
    meta = params.meta or ctx.meta or {}
    capabilities = meta.get(CLIENT_CAPABILITIES_META_KEY) if isinstance(meta, dict) else None
    extensions = capabilities.get("extensions") if isinstance(capabilities, dict) else None
    return isinstance(extensions, dict) and isinstance(extensions.get(TASKS_EXTENSION), dict)


def task_fields(state: TaskState, status: str = "working") -> dict[str, Any]:
    """The flat SEP-2663 task object for ``state``."""
    return {
        "taskId": state.request_id,
        "status": status,
        "statusMessage": state.message,
        "createdAt": _iso(state.created),
        "lastUpdatedAt": _iso(datetime.now(UTC)),
        "ttlMs": TASK_TTL_MS,
        "pollIntervalMs": max(int(state.poll_interval * 1000), 1),
    }


def _dump(result: CallToolResult) -> dict[str, Any]:
    return result.model_dump(mode="json", by_alias=True, exclude_none=True)


class ImageTasks(Extension):
    """The tasks extension and the argument check, as one ``tools/call`` interceptor."""

    identifier = TASKS_EXTENSION

    def __init__(self, service: Service, confirmation: Confirmation | None = None) -> None:
        self._service = service
        self._confirmation = confirmation or Confirmation(
            ConfirmPolicy.from_settings(service.settings)
        )

    def methods(self) -> Sequence[MethodBinding]:
        legacy = frozenset({LEGACY_TASKS_VERSION})
        return (
            MethodBinding("tasks/get", TaskParams, self._get, protocol_versions=_TASK_ERAS),
            MethodBinding("tasks/cancel", TaskParams, self._cancel, protocol_versions=_TASK_ERAS),
            MethodBinding("tasks/result", TaskParams, self._result, protocol_versions=legacy),
            MethodBinding("tasks/list", ListParams, self._list, protocol_versions=legacy),
        )

    async def intercept_tool_call(
        self,
        params: CallToolRequestParams,
        ctx: ServerRequestContext[ServerState, Any],
        call_next: CallNext,
    ) -> HandlerResult:
        model = ARGUMENTS.get(params.name)
        if model is None:
            return await call_next(ctx)
        try:
            args = model.model_validate(params.arguments or {})
        except ValidationError as exc:
            fields = sorted({".".join(str(p) for p in e["loc"]) for e in exc.errors()})
            logger.info("tool %r: invalid arguments %s; nothing sent", params.name, fields)
            return CallToolResult(
                content=[TextContent(type="text", text=validation_text(exc))], is_error=True
            )
        if params.name in TASK_TOOLS and isinstance(args, GenerateArguments | EditArguments):
            # The limits' precheck, then the user's confirmation: before a call or a task.
            stop = await self._confirmation.before_submit(ctx, params, params.name, args)
            if stop is not None:
                return stop
        if (
            params.name in TASK_TOOLS
            and isinstance(args, GenerateArguments | EditArguments)
            and _opted_in(params, ctx)
        ):
            started = await self._service.start_task(ctx.lifespan_context, params.name, args, ctx)
            if isinstance(started, CallToolResult):
                return started  # refused before a job existed: the same answer as a call
            return {"resultType": "task", **task_fields(started)}
        return await call_next(ctx)

    async def _read(
        self, ctx: ServerRequestContext[ServerState, Any], task_id: str
    ) -> TaskState | CallToolResult:
        try:
            state = await self._service.read_task(ctx.lifespan_context, task_id, ctx)
        except UnknownTask as exc:
            raise MCPError(
                code=INVALID_PARAMS, message=f"Unknown task {task_id[:80]!r}: {exc}"
            ) from None
        except MAIImageError as exc:  # no key or a misconfiguration: no task can be read
            raise MCPError(code=INTERNAL_ERROR, message=failure_of(exc).message) from None
        # A task's result is a call's: an MCP Apps client gets it without resource links.
        return for_client(state, ctx) if isinstance(state, CallToolResult) else state

    async def _get(
        self, ctx: ServerRequestContext[ServerState, Any], params: TaskParams
    ) -> HandlerResult:
        state = await self._read(ctx, params.task_id)
        if ctx.protocol_version == LEGACY_TASKS_VERSION:
            return _legacy_fields(params.task_id, state)
        if isinstance(state, CallToolResult):
            now = datetime.now(UTC)
            return {
                "taskId": params.task_id,
                "status": "completed",
                "createdAt": _iso(_created(params.task_id, now)),
                "lastUpdatedAt": _iso(now),
                "ttlMs": TASK_TTL_MS,
                "result": _dump(state),
            }
        return task_fields(state)

    async def _cancel(
        self, ctx: ServerRequestContext[ServerState, Any], params: TaskParams
    ) -> HandlerResult:
        state = await self._read(ctx, params.task_id)
        note = (
            "Cancel acknowledged, but the image gateway cannot cancel a job: it goes on (and "
            "is charged); tasks/get keeps returning its result."
        )
        if ctx.protocol_version == LEGACY_TASKS_VERSION:
            if isinstance(state, CallToolResult):  # 2025-11-25: a task that ended stays so
                raise MCPError(
                    code=INVALID_PARAMS,
                    message=f"Task {params.task_id[:80]!r} has already ended: nothing to cancel.",
                )
            fields = legacy_task(state)
            fields["statusMessage"] = note
            return fields
        if isinstance(state, CallToolResult):
            now = datetime.now(UTC)
            return {
                "taskId": params.task_id,
                "status": "completed",
                "statusMessage": note,
                "createdAt": _iso(_created(params.task_id, now)),
                "lastUpdatedAt": _iso(now),
                "ttlMs": TASK_TTL_MS,
            }
        fields = task_fields(state)
        fields["statusMessage"] = note
        return fields

    # ------------------------------------------------------------------ 2025-11-25 only

    async def _result(
        self, ctx: ServerRequestContext[ServerState, Any], params: TaskParams
    ) -> HandlerResult:
        """``tasks/result``: wait for the job's end (reading its status on the schedule the
        client library would), then the very CallToolResult a waiting call would answer."""
        with anyio.move_on_after(TASK_RESULT_LIMIT):
            while True:
                state = await self._read(ctx, params.task_id)
                if isinstance(state, CallToolResult):
                    result = _dump(state)
                    meta = dict(result.get("_meta") or {})
                    meta[RELATED_TASK_META] = {"taskId": params.task_id}
                    result["_meta"] = meta
                    return result
                await anyio.sleep(min(max(state.poll_interval, 0.05), 5.0))
        raise MCPError(
            code=INTERNAL_ERROR,
            message=f"Task {params.task_id[:80]!r} is still running after "
            f"{TASK_RESULT_LIMIT / 60:.0f} minutes; ask tasks/result again later.",
        )

    async def _list(
        self, ctx: ServerRequestContext[ServerState, Any], params: ListParams
    ) -> HandlerResult:
        """``tasks/list``: the caller's jobs made through MCP, newest first, from the job book
        (the status last recorded; ``tasks/get`` reads the current one)."""
        try:
            offset = int(params.cursor or 0)
        except ValueError:
            raise MCPError(code=INVALID_PARAMS, message="Invalid cursor") from None
        if offset < 0:
            raise MCPError(code=INVALID_PARAMS, message="Invalid cursor")
        try:
            records = await self._service.recent(
                ctx.lifespan_context, ctx, offset + LIST_PAGE + 1, everyone=False
            )
        except MAIImageError as exc:
            raise MCPError(code=INTERNAL_ERROR, message=failure_of(exc).message) from None
        jobs = [r for r in records or () if r.request_id is not None][offset:]
        page = jobs[:LIST_PAGE]
        answer: dict[str, Any] = {"tasks": [_listed(r) for r in page]}
        if len(jobs) > LIST_PAGE:
            answer["nextCursor"] = str(offset + LIST_PAGE)
        return answer


def _created(task_id: str, default: datetime) -> datetime:
    return job_started_at(task_id) or default


def legacy_task(state: TaskState, status: str = "working") -> dict[str, Any]:
    """The 2025-11-25 ``Task`` object for a running job."""
    fields = task_fields(state, status)
    fields["ttl"] = fields.pop("ttlMs")
    fields["pollInterval"] = fields.pop("pollIntervalMs")
    return fields


def _legacy_fields(task_id: str, state: TaskState | CallToolResult) -> dict[str, Any]:
    if not isinstance(state, CallToolResult):
        return legacy_task(state)
    now = datetime.now(UTC)
    return {
        "taskId": task_id,
        "status": "failed" if state.is_error else "completed",
        "createdAt": _iso(_created(task_id, now)),
        "lastUpdatedAt": _iso(now),
        "ttl": TASK_TTL_MS,
    }


def _listed(record: JobRecord) -> dict[str, Any]:
    assert record.request_id is not None
    status = record.status or ""
    if status == "COMPLETED":
        state = "completed"
    elif status in ("FAILED", "ERROR"):
        state = "failed"
    else:
        state = "working"
    created = datetime.fromtimestamp(record.created, UTC)
    updated = datetime.fromtimestamp(max(record.updated, record.created), UTC)
    return {
        "taskId": record.request_id,
        "status": state,
        **({"statusMessage": status} if status else {}),
        "createdAt": _iso(created),
        "lastUpdatedAt": _iso(updated),
        "ttl": TASK_TTL_MS,
    }


class LegacyTasksSurface:
    """Server middleware: what the SDK (which knows tasks only as a 2026-07-28 extension) does
    not do for a 2025-11-25 client: the ``tasks`` capability in the ``initialize`` result,
    ``execution.taskSupport`` on the job tools, and the ``CreateTaskResult`` answer to a
    ``tools/call`` that asks for a task (the SDK checks a ``tools/call`` handler's answer
    against ``CallToolResult`` on that version, so the task is answered from here)."""

    def __init__(self, service: Service, confirmation: Confirmation | None = None) -> None:
        self._service = service
        self._confirmation = confirmation or Confirmation(
            ConfirmPolicy.from_settings(service.settings)
        )

    async def __call__(
        self, ctx: ServerRequestContext[Any, Any], call_next: CallNext
    ) -> HandlerResult:
        if ctx.method == "tools/call" and ctx.protocol_version == LEGACY_TASKS_VERSION:
            created = await self._task(ctx)
            if created is not None:
                return created
        result = await call_next(ctx)
        if not isinstance(result, dict):
            return result
        if ctx.method == "initialize" and result.get("protocolVersion") == LEGACY_TASKS_VERSION:
            capabilities = result.setdefault("capabilities", {})
            capabilities["tasks"] = {"list": {}, "cancel": {}, "requests": {"tools": {"call": {}}}}
        elif ctx.method == "tools/list" and ctx.protocol_version == LEGACY_TASKS_VERSION:
            for tool in result.get("tools", ()):
                if isinstance(tool, dict) and tool.get("name") in TASK_TOOLS:
                    tool["execution"] = {"taskSupport": "optional"}
        return result

    async def _task(self, ctx: ServerRequestContext[Any, Any]) -> dict[str, Any] | None:
        """The answer to a ``tools/call`` that asks for a task; None: not one (or invalid
        arguments, which the call path refuses in its own words)."""
        params = ctx.params or {}
        name = params.get("name")
        if not isinstance(params.get("task"), dict) or name not in TASK_TOOLS:
            return None
        try:
            args = ARGUMENTS[name].model_validate(params.get("arguments") or {})
            call = CallToolRequestParams.model_validate(params)
        except ValidationError:
            return None
        if not isinstance(args, GenerateArguments | EditArguments):
            return None
        # The limits' precheck, then the user's confirmation, as for any call (on this protocol
        # version a question is asked mid-call: never an input-required answer).
        stop = await self._confirmation.before_submit(ctx, call, name, args)
        if stop is not None:
            return _dump(stop) if isinstance(stop, CallToolResult) else None
        started = await self._service.start_task(ctx.lifespan_context, name, args, ctx)
        if isinstance(started, CallToolResult):
            return _dump(started)  # refused before a job existed: the same answer as a call
        return {"task": legacy_task(started)}
