"""Saving result images: streamed, size-capped, type-checked, atomic.

File names come from the request id and the position of the image only, never from a URL,
a header or the prompt, so a hostile server cannot choose where a file lands. The API key is
never sent with a download (images live on a CDN, another origin).
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Final

import httpx

from ._exceptions import DownloadError, InvalidImageError
from ._flow import ssl_context
from ._images import decode_data_uri, extension_for, sniff_image_type
from ._version import __version__

if TYPE_CHECKING:
    from ._models import ImageResult

DEFAULT_MAX_DOWNLOAD_BYTES: Final = 64 * 1024 * 1024
DOWNLOAD_TIMEOUT: Final = httpx.Timeout(60.0, connect=10.0)
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_HEADERS: Final = {"User-Agent": f"mai-tools/{__version__}", "Accept": "image/*"}


def safe_stem(request_id: str) -> str:
    """A file-name stem derived from a request id (no separators, no dot-files)."""
    stem = _UNSAFE.sub("_", request_id).strip("._") or "image"
    return stem[:150]


def target_path(directory: Path, request_id: str, index: int, mime: str) -> Path:
    ext = extension_for(mime) or "img"
    return directory / f"{safe_stem(request_id)}_{index + 1}.{ext}"


def _check_download_url(url: str) -> None:
    if not url.lower().startswith(("http://", "https://")):
        raise DownloadError(f"Refusing to download from a non-http(s) URL: {url[:60]!r}")


def _check_response(url: str, response: httpx.Response) -> None:
    """Refuse an error status or a declared non-image body before reading it."""
    if response.status_code != 200:
        raise DownloadError(f"{url[:100]} answered HTTP {response.status_code}.")
    kind = response.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if kind and not kind.startswith("image/") and kind != "application/octet-stream":
        raise DownloadError(f"{url[:100]} is {kind!r}, not an image; not saved.")


def _disk_error(directory: Path, exc: OSError) -> DownloadError:
    return DownloadError(f"Cannot write in directory {str(directory)!r}: {exc.strerror or exc}")


def _create_part_file(directory: Path) -> tuple[int, Path]:
    """A new, exclusive temporary file in ``directory``.

    Unlike ``tempfile.mkstemp`` (always 0600), the mode follows the umask, as for any file a
    program saves: the renamed image ends up 0644 under the usual umask, not private.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        path = directory / f".mai-{secrets.token_hex(8)}.part"
        try:
            return os.open(path, flags, 0o666), path
        except FileExistsError:
            continue
        except OSError as exc:
            raise _disk_error(directory, exc) from None
    raise DownloadError(f"Cannot create a temporary file in {str(directory)!r}.")


