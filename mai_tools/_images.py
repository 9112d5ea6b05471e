"""Image inputs and data URIs: turn a path, bytes or URL into what the gateway accepts.

Everything here is checked locally, before a request is sent: a missing file, a file that is
not an image, an oversized input or an unsupported URL scheme raises
:class:`~mai_tools.InvalidImageError` with a message that says how to fix it.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from ._constants import DEFAULT_MAX_INPUT_BYTES
from ._exceptions import InvalidImageError
from ._urls import split_url

ImageInput = str | os.PathLike[str] | bytes
"""An image given to ``edit``: http(s) URL, data: URI, local path, or raw bytes."""

SUPPORTED_INPUT_TYPES: Final = ("image/png", "image/jpeg", "image/webp", "image/gif")
_EXTENSIONS: Final = {
    "image/png": "png",
    "image/jpeg": "jpg",
    "image/webp": "webp",
    "image/gif": "gif",
}
_DATA_URI = re.compile(r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?P<params>(;[^;,]*)*?),", re.I)


def sniff_image_type(data: bytes) -> str | None:
    """Return the MIME type of image bytes from their magic number, or None."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    return None


def extension_for(mime: str | None) -> str | None:
    """File extension (without dot) for a supported image MIME type."""
    if mime is None:
        return None
    return _EXTENSIONS.get(mime.split(";", 1)[0].strip().lower())


def _human(n: int) -> str:
    return f"{n / (1024 * 1024):.1f} MiB" if n >= 1024 * 1024 else f"{n} bytes"


def bytes_to_data_uri(data: bytes, *, max_bytes: int = DEFAULT_MAX_INPUT_BYTES) -> str:
    """Encode image bytes as a ``data:`` URI, checking type and size."""
    if not data:
        raise InvalidImageError("The image is empty (0 bytes).")
    if len(data) > max_bytes:
        raise InvalidImageError(
            f"The image is {_human(len(data))}, over the {_human(max_bytes)} limit. "
            "Downscale or recompress it, or pass a public http(s) URL instead."
        )
    mime = sniff_image_type(data)
    if mime is None:
        raise InvalidImageError(
            "The data is not a PNG, JPEG, WEBP or GIF image (its first bytes are "
            f"{data[:8]!r}). Convert it to PNG or JPEG first."
        )
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def decode_data_uri(uri: str, *, max_bytes: int | None = None) -> tuple[str | None, bytes]:
    """Decode a ``data:`` URI into (declared MIME type, bytes).

    Raises:
        InvalidImageError: when it is not a well-formed base64 data URI, or too large.
    """
    match = _DATA_URI.match(uri)
    if match is None:
        raise InvalidImageError("Malformed data: URI; expected 'data:image/png;base64,<data>'.")
    params = (match.group("params") or "").lower()
    if ";base64" not in params:
        raise InvalidImageError("Only base64 data: URIs are supported (';base64,' is missing).")
    payload = uri[match.end() :]
    if max_bytes is not None and len(payload) * 3 // 4 > max_bytes + 3:
        raise InvalidImageError(
            f"The data: URI holds about {_human(len(payload) * 3 // 4)}, over the "
            f"{_human(max_bytes)} limit."
        )
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidImageError(f"The data: URI is not valid base64 ({exc}).") from None
    mime = match.group("mime")
    return (mime.lower() if mime else None), data


def _check_data_uri(uri: str, max_bytes: int) -> str:
    declared, data = decode_data_uri(uri, max_bytes=max_bytes)
    if declared is not None and not declared.startswith(("image/", "application/octet-stream")):
        raise InvalidImageError(f"The data: URI declares {declared!r}, not an image type.")
    # Re-encode from the sniffed type: a wrong or missing declared type is corrected.
    return bytes_to_data_uri(data, max_bytes=max_bytes)


_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):")


def _check_http_url(url: str) -> str:
    parts = split_url(url)
    if parts is None:
        raise InvalidImageError(f"The image URL {url[:100]!r} is malformed.")
    if not parts.netloc or not parts.hostname:
        raise InvalidImageError(f"The image URL {url[:100]!r} has no host.")
    if any(c.isspace() for c in url):
        raise InvalidImageError("The image URL contains whitespace; percent-encode it.")
    return url


