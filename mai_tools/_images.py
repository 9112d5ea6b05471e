"""Image inputs and data URIs: turn a path, bytes or URL into what the gateway accepts.

Everything here is checked locally, before a request is sent: a missing file, a file that is
not an image, an oversized input or an unsupported URL scheme raises
:class:`~mai_tools.InvalidImageError` with a message that says how to fix it.
"""

from __future__ import annotations

import base64
import binascii
import errno
import os
import re
import stat
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Annotated, Final

from pydantic import BeforeValidator

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
            # Never quote the bytes: for an agent that would send file content to the model.
            f"The data ({_human(len(data))}) is not a PNG, JPEG, WEBP or GIF image. Convert it "
            "to PNG or JPEG first."
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


_OPEN_FLAGS: Final = (
    os.O_RDONLY
    | getattr(os, "O_BINARY", 0)  # Windows: no newline translation
    | getattr(os, "O_CLOEXEC", 0)
    | getattr(os, "O_NOCTTY", 0)  # a terminal device never becomes our controlling tty
    | getattr(os, "O_NONBLOCK", 0)  # a FIFO swapped in after the checks cannot hang the open
)
_O_NOFOLLOW: Final = getattr(os, "O_NOFOLLOW", 0)
_DIR_FLAGS: Final = (
    getattr(os, "O_PATH", os.O_RDONLY)  # Linux: a directory we may search but not list works
    | getattr(os, "O_DIRECTORY", 0)
    | getattr(os, "O_CLOEXEC", 0)
)


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    return "not a regular file"


def _check_regular(st: os.stat_result, shown: str, max_bytes: int) -> None:
    if not stat.S_ISREG(st.st_mode):
        raise InvalidImageError(f"{shown!r} is {_kind(st.st_mode)}, not a regular file.")
    if st.st_size > max_bytes:
        raise InvalidImageError(
            f"Image file {shown!r} is {_human(st.st_size)}, over the {_human(max_bytes)} "
            "limit. Downscale or recompress it first."
        )


def _read_fd(fd: int, shown: str, max_bytes: int) -> bytes:
    """Read at most ``max_bytes`` from an open file; a file that grew past it is refused."""
    chunks: list[bytes] = []
    total = 0
    while total <= max_bytes:
        chunk = os.read(fd, min(1024 * 1024, max_bytes + 1 - total))
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
    if total > max_bytes:
        raise InvalidImageError(
            f"Image file {shown!r} is over the {_human(max_bytes)} limit. Downscale or "
            "recompress it first."
        )
    return b"".join(chunks)


def read_image_file(path: Path, *, max_bytes: int) -> bytes:
    """Read a local image file a person named, refusing missing files, non-regular files
    (directories, FIFOs, devices) and oversized files.

    Symlinks and hard links are followed: the caller chose the path. The file is checked and
    read through one open descriptor, so what was checked is what is read.
    """
    shown = str(path)
    try:
        before = path.stat()
    except FileNotFoundError:
        raise InvalidImageError(
            f"No such image file: {shown!r}. Pass an existing file, an http(s) URL or a data: URI."
        ) from None
    except OSError as exc:
        raise InvalidImageError(f"Cannot read image file {shown!r}: {exc.strerror}") from None
    except ValueError:  # e.g. an embedded NUL byte: not a usable path at all
        raise InvalidImageError(
            f"{shown[:80]!r} is not a valid file path, http(s) URL or data: URI."
        ) from None
    # Refuse a FIFO or device before opening it: opening one can block or have effects.
    _check_regular(before, shown, max_bytes)
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except OSError as exc:
        raise InvalidImageError(f"Cannot read image file {shown!r}: {exc.strerror}") from None
    try:
        _check_regular(os.fstat(fd), shown, max_bytes)
        return _read_fd(fd, shown, max_bytes)
    except OSError as exc:
        raise InvalidImageError(f"Cannot read image file {shown!r}: {exc.strerror}") from None
    finally:
        os.close(fd)


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


_CONFINED_HOW: Final = (
    "Pass an http(s) URL or a data: URI instead, or have the application allow the "
    "directory (LangChain: allowed_dirs=[...]; MCP server: MAI_MCP_ALLOWED_DIRS)."
)


