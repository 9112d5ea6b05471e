"""Small inline previews of finished images: fetched at once, inside a time budget, size-capped.

A preview is a courtesy: the job is done and its URLs are in the answer whatever happens here.
So every image is fetched concurrently, the whole set gets one deadline (a preview still on its
way then is dropped, not waited for), an image that declares more than
:data:`MAX_PREVIEW_PIXELS` is never decoded (a 420 KB PNG can declare 12000x12000 pixels and
take half a gigabyte to decode), and no failure here ever reaches the caller. Images the call
already saved are read from disk instead of being fetched a second time from the CDN.
"""

from __future__ import annotations

import base64
import contextlib
import io
import logging
import warnings
from collections.abc import Sequence
from pathlib import Path

import anyio
import httpx
from mcp.types import ImageContent
from PIL import Image

from mai_tools._config import ssl_context
from mai_tools._constants import DOWNLOAD_TIMEOUT
from mai_tools._download import afetch_image

logger = logging.getLogger("mcp_server")

PREVIEW_BUDGET = 600 * 1024
"""Total base64 bytes of previews in one result: far under the 1 MiB some clients allow."""

MAX_PREVIEW_PIXELS = 40_000_000
"""Largest declared image (width x height) a preview is made of; larger ones are skipped."""

MAX_PREVIEW_DOWNLOAD = 25 * 1024 * 1024
"""Largest image file downloaded for a preview."""


class PreviewRefused(ValueError):
    """The image is not made into a preview (too many pixels, not an image)."""


def _check_declared_size(data: bytes) -> None:
    """Refuse before decoding: the header's width x height against the pixel cap."""
    with warnings.catch_warnings():
        # Pillow only warns between its own limit and twice that: a refusal here too.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(io.BytesIO(data)) as image:
                width, height = image.size
        except (OSError, Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
            raise PreviewRefused(f"not a previewable image ({exc})") from None
    if width * height > MAX_PREVIEW_PIXELS:
        raise PreviewRefused(
            f"the image declares {width}x{height} pixels, over the preview limit of "
            f"{MAX_PREVIEW_PIXELS // 1_000_000} MP"
        )


def thumbnail(data: bytes, side: int) -> bytes:
    """A JPEG of at most ``side`` pixels a side (decoding only what the size needs)."""
    with Image.open(io.BytesIO(data)) as image:
        image.draft("RGB", (side, side))  # JPEG: decode at a fraction of the size
        image.thumbnail((side, side))
        out = io.BytesIO()
        image.convert("RGB").save(out, "JPEG", quality=70)
        return out.getvalue()


def _read_saved(path: Path) -> bytes:
    with path.open("rb") as file:
        raw = file.read(MAX_PREVIEW_DOWNLOAD + 1)
    if len(raw) > MAX_PREVIEW_DOWNLOAD:
        raise PreviewRefused(f"{path.name} is over {MAX_PREVIEW_DOWNLOAD // 2**20} MiB")
    return raw


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