def read_image_file(path: Path, *, max_bytes: int) -> bytes:
    """Read a local image file, refusing missing files, directories and oversized files."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise InvalidImageError(
            f"No such image file: {str(path)!r}. Pass an existing file, an http(s) URL or a "
            "data: URI."
        ) from None
    except OSError as exc:
        raise InvalidImageError(f"Cannot read image file {str(path)!r}: {exc.strerror}") from None
    except ValueError:  # e.g. an embedded NUL byte: not a usable path at all
        raise InvalidImageError(
            f"{str(path)[:80]!r} is not a valid file path, http(s) URL or data: URI."
        ) from None
    if not path.is_file():
        raise InvalidImageError(f"{str(path)!r} is not a regular file.")
    if st.st_size > max_bytes:
        raise InvalidImageError(
            f"Image file {str(path)!r} is {_human(st.st_size)}, over the {_human(max_bytes)} "
            "limit. Downscale or recompress it first."
        )
    try:
        with path.open("rb") as fh:
            return fh.read(max_bytes + 1)
    except OSError as exc:
        raise InvalidImageError(f"Cannot read image file {str(path)!r}: {exc.strerror}") from None


def image_to_url(image: ImageInput, *, max_bytes: int = DEFAULT_MAX_INPUT_BYTES) -> str:
    """Normalise an image input into an http(s) URL or a ``data:`` URI for ``image_urls``.

    Args:
        image: an http(s) URL, a ``data:`` URI, a local path (``str`` or ``os.PathLike``),
            or raw image bytes.
        max_bytes: largest accepted image, in bytes (local files, bytes and data URIs).

    Raises:
        InvalidImageError: missing file, not an image, too large, or an unsupported scheme.
    """
    if isinstance(image, bytes | bytearray | memoryview):
        return bytes_to_data_uri(bytes(image), max_bytes=max_bytes)
    if isinstance(image, os.PathLike):
        path = Path(os.fspath(image))
    elif isinstance(image, str):
        text = image.strip()
        if not text:
            raise InvalidImageError("The image is an empty string; pass a path, URL or bytes.")
        lowered = text[:8].lower()
        if lowered.startswith("data:"):
            return _check_data_uri(text, max_bytes)
        if lowered.startswith(("http://", "https://")):
            return _check_http_url(text)
        match = _SCHEME.match(text)
        scheme = match.group(1).lower() if match else ""
        # One-letter schemes are Windows drive letters (C:\...), not URLs.
        if len(scheme) > 1 and "://" in text:
            raise InvalidImageError(
                f"Unsupported image URL scheme {scheme!r}: use an http(s) URL, a data: URI, "
                "a local file path or raw bytes."
            )
        try:
            path = Path(text).expanduser()
        except RuntimeError:  # "~name" for a user this machine does not know
            raise InvalidImageError(
                f"No such image file: {text[:80]!r} (no such user's home directory). Pass an "
                "existing file, an http(s) URL or a data: URI."
            ) from None
    else:
        raise InvalidImageError(
            f"Unsupported image type {type(image).__name__}; pass a path, URL, data: URI or bytes."
        )
    data = read_image_file(path, max_bytes=max_bytes)
    try:
        return bytes_to_data_uri(data, max_bytes=max_bytes)
    except InvalidImageError as exc:
        raise InvalidImageError(f"{str(path)!r}: {exc}") from None


def confined_path(text: str, allowed_dirs: Sequence[str | os.PathLike[str]]) -> Path:
    """Resolve a local path an agent asked for, only if it lies inside an allowed directory.

    The path is resolved through symlinks and ``..`` before the check, so neither can escape.
    Used by the LangChain tools and the MCP server, where a model, not a person, names files.

    Raises:
        InvalidImageError: no directory is allowed, or the path lies outside all of them.
    """
    how = (
        "Pass an http(s) URL or a data: URI instead, or have the application allow the "
        "directory (LangChain: allowed_dirs=[...]; MCP server: MAI_MCP_ALLOWED_DIRS)."
    )
    if not allowed_dirs:
        raise InvalidImageError(f"Reading local files is not allowed here. {how}")
    try:
        target = Path(text).expanduser().resolve(strict=False)
    except (OSError, ValueError, RuntimeError):
        raise InvalidImageError(f"{text[:80]!r} is not a usable file path. {how}") from None
    for allowed in allowed_dirs:
        root = Path(allowed).expanduser().resolve(strict=False)
        if target == root or root in target.parents:
            return target
    raise InvalidImageError(f"{text[:80]!r} is outside the allowed directories. {how}")


def agent_image_argument(text: str, allowed_dirs: Sequence[str | os.PathLike[str]]) -> str | Path:
    """The ``image`` argument of an agent-facing tool: a URL, a data URI or a confined path.

    Raises:
        InvalidImageError: another URL scheme, or a path outside the allowed directories.
    """
    value = text.strip()
    if value[:8].lower().startswith(("http://", "https://", "data:")):
        return value
    match = _SCHEME.match(value)
    if match and len(match.group(1)) > 1 and "://" in value:
        raise InvalidImageError(
            f"Unsupported image URL scheme {match.group(1).lower()!r}: pass an http(s) URL or "
            "a data: URI."
        )
    return confined_path(value, allowed_dirs)
