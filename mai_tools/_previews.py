"""Small JPEG previews of result images, for a model to look at or a chat to show.

Both adapters use these: the MCP server's inline previews (``mcp_server._previews``) and the
``view_image`` tool of LangChain and MCP (``mai_tools._views``). An image whose header
declares more than :data:`MAX_PREVIEW_PIXELS` is never decoded (a 420 KB PNG can declare
12000x12000 pixels and take half a gigabyte to decode); a JPEG is decoded at a reduced scale
(``draft``), so a preview costs a fraction of a full decode.

A preview for a model (:func:`model_preview`) also fits a size budget: its base64 is what a
model's context pays for on every later turn, so the quality, then the size, is lowered until
it fits.
"""

from __future__ import annotations

import io
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from PIL import Image

from ._constants import MAX_VIEW_SIZE, MIN_VIEW_SIZE, VIEW_SIZE

MAX_PREVIEW_PIXELS: Final = 40_000_000
"""Largest declared image (width x height) a preview is made of; larger ones are refused."""

MAX_PREVIEW_DOWNLOAD: Final = 25 * 1024 * 1024
"""Largest image file downloaded (or read) for a preview."""

VIEW_BUDGET: Final = 20 * 1024
"""Base64 characters of one ``view_image`` preview at the default size (about 15 KB of JPEG);
larger sizes get a budget grown with their area, up to :data:`MAX_VIEW_BUDGET`."""
MAX_VIEW_BUDGET: Final = 150 * 1024
"""Base64 characters of the largest preview: far under what MCP clients and chat APIs take."""

_QUALITIES: Final = (75, 62, 50, 38)
"""JPEG qualities tried, best first, before the preview is made smaller."""
_SHRINK: Final = 0.8


class PreviewRefused(ValueError):
    """The image is not made into a preview (too many pixels, not an image)."""


def check_declared_size(data: bytes) -> tuple[int, int]:
    """The image's (width, height) from its header, refused over the pixel cap, before any
    pixel is decoded.

    Raises:
        PreviewRefused: not an image Pillow reads, or too many pixels.
    """
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
    return width, height


def thumbnail(data: bytes, side: int) -> bytes:
    """A JPEG of at most ``side`` pixels a side (decoding only what the size needs)."""
    with Image.open(io.BytesIO(data)) as image:
        image.draft("RGB", (side, side))  # JPEG: decode at a fraction of the size
        image.thumbnail((side, side))
        out = io.BytesIO()
        image.convert("RGB").save(out, "JPEG", quality=70)
        return out.getvalue()


def read_saved(path: Path) -> bytes:
    """A saved image's bytes, refused over :data:`MAX_PREVIEW_DOWNLOAD`."""
    with path.open("rb") as file:
        raw = file.read(MAX_PREVIEW_DOWNLOAD + 1)
    if len(raw) > MAX_PREVIEW_DOWNLOAD:
        raise PreviewRefused(f"{path.name} is over {MAX_PREVIEW_DOWNLOAD // 2**20} MiB")
    return raw


def base64_length(size: int) -> int:
    """How many base64 characters ``size`` bytes become."""
    return 4 * math.ceil(size / 3)


def view_budget(size: int) -> int:
    """The base64 budget of a ``size`` px preview: :data:`VIEW_BUDGET` at the default size,
    grown with the area above it, capped at :data:`MAX_VIEW_BUDGET`."""
    scale = max(size / VIEW_SIZE, 1.0) ** 2
    return min(int(VIEW_BUDGET * scale), MAX_VIEW_BUDGET)


@dataclass(frozen=True)
class Preview:
    """A JPEG preview and what it was made from."""

    jpeg: bytes
    width: int
    height: int
    original: tuple[int, int]
    """The source image's (width, height)."""
    quality: int


def model_preview(data: bytes, size: int, budget: int | None = None) -> Preview:
    """A JPEG of ``data`` at most ``size`` px on its long side whose base64 is at most
    ``budget`` characters (default :func:`view_budget`): the quality goes down first, then
    the size, until it fits (the smallest, 64 px, is kept whatever it weighs).

    Blocks (decoding): async callers run it in a worker thread.

    Raises:
        PreviewRefused: not an image, or too many pixels (checked before decoding).
    """
    budget = view_budget(size) if budget is None else budget
    original = check_declared_size(data)
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.draft("RGB", (size, size))
            image.thumbnail((size, size))
            source = image.convert("RGB")
    except (OSError, ValueError) as exc:  # a header Pillow reads over a body it cannot decode
        raise PreviewRefused(f"not a previewable image ({exc})") from None
    side = max(source.size)
    while True:
        scaled = source
        if side < max(source.size):
            scaled = source.copy()
            scaled.thumbnail((side, side))
        for quality in _QUALITIES:
            out = io.BytesIO()
            scaled.save(out, "JPEG", quality=quality, optimize=True)
            jpeg = out.getvalue()
            if base64_length(len(jpeg)) <= budget or (
                side <= MIN_VIEW_SIZE and quality == _QUALITIES[-1]
            ):
                return Preview(jpeg, scaled.width, scaled.height, original, quality)
        side = max(int(side * _SHRINK), MIN_VIEW_SIZE)


__all__ = [
    "MAX_PREVIEW_DOWNLOAD",
    "MAX_PREVIEW_PIXELS",
    "MAX_VIEW_BUDGET",
    "MAX_VIEW_SIZE",
    "MIN_VIEW_SIZE",
    "VIEW_BUDGET",
    "VIEW_SIZE",
    "Preview",
    "PreviewRefused",
    "base64_length",
    "check_declared_size",
    "model_preview",
    "read_saved",
    "thumbnail",
    "view_budget",
]