def allowed_directory(value: str | os.PathLike[str]) -> Path:
    """Check one configured allowed directory and make it absolute (``~`` expanded).

    An empty entry is refused: ``Path("")`` means the working directory, which nobody meant
    to allow (a stray ``::`` in a path list, ``--allow-dir ""``).

    Raises:
        ValueError: the entry is empty, or names the home of an unknown user.
    """
    text = os.fspath(value)
    if not text.strip():
        raise ValueError(
            "An allowed directory is empty; name the directory explicitly (an empty entry would "
            "otherwise mean the working directory)."
        )
    try:
        return Path(os.path.abspath(Path(text).expanduser()))
    except RuntimeError:  # "~name" for a user this machine does not know
        raise ValueError(
            f"Allowed directory {text[:80]!r}: no such user's home directory."
        ) from None


def _require_dirs(value: object) -> object:
    if isinstance(value, str | bytes | os.PathLike):
        raise ValueError("allowed_dirs must be a list of directories, not a single path.")
    if isinstance(value, Iterable):
        return tuple(allowed_directory(v) for v in value)
    return value  # pydantic reports the wrong type


AllowedDirs = Annotated[tuple[Path, ...], BeforeValidator(_require_dirs)]
"""A pydantic field type for allowed directories: no empty entry, each made absolute."""


def _allowed_roots(allowed_dirs: Sequence[str | os.PathLike[str]]) -> list[Path]:
    if not allowed_dirs:
        raise InvalidImageError(f"Reading local files is not allowed here. {_CONFINED_HOW}")
    roots = []
    for entry in allowed_dirs:
        if not os.fspath(entry).strip():
            raise InvalidImageError(
                "The application's list of allowed directories has an empty entry, so no local "
                "file is read (an empty entry never means the working directory). The "
                "application must name each directory."
            )
        roots.append(Path(entry).expanduser().resolve(strict=False))
    return roots


def _confine(text: str, allowed_dirs: Sequence[str | os.PathLike[str]]) -> tuple[Path, Path]:
    """The resolved target and the allowed root it lies in."""
    roots = _allowed_roots(allowed_dirs)
    try:
        target = Path(text).expanduser().resolve(strict=False)
    except (OSError, ValueError, RuntimeError):
        raise InvalidImageError(
            f"{text[:80]!r} is not a usable file path. {_CONFINED_HOW}"
        ) from None
    for root in roots:
        if target == root or root in target.parents:
            return target, root
    raise InvalidImageError(f"{text[:80]!r} is outside the allowed directories. {_CONFINED_HOW}")


def confined_path(text: str, allowed_dirs: Sequence[str | os.PathLike[str]]) -> Path:
    """Resolve a local path an agent asked for, only if it lies inside an allowed directory.

    The path is resolved through symlinks and ``..`` before the check. This is only the first
    check: read the file with :func:`read_confined_image`, which opens it without following
    links and checks the opened file, so a link swapped in after this check cannot escape.

    Raises:
        InvalidImageError: no directory is allowed, an allowed entry is empty, or the path
            lies outside all of them.
    """
    return _confine(text, allowed_dirs)[0]


def _open_below(root: Path, parts: Sequence[str], shown: str) -> int:
    """Open ``root/parts...`` one component at a time, following no symlink below ``root``.

    A component that became a symlink after the path was resolved fails to open (``ELOOP`` or
    ``ENOTDIR``) instead of leading outside ``root``.
    """
    dir_fd = os.open(root, _DIR_FLAGS)
    try:
        for part in parts[:-1]:
            next_fd = os.open(part, _DIR_FLAGS | _O_NOFOLLOW, dir_fd=dir_fd)
            os.close(dir_fd)
            dir_fd = next_fd
        # Refuse a FIFO or device before opening it: opening one can block or have effects.
        before = os.stat(parts[-1], dir_fd=dir_fd, follow_symlinks=False)
        if not stat.S_ISREG(before.st_mode):
            raise InvalidImageError(f"{shown!r} is {_kind(before.st_mode)}, not a regular file.")
        return os.open(parts[-1], _OPEN_FLAGS | _O_NOFOLLOW, dir_fd=dir_fd)
    finally:
        os.close(dir_fd)


