"""Draw the emulator's images: real, decodable, and visibly derived from the request."""

from __future__ import annotations

import hashlib
import io
import random
import textwrap
from typing import Final

from PIL import Image, ImageDraw, ImageFont, ImageOps

PIL_FORMATS: Final = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}
MEDIA_TYPES: Final = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}


class SourceTooLargeError(ValueError):
    """An edit source declares more pixels than the emulator decodes (a 400)."""


def prepare_source(
    data: bytes, *, long_side: int, max_pixels: int
) -> tuple[bytes | None, tuple[int, int] | None]:
    """Check an edit source's declared size, then keep a small copy of it.

    The size is read from the header and checked before any pixel is decoded, so a small
    file that declares a huge image (a decompression bomb) costs nothing; Pillow's own bomb
    guard (``Image.MAX_IMAGE_PIXELS``) counts the same way. An accepted source is decoded
    once (JPEGs at a reduced scale), shrunk to at most ``long_side`` on its long side (the
    output's size: more is never drawn) and kept as a JPEG, so a kept job holds kilobytes,
    not the 20 MiB that was sent.

    Returns (kept bytes, size as sent); (None, None) when the bytes do not decode (the edit
    is then drawn without them, as before). Raises :class:`SourceTooLargeError`.
    """
    try:
        with Image.open(io.BytesIO(data)) as opened:
            width, height = opened.size
            if width * height > max_pixels:
                raise SourceTooLargeError(_too_large(width, height, max_pixels))
            opened.thumbnail((long_side, long_side))  # decodes (JPEG: drafted), then shrinks
            small = opened.convert("RGB")
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        # Pillow refused the declared size first (it reads it on open, as we do).
        raise SourceTooLargeError(_too_large(0, 0, max_pixels)) from None
    except SourceTooLargeError:
        raise
    except Exception:  # undecodable: the gateway's model would fail on it, we draw anyway
        return None, None
    out = io.BytesIO()
    small.save(out, "JPEG", quality=90)
    return out.getvalue(), (width, height)


def _too_large(width: int, height: int, max_pixels: int) -> str:
    declared = (
        f"is {width}x{height} ({width * height:,} pixels)"
        if width
        else "declares too many pixels to decode safely"
    )
    return (
        f"image_urls[0]: the image {declared}; the limit is {max_pixels:,} pixels. "
        "Send a smaller image."
    )


def size_for(
    aspect_ratio: str, long_side: int, source: tuple[int, int] | None = None
) -> tuple[int, int]:
    """Output (width, height): long side ``long_side``; ``auto`` is 1:1 or the source's ratio."""
    if aspect_ratio == "auto":
        if source is None or min(source) <= 0:
            return long_side, long_side
        w, h = source
    else:
        a, b = aspect_ratio.split(":")
        w, h = int(a), int(b)
    if w >= h:
        return long_side, max(1, round(long_side * h / w))
    return max(1, round(long_side * w / h)), long_side


def _palette(
    prompt: str, index: int
) -> tuple[random.Random, tuple[int, int, int], tuple[int, int, int]]:
    digest = hashlib.sha256(f"{prompt}\x00{index}".encode()).digest()
    rng = random.Random(digest)
    c1 = (digest[0], digest[1], digest[2])
    c2 = (255 - digest[3] // 2, digest[4] // 2 + 64, 255 - digest[5])
    return rng, c1, c2


def _gradient(size: tuple[int, int], prompt: str, index: int) -> Image.Image:
    rng, c1, c2 = _palette(prompt, index)
    gray = Image.linear_gradient("L").rotate(rng.uniform(0, 360), expand=False).resize(size)
    img = ImageOps.colorize(gray, c1, c2).convert("RGB")
    draw = ImageDraw.Draw(img, "RGBA")
    w, h = size
    for _ in range(6):
        r = rng.uniform(0.05, 0.25) * min(w, h)
        x, y = rng.uniform(0, w), rng.uniform(0, h)
        color = (rng.randrange(256), rng.randrange(256), rng.randrange(256), 90)
        draw.ellipse((x - r, y - r, x + r, y + r), fill=color)
    return img


def _caption(img: Image.Image, lines: list[str], *, opacity: int = 150) -> None:
    w, h = img.size
    size = max(10, min(w, h) // 22)
    font = ImageFont.load_default(size=size)
    draw = ImageDraw.Draw(img, "RGBA")
    pad = size // 2
    line_h = int(size * 1.25)
    box_h = line_h * len(lines) + 2 * pad
    draw.rectangle((0, h - box_h, w, h), fill=(0, 0, 0, opacity))
    y = h - box_h + pad
    for line in lines:
        line_font = font
        room = w - 2 * pad
        width = font.getlength(line)
        if width > room:  # shrink a long line (the request id) so it stays readable in full
            line_font = ImageFont.load_default(size=max(8, int(size * room / width)))
        draw.text((pad, y), line, fill=(255, 255, 255, 255), font=line_font)
        y += line_h


def render(
    *,
    prompt: str,
    request_id: str,
    index: int,
    total: int,
    aspect_ratio: str,
    output_format: str,
    long_side: int,
    source: bytes | None = None,
    source_size: tuple[int, int] | None = None,
) -> bytes:
    """One output image as encoded bytes.

    Generations are a gradient seeded by the prompt; edits are the source image, tinted by
    the prompt's palette. Both carry the prompt, the request id and the image number.
    ``source_size`` (the source's size as sent, if it was shrunk since) sets ``auto``'s ratio.
    """
    src: Image.Image | None = None
    if source is not None:
        try:
            with Image.open(io.BytesIO(source)) as opened:
                src = opened.convert("RGB")
        except Exception:  # an undecodable source still gets an edit, just not derived from it
            src = None
    size = size_for(aspect_ratio, long_side, source_size or (src.size if src is not None else None))
    img = _gradient(size, prompt, index)
    if src is not None:
        img = Image.blend(ImageOps.fit(src, size), img, 0.35)
    kind = "edit" if source is not None else "image"
    chars = max(20, size[0] // max(10, min(size) // 22) * 2)
    wrapped = textwrap.wrap(prompt, width=chars)[:4] or [""]
    # An edit of one of our own images has a caption where the new one goes: cover it.
    _caption(
        img,
        [f"MAI Image 2.5 (emulator) - {kind} {index + 1}/{total}", *wrapped, request_id],
        opacity=255 if source is not None else 150,
    )
    out = io.BytesIO()
    fmt = PIL_FORMATS[output_format]
    if fmt == "JPEG":
        img.save(out, fmt, quality=85)
    elif fmt == "WEBP":
        img.save(out, fmt, quality=80)
    else:
        img.save(out, fmt, compress_level=1)
    return out.getvalue()
