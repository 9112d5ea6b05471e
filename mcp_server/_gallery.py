"""The image gallery: an MCP Apps view (SEP-1865, extension ``io.modelcontextprotocol/ui``).

Chat hosts often collapse or drop image blocks, so the user gets a list of URLs. A host that
declares Apps support renders ``ui://mai-image/gallery.html`` (one HTML file with its script
and styles inline, ``gallery/app.html`` beside this module) for the tools bound to it
(``_meta.ui.resourceUri``) and hands it the tool's ordinary result: the images at full size
from their URLs, each with its request id, prompt and size, and actions that go back through
the host as the app's own tool calls ("edit this" calls ``edit_image``, "more like this"
calls ``generate_image``), plus open and download. The app only ever sees what the tool
returned, never a key; its CSP lets it load images from the image hosts and nothing else.

Every other client gets exactly the answer it got before the gallery existed. A client that
does support apps gets that answer without ``resource_link`` blocks (``--resource-links``):
in Claude a result holding a resource link stops the view from receiving the result; and its
get_image_job results name the job's tool and arguments in ``_meta`` (``JOB_META``), since
that call's own input is only a request id.
"""

from __future__ import annotations

from importlib import resources
from typing import Any
from urllib.parse import urlsplit

from mcp.server.apps import Apps, ResourceCsp, client_supports_apps
from mcp.server.context import ServerRequestContext
from mcp.types import CallToolResult, ResourceLink

from mai_tools._constants import DEFAULT_BASE_URL
from mai_tools._exceptions import JobBookError

from ._identity import visible_principal
from ._service import TOOL_OF_OPERATION, in_book
from ._settings import Settings
from ._state import ServerState

GALLERY_URI = "ui://mai-image/gallery.html"
GALLERY_TOOLS = frozenset({"generate_image", "edit_image", "get_image_job"})
"""The tools whose results the gallery shows (a finished get_image_job's images too)."""

CDN_ORIGIN = "https://pub-582b7213209642b9b995c96c95a30381.r2.dev"
"""Where the gateway's result images live (its R2 CDN, per the API documentation)."""

MAX_APP_BYTES = 60_000
"""The app's size budget (HTML, script and styles together)."""

JOB_META = "io.github.mai-tools/job"
"""The ``_meta`` key of a get_image_job result (for an Apps client) naming the job's tool and
arguments: ``_meta`` is for the view, not the model, and the call's own input holds only a
request id."""

_ARGUMENTS = ("prompt", "num_images", "aspect_ratio", "output_format")


def gallery_html() -> str:
    """The app: one self-contained HTML document shipped inside the package."""
    return resources.files(__package__).joinpath("gallery", "app.html").read_text("utf-8")


def image_origins(settings: Settings) -> list[str]:
    """The origins the app may load images from: the CDN, and the configured gateway's own
    origin when it is not the real gateway (the emulator serves its images itself)."""
    origins = [CDN_ORIGIN]
    if settings.base_url:
        parts = urlsplit(settings.base_url)
        origin = f"{parts.scheme}://{parts.netloc}"
        if origin != DEFAULT_BASE_URL and origin not in origins:
            origins.append(origin)
    return origins


def gallery_apps(settings: Settings) -> Apps:
    """The Apps extension serving the gallery resource (the tools are bound by ``tool_meta``)."""
    apps = Apps()
    apps.add_html_resource(
        GALLERY_URI,
        gallery_html(),
        name="gallery",
        title="MAI Image gallery",
        description="The images of a generate_image, edit_image or get_image_job result, with "
        "edit, variation, open and download actions.",
        csp=ResourceCsp(resource_domains=image_origins(settings)),
        prefers_border=True,
    )
    return apps


def tool_meta(tool: str) -> dict[str, Any] | None:
    """The ``_meta`` binding ``tool`` to the gallery (None for tools the gallery does not show)."""
    return {"ui": {"resourceUri": GALLERY_URI}} if tool in GALLERY_TOOLS else None


def for_client(result: CallToolResult, ctx: ServerRequestContext[Any, Any]) -> CallToolResult:
    """``result`` as this client gets it: unchanged, except that an Apps client (declared at
    initialize, or on 2026-07-28 in the request's capabilities: the SDK reads both) gets no
    ``resource_link`` blocks (they keep the view from receiving the result in Claude)."""
    links = [c for c in result.content if isinstance(c, ResourceLink)]
    if not links or not client_supports_apps(ctx):
        return result
    content = [c for c in result.content if not isinstance(c, ResourceLink)]
    return result.model_copy(update={"content": content})


async def with_job(
    result: CallToolResult, ctx: ServerRequestContext[ServerState, Any], settings: Settings
) -> CallToolResult:
    """For an Apps client, a get_image_job ``result`` with its job's tool and arguments in
    ``_meta`` (from the job book), so the gallery shows the prompt and offers "more like
    this". The caller's own jobs only (an operator's: any); nothing when the book does not
    hold the job or cannot be read, and nothing for any other client."""
    data = result.structured_content or {}
    request_id = data.get("request_id")
    book = ctx.lifespan_context.book
    if not isinstance(request_id, str) or book is None or not client_supports_apps(ctx):
        return result
    who = visible_principal(ctx, settings.operators)
    try:
        record = await in_book(book, lambda b: b.find(request_id, principal=who))
    except JobBookError:
        return result  # the images are shown all the same, without their prompt
    tool = TOOL_OF_OPERATION.get(record.operation) if record is not None else None
    if record is None or tool is None:
        return result
    arguments = {k: record.fields[k] for k in _ARGUMENTS if k in record.fields}
    sources = record.fields.get("image_urls")
    if isinstance(sources, list) and sources and str(sources[0]).startswith(("https:", "http:")):
        arguments["image"] = sources[0]  # a file or data URI the app could not use: left out
    meta = {**(result.meta or {}), JOB_META: {"tool": tool, "arguments": arguments}}
    return result.model_copy(update={"meta": meta})