def _open_confined(target: Path, root: Path, shown: str) -> int:
    parts = target.relative_to(root).parts
    if not parts:
        raise InvalidImageError(f"{shown!r} is a directory, not a regular file.")
    if _O_NOFOLLOW and os.open in os.supports_dir_fd and os.stat in os.supports_dir_fd:
        return _open_below(root, parts, shown)
    # No openat() (Windows): open the resolved path, then check below that the opened file is
    # still the one that path names.
    fd = os.open(target, _OPEN_FLAGS | _O_NOFOLLOW)
    try:
        if not os.path.samestat(os.fstat(fd), os.stat(target, follow_symlinks=False)):
            raise InvalidImageError(f"{shown!r} changed while it was being opened; try again.")
    except BaseException:
        os.close(fd)
        raise
    return fd


def _opened_inside(fd: int, root: Path) -> bool:
    """Where the open file really is, by the kernel's account (Linux ``/proc``): inside ``root``?

    A second, independent check: it also catches an allowed directory renamed and replaced
    between resolving the path and opening it. True where ``/proc`` is not available.
    """
    try:
        real = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return True
    where = Path(real)
    return where == root or root in where.parents


def read_confined_image(
    text: str,
    allowed_dirs: Sequence[str | os.PathLike[str]],
    *,
    max_bytes: int = DEFAULT_MAX_INPUT_BYTES,
) -> bytes:
    """Read an image file an agent named, only from inside the allowed directories.

    The file is opened first and the opened file is checked, then read from that same
    descriptor: no symlink is followed below the allowed directory (so swapping one in after
    the path check cannot lead outside), and the file must be a regular file with one link (a
    hard link inside an allowed directory may be any file), within ``max_bytes``, and an image.
    FIFOs and devices are refused without being opened. Messages never quote the file's bytes.

    Raises:
        InvalidImageError: anything refused, with the reason and how to fix it.
    """
    target, root = _confine(text, allowed_dirs)
    shown = text[:200]
    try:
        fd = _open_confined(target, root, shown)
    except FileNotFoundError:
        raise InvalidImageError(
            f"No such image file: {shown!r}. Pass an existing file, an http(s) URL or a data: URI."
        ) from None
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR, getattr(errno, "EMLINK", -1)):
            raise InvalidImageError(
                f"{shown!r} could not be opened inside the allowed directories (a part of the "
                f"path is or became a symbolic link). {_CONFINED_HOW}"
            ) from None
        raise InvalidImageError(f"Cannot read image file {shown!r}: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        _check_regular(st, shown, max_bytes)
        if st.st_nlink > 1:
            raise InvalidImageError(
                f"{shown!r} has {st.st_nlink} hard links; a hard-linked file may be a file from "
                "outside the allowed directories, so it is not read. Copy the image into the "
                "directory instead."
            )
        if not _opened_inside(fd, root):
            raise InvalidImageError(
                f"{shown!r} is outside the allowed directories. {_CONFINED_HOW}"
            )
        data = _read_fd(fd, shown, max_bytes)
    except OSError as exc:
        raise InvalidImageError(f"Cannot read image file {shown!r}: {exc.strerror}") from None
    finally:
        os.close(fd)
    if not data:
        raise InvalidImageError(f"Image file {shown!r} is empty (0 bytes).")
    if sniff_image_type(data) is None:  # said without quoting any byte of the file
        raise InvalidImageError(
            f"{shown!r} is not a PNG, JPEG, WEBP or GIF image. Convert it to PNG or JPEG first."
        )
    return data


def agent_image_argument(text: str, allowed_dirs: Sequence[str | os.PathLike[str]]) -> str | bytes:
    """The ``image`` argument of an agent-facing tool: a URL or data URI, or the bytes of a
    local image read with :func:`read_confined_image`.

    The file is read here, once: handing on a path would let it change before it is read.

    Raises:
        InvalidImageError: another URL scheme, or a path that is refused.
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
    return read_confined_image(value, allowed_dirs)
