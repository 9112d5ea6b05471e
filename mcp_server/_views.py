"""view_image over MCP: one preview as ``ImageContent``, beside a line of text.

The flow (``mai_tools._views``) is the LangChain tool's; here the book is read as the caller
may see it: a request id through :meth:`~._service.Service._own` (another principal's job is
answered exactly like an unknown id, as get_image_job answers it), a bare URL only among the
caller's own finished jobs (every principal's for an operator).
"""

from __future__ import annotations

import base64

from mcp.types import CallToolResult, ImageContent, TextContent

from mai_tools._agent import Failed, Running, outcome_of
from mai_tools._exceptions import JobBookError, MAIImageError
from mai_tools._tools import ViewImageArgs
from mai_tools._views import Known, aview, running_text
from mai_tools.jobbook import JobRecord

from ._answers import answer
from ._identity import visible_principal
from ._service import Service, ToolContext, in_book


async def view_image(service: Service, ctx: ToolContext, args: ViewImageArgs) -> CallToolResult:
    """The preview ``args`` ask for; a job still running is said in text, not as an error."""
    state = ctx.request_context.lifespan_context
    try:
        api = state.api()
    except MAIImageError as exc:
        return await answer(outcome_of(exc), service.settings)
    book = state.book
    who = visible_principal(ctx.request_context, service.settings.operators)

    async def known(request_id: str) -> Known:
        return await service._own(book, ctx.request_context, request_id)

    async def by_url(url: str) -> JobRecord | None:
        if book is None:
            return None
        try:
            return await in_book(book, lambda b: b.find_image(url, principal=who))
        except JobBookError:  # a URL is fetched only when the book vouches for it
            return None

    outcome = await aview(
        api, args, known=known, by_url=by_url, fetch_timeout=service.settings.max_wait
    )
    if isinstance(outcome, Failed):
        return await answer(outcome, service.settings)
    if isinstance(outcome, Running):
        return CallToolResult(content=[TextContent(type="text", text=running_text(outcome))])
    encoded = base64.b64encode(outcome.preview.jpeg).decode("ascii")
    return CallToolResult(
        content=[
            TextContent(type="text", text=outcome.text),
            ImageContent(type="image", data=encoded, mime_type="image/jpeg"),
        ]
    )
