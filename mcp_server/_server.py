"""The MCP server: generate_image, edit_image and get_image_job over one shared async client."""

from __future__ import annotations

import asyncio
import base64
import io
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Annotated, Any

import anyio
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import CallToolResult, ImageContent, ResourceLink, TextContent, ToolAnnotations
from PIL import Image
from pydantic import Field

from mai_tools import (
    AsyncMAIImageClient,
    ImageResult,
    JobStatus,
    MAIImageError,
    __version__,
    _duration_cache,
)
from mai_tools._agent import (
    Done,
    Failed,
    ImageJobResult,
    Outcome,
    answer_text,
    arun,
    outcome_of,
    structured,
)
from mai_tools._download import afetch_image
from mai_tools._images import agent_image_argument
from mai_tools._models import (
    EditAspectRatioField,
    EditPrompt,
    GenerateAspectRatioField,
    NumImages,
    OutputFormatField,
    Prompt,
)

from ._settings import PREVIEW_SIZES, Settings

logger = logging.getLogger("mcp_server")

PREVIEW_BUDGET = 600 * 1024
"""Total base64 bytes of previews in one result: far under the 1 MiB some clients allow."""

INSTRUCTIONS = (
    "Generate and edit images with Microsoft MAI Image 2.5. generate_image and edit_image "
    "return image URLs. If a result says the job is still running, call get_image_job with "
    "its request_id. To change an image, pass its URL to edit_image."
)


class _Clients:
    """One AsyncMAIImageClient per event loop (a server normally has exactly one)."""

    def __init__(self, settings: Settings, client: AsyncMAIImageClient | None) -> None:
        self.settings = settings
        self._given = client
        self._clients: dict[int, AsyncMAIImageClient] = {}

    def get(self) -> AsyncMAIImageClient:
        if self._given is not None:
            return self._given
        loop = id(asyncio.get_running_loop())
        client = self._clients.get(loop)
        if client is None:
            client = AsyncMAIImageClient(
                self.settings.api_key,
                base_url=self.settings.base_url,
                wait_timeout=self.settings.max_wait,
            )
            if self.settings.remember_durations:
                _duration_cache.restore(client.durations, self._durations_key(client))
            self._clients[loop] = client
        return client

    def _durations_key(self, client: AsyncMAIImageClient) -> str:
        return self.settings.durations_key or client.base_url

    async def remember(self, client: AsyncMAIImageClient) -> None:
        """Save what ``client`` has learned about job durations (if the settings say so)."""
        if self.settings.remember_durations and client is not self._given:
            # File I/O off the event loop: other calls keep being served meanwhile.
            await anyio.to_thread.run_sync(
                _duration_cache.store, client.durations, self._durations_key(client)
            )

    async def aclose(self) -> None:
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            await client.aclose()


def _thumbnail(data: bytes, side: int) -> bytes:
    with Image.open(io.BytesIO(data)) as image:
        image.thumbnail((side, side))
        out = io.BytesIO()
        image.convert("RGB").save(out, "JPEG", quality=70)
        return out.getvalue()


async def _previews(result: ImageResult, settings: Settings) -> list[ImageContent]:
    if settings.preview == "off":
        return []
    side = PREVIEW_SIZES[settings.preview]
    previews: list[ImageContent] = []
    budget = PREVIEW_BUDGET
    for url in result.image_urls:
        try:
            raw = await afetch_image(url, http_client=None)
            small = await anyio.to_thread.run_sync(_thumbnail, raw, side)
        except (MAIImageError, OSError) as exc:
            logger.info("no preview for %s: %s", result.request_id, exc)
            continue
        encoded = base64.b64encode(small).decode("ascii")
        if len(encoded) > budget:
            break
        budget -= len(encoded)
        previews.append(ImageContent(type="image", data=encoded, mime_type="image/jpeg"))
    return previews


async def _answer(outcome: Outcome, settings: Settings) -> CallToolResult:
    """The tool result: the shared text and structured answer, plus links and previews."""
    if isinstance(outcome, Failed):
        raise ToolError(outcome.message)
    content: list[Any] = [
        TextContent(type="text", text=answer_text(outcome, inline_shown="see the previews"))
    ]
    if isinstance(outcome, Done):
        result = outcome.result
        if not result.has_data_uris:
            for index, url in enumerate(result.image_urls):
                content.append(
                    ResourceLink(
                        type="resource_link",
                        uri=url,
                        name=f"{result.request_id}-{index + 1}",
                        mime_type=result.media_type,
                    )
                )
        content.extend(await _previews(result, settings))
    return CallToolResult(
        content=content, structured_content=structured(outcome).model_dump(mode="json")
    )


