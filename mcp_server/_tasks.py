"""MCP Tasks (SEP-2663, extension ``io.modelcontextprotocol/tasks``, protocol 2026-07-28).

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

from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.extension import Extension, MethodBinding
from mcp.shared.exceptions import MCPError
from mcp.types import CallToolRequestParams, CallToolResult, TextContent
from mcp_types import CLIENT_CAPABILITIES_META_KEY, INTERNAL_ERROR, INVALID_PARAMS, RequestParams
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from pydantic import ConfigDict, Field, ValidationError

from mai_tools import MAIImageError
from mai_tools._agent import failure_of, validation_text

from ._arguments import ARGUMENTS, EditArguments, GenerateArguments
from ._confirm import Confirmation, ConfirmPolicy
from ._service import Service, TaskState, UnknownTask, job_started_at
from ._state import ServerState

logger = logging.getLogger("mcp_server")

TASKS_EXTENSION = "io.modelcontextprotocol/tasks"
TASK_TOOLS = frozenset({"generate_image", "edit_image"})
TASK_TTL_MS = 24 * 3600 * 1000
"""How long a task id stays readable, as far as this server is concerned: the gateway keeps
results for a time it does not document; nothing here expires."""
_MODERN = frozenset(MODERN_PROTOCOL_VERSIONS)


class TaskParams(RequestParams):
    """``tasks/get`` and ``tasks/cancel`` parameters."""

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
        return (
            MethodBinding("tasks/get", TaskParams, self._get, protocol_versions=_MODERN),
            MethodBinding("tasks/cancel", TaskParams, self._cancel, protocol_versions=_MODERN),
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
            return await self._service.read_task(ctx.lifespan_context, task_id, ctx)
        except UnknownTask as exc:
            raise MCPError(
                code=INVALID_PARAMS, message=f"Unknown task {task_id[:80]!r}: {exc}"
            ) from None
        except MAIImageError as exc:  # no key or a misconfiguration: no task can be read
            raise MCPError(code=INTERNAL_ERROR, message=failure_of(exc).message) from None

    async def _get(
        self, ctx: ServerRequestContext[ServerState, Any], params: TaskParams
    ) -> HandlerResult:
        state = await self._read(ctx, params.task_id)
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


def _created(task_id: str, default: datetime) -> datetime:
    return job_started_at(task_id) or default
