"""The MCP server: generate_image, edit_image, get_image_job, view_image, list_recent_jobs.

The tools only translate: arguments in (checked first by ``_tasks.ImageTasks``, in the
server's own words), ``mai_tools._agent`` outcomes out (``_answers``). The job logic (waiting
with progress, orphan adoption, tasks) is in ``_service``.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Annotated, Any

from mcp.server.context import ServerRequestContext
from mcp.server.mcpserver import MCPServer
from mcp.types import CallToolResult, TextContent, ToolAnnotations
from pydantic import BaseModel, Field

from mai_tools import AsyncMAIImageClient, WebhookReceiver, __version__
from mai_tools._agent import ImageJobResult
from mai_tools._exceptions import JobBookError
from mai_tools._tools import (
    TOOLS,
    EditImageArgs,
    GenerateImageArgs,
    ImageJobArgs,
    ToolSpec,
    ViewImageArgs,
)
from mai_tools.jobbook import JobScope

from ._arguments import LimitField
from ._confirm import (
    Confirmation,
    ConfirmPolicy,
    ImageArguments,
    Precheck,
    request_state_security,
)
from ._gallery import for_client, gallery_apps, tool_meta, with_job
from ._identity import is_operator, principal
from ._limits import check_limits
from ._resume import MemoryEventStore
from ._service import SURFACE, TOOL_OF_OPERATION, Service, ToolContext
from ._settings import Settings
from ._state import ServerState, lifespan
from ._tasks import ImageTasks, LegacyTasksSurface
from ._views import view_image

logger = logging.getLogger("mcp_server")

INSTRUCTIONS = (
    "Generate and edit images with Microsoft MAI Image 2.5. generate_image and edit_image "
    "return image URLs and a request_id. If an answer says the job is still running, call "
    "get_image_job with its request_id (calling generate_image again would pay for a second "
    "job). To change an image, pass its URL to edit_image."
)

LIST_JOBS_DESCRIPTION = (
    "List your recent image jobs (newest first), including those of earlier server runs: "
    "request_id, prompt, last known status and URLs. Use it to find a request_id that was lost."
)

_UNSERVED = ("prompts/list", "prompts/get")
"""Handlers the SDK registers for every server; this one serves no prompts (its resources: the
gallery app alone, ``_gallery``; resource templates: none, an empty list)."""


class RecentJobInfo(BaseModel):
    request_id: str
    tool: str
    prompt: str
    started_at: str = Field(description="ISO 8601, UTC.")
    status: str = Field(
        description="The last status recorded (UNKNOWN: the submit may have reached the gateway, "
        "but no request id was recorded)."
    )
    image_urls: list[str]
    principal: str | None = Field(
        None,
        description="Whose job it is (only in an operator's list, which holds every "
        "principal's jobs).",
    )


class RecentJobs(BaseModel):
    """The structured answer of list_recent_jobs."""

    jobs: list[RecentJobInfo]


ToolBody = Callable[[ToolContext, ToolSpec, BaseModel], Awaitable[CallToolResult]]


def _tool_function(spec: ToolSpec, body: ToolBody) -> Callable[..., Awaitable[CallToolResult]]:
    """The function the SDK registers for ``spec``: its parameters are the spec's argument
    fields (so the tool's input schema is the spec's), plus the request context."""

    async def tool(ctx: ToolContext, **arguments: Any) -> CallToolResult:
        return await body(ctx, spec, spec.arguments.model_validate(arguments))

    fields = [
        inspect.Parameter(
            name,
            inspect.Parameter.KEYWORD_ONLY,
            annotation=Annotated[
                (field.annotation, *field.metadata, Field(description=field.description))
            ],
            default=inspect.Parameter.empty if field.is_required() else field.default,
        )
        for name, field in spec.arguments.model_fields.items()
    ]
    context = inspect.Parameter(
        "ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=ToolContext
    )
    # A job tool answers with ImageJobResult (its output schema); view_image with an image.
    returns: Any = (
        CallToolResult
        if spec.arguments is ViewImageArgs
        else Annotated[CallToolResult, ImageJobResult]
    )
    tool.__name__ = tool.__qualname__ = spec.name
    tool.__signature__ = inspect.Signature([context, *fields], return_annotation=returns)  # type: ignore[attr-defined]
    tool.__annotations__ = {"ctx": ToolContext, **{p.name: p.annotation for p in fields}}
    tool.__annotations__["return"] = returns
    return tool


def create_server(
    settings: Settings | None = None,
    *,
    client: AsyncMAIImageClient | None = None,
    event_store: MemoryEventStore | None = None,
    webhooks: WebhookReceiver | None = None,
    precheck: Precheck | None = None,
) -> MCPServer[ServerState]:
    """Build the MCP server.

    Args:
        settings: configuration; default ``Settings.from_env()``.
        client: an AsyncMAIImageClient to use (the caller closes it); by default the server
            makes one from the settings each time it starts (its lifespan) and closes it when
            it stops. Without a key the server still starts and lists its tools.
        event_store: the HTTP app's event store (the streamable-HTTP transport passes its
            own), so a waiting call knows whether a disconnected client may still resume.
        webhooks: push waiting for those clients: a receiver mounted on the server's HTTP app
            (``mai-image-mcp --webhook-public-url``).
        precheck: the hard spending limits' check, run before a costly call is put to the
            user for confirmation (``confirm_above``, ``confirm_above_cost``): its refusal is the
            answer, nothing is asked or sent. Default: the check of the settings' spending limits.
    """
    settings = settings or Settings.from_env()
    service = Service(settings, event_store)

    async def limits_first(
        ctx: ServerRequestContext[Any, Any], tool: str, args: ImageArguments
    ) -> CallToolResult | None:
        # The hard spending limits, checked (nothing reserved) before anyone is asked.
        scope = JobScope(principal(ctx), SURFACE)
        return await check_limits(settings, ctx.lifespan_context, scope, tool, args)

    confirmation = Confirmation(ConfirmPolicy.from_settings(settings), precheck or limits_first)
    mcp = MCPServer(
        "mai-image",
        title="MAI Image 2.5",
        instructions=INSTRUCTIONS,
        version=__version__,
        lifespan=lifespan(settings, client, webhooks),
        # The SDK sets up root logging at this level unless the host already did.
        log_level=settings.log_level,
        extensions=[ImageTasks(service, confirmation), gallery_apps(settings)],
        # Learns each client's tool-call timeout from its cancellations (calls answer within it).
        middleware=[service.host_timeouts, LegacyTasksSurface(service, confirmation)],
        subscriptions=False,  # nothing here changes: no list_changed streams to offer
        request_state_security=request_state_security(settings),
    )
    for method in _UNSERVED:
        # Capabilities are derived from the registered handlers: advertise only what is served.
        mcp._lowlevel_server._request_handlers.pop(method, None)
    creates = ToolAnnotations(
        read_only_hint=False, destructive_hint=False, idempotent_hint=False, open_world_hint=True
    )
    reads = ToolAnnotations(
        read_only_hint=True, destructive_hint=False, idempotent_hint=True, open_world_hint=True
    )

    async def run_tool(ctx: ToolContext, spec: ToolSpec, args: BaseModel) -> CallToolResult:
        if isinstance(args, ImageJobArgs):
            resumed = await service.resume(ctx, args.request_id.strip())
            result = await with_job(resumed, ctx.request_context, settings)
        elif isinstance(args, ViewImageArgs):
            result = await view_image(service, ctx, args)
        elif isinstance(args, GenerateImageArgs | EditImageArgs):
            result = await service.call(ctx, spec.name, args)
        else:
            raise TypeError(f"{spec.name}: no handler for {type(args).__name__}")
        return for_client(result, ctx.request_context)

    for spec in TOOLS:
        mcp.add_tool(
            _tool_function(spec, run_tool),
            name=spec.name,
            title=spec.title,
            description=spec.description,
            annotations=creates if spec.creates_job else reads,
            meta=tool_meta(spec.name),
        )

    @mcp.tool(title="List recent jobs", description=LIST_JOBS_DESCRIPTION, annotations=reads)
    async def list_recent_jobs(
        ctx: ToolContext, limit: LimitField = 10
    ) -> Annotated[CallToolResult, RecentJobs]:
        state = ctx.request_context.lifespan_context
        operator = is_operator(ctx.request_context, settings.operators)
        try:
            records = await service.recent(state, ctx.request_context, limit)
        except JobBookError as exc:
            return CallToolResult(
                content=[TextContent(type="text", text=f"The job list cannot be read: {exc}")],
                is_error=True,
            )
        jobs = [
            RecentJobInfo(
                request_id=job.request_id or "",
                tool=TOOL_OF_OPERATION.get(job.operation, job.operation),
                prompt=job.prompt or "",
                started_at=datetime.fromtimestamp(job.created, UTC).isoformat(timespec="seconds"),
                status=job.status or ("QUEUED" if job.state == "submitted" else "UNKNOWN"),
                image_urls=job.image_urls,
                principal=job.principal if operator else None,
            )
            for job in records or ()
            if job.request_id is not None or job.state == "unknown"
        ]
        lines = [
            (f"[{j.principal}]  " if j.principal is not None else "")
            + f"{j.request_id or '(no request id)'}  {j.status}  {j.started_at}  "
            + f"{j.tool}: {j.prompt}"
            for j in jobs
        ]
        if not lines:
            lines = ["No image jobs yet." if records is not None else "The job book is off."]
        return CallToolResult(
            content=[TextContent(type="text", text="\n".join(lines))],
            structured_content=RecentJobs(jobs=jobs).model_dump(mode="json"),
        )

    return mcp