class _Sink:
    """A temporary file next to the target, renamed into place when complete."""

    def __init__(self, directory: Path, url: str, max_bytes: int) -> None:
        self.directory = directory
        self.url = url
        self.max_bytes = max_bytes
        self.size = 0
        self.head = b""
        fd, self.tmp = _create_part_file(directory)
        self.fh: IO[bytes] = os.fdopen(fd, "wb")

    def write(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self.max_bytes:
            raise DownloadError(
                f"{self.url[:100]} is larger than the {self.max_bytes} byte download limit; "
                "not saved."
            )
        if len(self.head) < 16:
            self.head += chunk[:16]
        try:
            self.fh.write(chunk)
        except OSError as exc:  # disk full, file size limit, I/O error
            raise _disk_error(self.directory, exc) from None

    def commit(self, request_id: str, index: int) -> Path:
        try:
            self.fh.close()
        except OSError as exc:
            raise _disk_error(self.directory, exc) from None
        mime = sniff_image_type(self.head)
        if mime is None:
            raise DownloadError(f"{self.url[:100]} did not return PNG/JPEG/WEBP/GIF data.")
        final = target_path(self.directory, request_id, index, mime)
        try:
            os.replace(self.tmp, final)
        except OSError as exc:  # e.g. a directory already has the image's name
            raise DownloadError(f"Cannot save {str(final)!r}: {exc.strerror or exc}") from None
        return final

    def discard(self) -> None:
        with contextlib.suppress(OSError):
            self.fh.close()
        with contextlib.suppress(OSError):
            self.tmp.unlink()


def _prepare(directory: str | os.PathLike[str]) -> Path:
    try:
        path = Path(directory).expanduser()
    except RuntimeError:  # "~name" for a user this machine does not know
        raise DownloadError(
            f"Cannot create directory {os.fspath(directory)!r}: no such user's home directory."
        ) from None
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DownloadError(f"Cannot create directory {str(path)!r}: {exc.strerror}") from None
    except ValueError:  # an embedded NUL byte
        raise DownloadError(f"{str(path)[:80]!r} is not a usable directory name.") from None
    return path


def _save_data_uri(directory: Path, request_id: str, index: int, uri: str, max_bytes: int) -> Path:
    try:
        _, data = decode_data_uri(uri, max_bytes=max_bytes)
    except InvalidImageError as exc:
        raise DownloadError(f"Image {index + 1} of {request_id}: {exc}") from None
    sink = _Sink(directory, "data: URI", max_bytes)
    try:
        sink.write(data)
        return sink.commit(request_id, index)
    finally:
        sink.discard()


@contextlib.contextmanager
def _sync_client(client: httpx.Client | None) -> Iterator[httpx.Client]:
    if client is not None and not client.is_closed:
        yield client
        return
    with httpx.Client(timeout=DOWNLOAD_TIMEOUT, verify=ssl_context()) as fresh:
        yield fresh


@contextlib.asynccontextmanager
async def _async_client(client: httpx.AsyncClient | None) -> AsyncIterator[httpx.AsyncClient]:
    if client is not None and not client.is_closed:
        yield client
        return
    async with httpx.AsyncClient(timeout=DOWNLOAD_TIMEOUT, verify=ssl_context()) as fresh:
        yield fresh


def save_images(
    request_id: str,
    urls: list[str],
    directory: str | os.PathLike[str],
    *,
    http_client: httpx.Client | None = None,
    max_bytes: int = DEFAULT_MAX_DOWNLOAD_BYTES,
) -> list[Path]:
    """Download (or decode) each image into ``directory``; see :meth:`ImageResult.save`."""
    folder = _prepare(directory)
    saved: list[Path] = []
    with _sync_client(http_client) as client:
        for index, url in enumerate(urls):
            if url.startswith("data:"):
                saved.append(_save_data_uri(folder, request_id, index, url, max_bytes))
                continue
            _check_download_url(url)
            sink = _Sink(folder, url, max_bytes)
            try:
                with client.stream(
                    "GET", url, headers=_HEADERS, follow_redirects=True, timeout=DOWNLOAD_TIMEOUT
                ) as response:
                    _check_response(url, response)
                    for chunk in response.iter_bytes():
                        sink.write(chunk)
                saved.append(sink.commit(request_id, index))
            except httpx.HTTPError as exc:
                raise DownloadError(f"Downloading {url[:100]} failed: {exc}") from exc
            finally:
                sink.discard()
    return saved


async def asave_images(
    request_id: str,
    urls: list[str],
    directory: str | os.PathLike[str],
    *,
    http_client: httpx.AsyncClient | None = None,
    max_bytes: int = DEFAULT_MAX_DOWNLOAD_BYTES,
) -> list[Path]:
    """Async twin of :func:`save_images`."""
    folder = _prepare(directory)
    saved: list[Path] = []
    async with _async_client(http_client) as client:
        for index, url in enumerate(urls):
            if url.startswith("data:"):
                saved.append(_save_data_uri(folder, request_id, index, url, max_bytes))
                continue
            _check_download_url(url)
            sink = _Sink(folder, url, max_bytes)
            try:
                async with client.stream(
                    "GET", url, headers=_HEADERS, follow_redirects=True, timeout=DOWNLOAD_TIMEOUT
                ) as response:
                    _check_response(url, response)
                    async for chunk in response.aiter_bytes():
                        sink.write(chunk)
                saved.append(sink.commit(request_id, index))
            except httpx.HTTPError as exc:
                raise DownloadError(f"Downloading {url[:100]} failed: {exc}") from exc
            finally:
                sink.discard()
    return saved


def save_or_report(
    result: ImageResult, directory: str | os.PathLike[str] | None
) -> tuple[list[Path], str | None]:
    """Save ``result`` into ``directory`` (if given) for a tool's answer: (paths, why not saved).

    The job is finished (and charged) whatever happens on disk, so a failed save is reported
    next to the URLs instead of failing the call, which would invite a second, paid job.
    """
    if directory is None:
        return [], None
    try:
        return result.save(directory), None
    except DownloadError as exc:
        return [], str(exc)


async def asave_or_report(
    result: ImageResult, directory: str | os.PathLike[str] | None
) -> tuple[list[Path], str | None]:
    """Async twin of :func:`save_or_report`."""
    if directory is None:
        return [], None
    try:
        return await result.asave(directory), None
    except DownloadError as exc:
        return [], str(exc)


def not_saved_note(save_error: str) -> str:
    """The line a tool adds to its answer when saving failed."""
    return f"not saved to disk ({save_error}); the images above are ready."


async def afetch_image(
    url: str,
    *,
    http_client: httpx.AsyncClient | None = None,
    max_bytes: int = DEFAULT_MAX_DOWNLOAD_BYTES,
) -> bytes:
    """Read one result image into memory (no key sent), size-capped and checked to be an image.

    ``data:`` URIs are decoded. Used for previews, where nothing is written to disk.

    Raises:
        DownloadError: the download failed, was too large, or was not an image.
    """
    if url.startswith("data:"):
        try:
            _, data = decode_data_uri(url, max_bytes=max_bytes)
        except InvalidImageError as exc:
            raise DownloadError(str(exc)) from None
    else:
        _check_download_url(url)
        chunks: list[bytes] = []
        size = 0
        try:
            async with (
                _async_client(http_client) as client,
                client.stream(
                    "GET", url, headers=_HEADERS, follow_redirects=True, timeout=DOWNLOAD_TIMEOUT
                ) as response,
            ):
                _check_response(url, response)
                async for chunk in response.aiter_bytes():
                    size += len(chunk)
                    if size > max_bytes:
                        raise DownloadError(f"{url[:100]} is larger than {max_bytes} bytes.")
                    chunks.append(chunk)
        except httpx.HTTPError as exc:
            raise DownloadError(f"Downloading {url[:100]} failed: {exc}") from exc
        data = b"".join(chunks)
    if sniff_image_type(data[:16]) is None:
        raise DownloadError(f"{url[:60]} did not return PNG/JPEG/WEBP/GIF data.")
    return data