async def _run_job(
    ctx: Context,
    clients: _Clients,
    job: Callable[
        [AsyncMAIImageClient, Callable[[JobStatus, float], Awaitable[None]]],
        Awaitable[ImageResult],
    ],
) -> CallToolResult:
    """Run one job with progress on every status change and a heartbeat every few seconds."""
    settings = clients.settings
    try:
        api = clients.get()
    except MAIImageError as exc:
        return await _answer(outcome_of(exc), settings)
    start = time.monotonic()
    state = {"status": "SUBMITTING", "request_id": ""}

    async def report() -> None:
        elapsed = time.monotonic() - start
        rid = f" {state['request_id']}" if state["request_id"] else ""
        await ctx.report_progress(elapsed, None, f"{state['status']} {elapsed:.0f}s{rid}")

    async def on_status(status: JobStatus, elapsed: float) -> None:
        state["status"] = status.status.value
        state["request_id"] = status.request_id
        await report()

    async def heartbeat() -> None:
        while True:
            await anyio.sleep(settings.heartbeat)
            await report()

    async with anyio.create_task_group() as group:
        group.start_soon(heartbeat)
        try:
            outcome = await arun(
                lambda: job(api, on_status), save_to=settings.output_dir, budget=settings.max_wait
            )
        finally:
            group.cancel_scope.cancel()
    if isinstance(outcome, Done):
        await clients.remember(api)
    return await _answer(outcome, settings)


def create_server(
    settings: Settings | None = None, *, client: AsyncMAIImageClient | None = None
) -> MCPServer:
    """Build the MCP server.

    Args:
        settings: configuration; default ``Settings.from_env()``.
        client: an AsyncMAIImageClient to use (tests); by default one is made per event loop
            from the settings, on first use, so the server starts and lists tools with no key.
    """
    settings = settings or Settings.from_env()
    clients = _Clients(settings, client)

    @asynccontextmanager
    async def lifespan(server: MCPServer) -> AsyncIterator[dict[str, Any]]:
        try:
            yield {}
        finally:
            await clients.aclose()

    mcp = MCPServer(
        "mai-image",
        title="MAI Image 2.5",
        instructions=INSTRUCTIONS,
        version=__version__,
        lifespan=lifespan,
        # The SDK sets up root logging at this level unless the host already did.
        log_level=settings.log_level,
    )
    annotations = ToolAnnotations(
        read_only_hint=False, destructive_hint=False, idempotent_hint=False, open_world_hint=True
    )

    @mcp.tool(title="Generate image", annotations=annotations)
    async def generate_image(
        prompt: Prompt,
        ctx: Context,
        num_images: NumImages = 1,
        aspect_ratio: GenerateAspectRatioField = "auto",
        output_format: OutputFormatField = "png",
    ) -> Annotated[CallToolResult, ImageJobResult]:
        """Generate images from a text description with Microsoft MAI Image 2.5.

        Returns the image URLs (one per line), a link and a small preview per image, and the
        request_id. If the job is still running when the wait ends, call get_image_job.
        """
        return await _run_job(
            ctx,
            clients,
            lambda api, on_status: api.generate(
                prompt,
                num_images=num_images,
                aspect_ratio=aspect_ratio,
                output_format=output_format,
                timeout=settings.max_wait,
                on_status=on_status,
            ),
        )

    @mcp.tool(title="Edit image", annotations=annotations)
    async def edit_image(
        prompt: EditPrompt,
        image: Annotated[
            str,
            Field(
                min_length=1,
                description=(
                    "The image to edit: an http(s) URL (for example from generate_image) or a "
                    "data: URI. Local paths work only inside directories the user allowed in "
                    "the server configuration (MAI_MCP_ALLOWED_DIRS)."
                ),
            ),
        ],
        ctx: Context,
        num_images: NumImages = 1,
        aspect_ratio: EditAspectRatioField = "auto",
        output_format: OutputFormatField = "png",
    ) -> Annotated[CallToolResult, ImageJobResult]:
        """Edit an existing image with Microsoft MAI Image 2.5 following an instruction.

        Returns the new image URLs, links, previews and the request_id; if the job is still
        running when the wait ends, call get_image_job.
        """
        return await _run_job(
            ctx,
            clients,
            lambda api, on_status: api.edit(
                prompt,
                agent_image_argument(image, settings.allowed_dirs),
                num_images=num_images,
                aspect_ratio=aspect_ratio,
                output_format=output_format,
                timeout=settings.max_wait,
                on_status=on_status,
            ),
        )

    @mcp.tool(title="Get image job", annotations=annotations)
    async def get_image_job(
        request_id: Annotated[
            str,
            Field(
                min_length=1,
                max_length=256,
                description="The request_id returned by generate_image or edit_image.",
            ),
        ],
        ctx: Context,
    ) -> Annotated[CallToolResult, ImageJobResult]:
        """Wait for an image job started earlier and return its images (same shape as
        generate_image). Use it when a tool said the job is still running."""
        return await _run_job(
            ctx,
            clients,
            lambda api, on_status: api.wait(
                request_id.strip(), timeout=settings.max_wait, on_status=on_status
            ),
        )

    return mcp
