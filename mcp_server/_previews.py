"""Small inline previews of finished images: fetched at once, inside a time budget, size-capped.

A preview is a courtesy: the job is done and its URLs are in the answer whatever happens here.
So every image is fetched concurrently, the whole set gets one deadline (a preview still on its
way then is dropped, not waited for), an image that declares more than
:data:`MAX_PREVIEW_PIXELS` is never decoded (a 420 KB PNG can declare 12000x12000 pixels and
take half a gigabyte to decode), and no failure here ever reaches the caller. Images the call
already saved are read from disk instead of being fetched a second time from the CDN.

The images themselves are made by :mod:`mai_tools._previews` (shared with ``view_image``).
"""

from __future__ import annotations

import base64
import contextlib
import logging
from collections.abc import Sequence
from pathlib import Path

import anyio
import httpx
from mcp.types import ImageContent

from mai_tools._config import ssl_context
from mai_tools._constants import DOWNLOAD_TIMEOUT
from mai_tools._download import afetch_image
from mai_tools._previews import (
    MAX_PREVIEW_DOWNLOAD,
    MAX_PREVIEW_PIXELS,
    PreviewRefused,
    check_declared_size,
    read_saved,
    thumbnail,
)

logger = logging.getLogger("mcp_server")

PREVIEW_BUDGET = 600 * 1024
"""Total base64 bytes of previews in one result: far under the 1 MiB some clients allow."""

# The preview-making code lives in the core package (``mai_tools._previews``), shared with
# view_image; these names stay importable from here.
_check_declared_size = check_declared_size
_read_saved = read_saved


async def _one(url: str, saved: Path | None, side: int, http: httpx.AsyncClient | None) -> bytes:
    if saved is not None:
        raw = await anyio.to_thread.run_sync(_read_saved, saved, abandon_on_cancel=True)
    else:
        raw = await afetch_image(url, http_client=http, max_bytes=MAX_PREVIEW_DOWNLOAD)
    _check_declared_size(raw)  # header only: cheap, and before any decoding
    # A thumbnail still in progress when the budget ends is abandoned (its thread finishes
    # on its own; the pixel cap bounds how long that can take).
    return await anyio.to_thread.run_sync(thumbnail, raw, side, abandon_on_cancel=True)


async def previews(
    urls: Sequence[str],
    *,
    side: int,
    budget: float,
    request_id: str,
    saved: Sequence[Path] = (),
) -> list[ImageContent]:
    """Previews of ``urls`` (in order; missing ones skipped), all made within ``budget`` s.

    ``saved``: the files the call saved, one per URL in order; read instead of downloading.
    No time left (``budget <= 0``) means no previews.
    """
    done: dict[int, bytes] = {}
    if budget <= 0 or not urls:
        if urls:
            logger.info("no previews for %s: the call's time was used up", request_id)
        return []
    local: list[Path | None] = list(saved) if len(saved) == len(urls) else [None] * len(urls)

    async def fetch(index: int, url: str, http: httpx.AsyncClient | None) -> None:
        try:
            done[index] = await _one(url, local[index], side, http)
        except Exception as exc:  # a preview never fails a finished job, whatever broke
            logger.info("no preview %d for %s: %s", index + 1, request_id, exc)

    # One client per call, and only when something must be fetched; with the process's one
    # TLS context (building a fresh one loads the CA bundle: it was a third of the server's
    # CPU under load).
    fetching = any(path is None for path in local)
    async with contextlib.AsyncExitStack() as stack:
        http = (
            await stack.enter_async_context(
                httpx.AsyncClient(timeout=DOWNLOAD_TIMEOUT, verify=ssl_context())
            )
            if fetching
            else None
        )
        with anyio.move_on_after(budget) as scope:
            async with anyio.create_task_group() as group:
                for index, url in enumerate(urls):
                    group.start_soon(fetch, index, url, http)
    if scope.cancelled_caught:
        logger.info(
            "previews for %s: %d of %d ready within %.1fs; the rest dropped",
            request_id,
            len(done),
            len(urls),
            budget,
        )
    contents: list[ImageContent] = []
    left = PREVIEW_BUDGET
    for index in sorted(done):
        encoded = base64.b64encode(done[index]).decode("ascii")
        if len(encoded) > left:
            break
        left -= len(encoded)
        contents.append(ImageContent(type="image", data=encoded, mime_type="image/jpeg"))
    return contents


__all__ = [
    "MAX_PREVIEW_DOWNLOAD",
    "MAX_PREVIEW_PIXELS",
    "PREVIEW_BUDGET",
    "PreviewRefused",
    "previews",
    "thumbnail",
]
