"""Saving result images: streamed, size-capped, type-checked, atomic.

File names come from the request id and the position of the image only, never from a URL,
a header or the prompt, so a hostile server cannot choose where a file lands. The API key is
never sent with a download (images live on a CDN, another origin).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import secrets
import weakref
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import IO, Any

import httpx

from ._config import ssl_context
from ._constants import DEFAULT_MAX_DOWNLOAD_BYTES, DOWNLOAD_HEADERS, DOWNLOAD_TIMEOUT
from ._exceptions import DownloadError, InvalidImageError
from ._images import decode_data_uri, extension_for, sniff_image_type

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_HEADERS = DOWNLOAD_HEADERS


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


def _no_saver() -> None:
    return None


class Saver:
    """How a client's results download their images: its connection pool and size limit.

    A result holds one so that ``result.save(dir)`` reuses the client's connections. It is
    not part of the result's data: it is dropped when the result is pickled or deep-copied,
    and ignored when results are compared (a result equals its own JSON round trip).

    Args:
        http: the sync client's ``httpx.Client`` (for :meth:`save`).
        ahttp: the async client's ``httpx.AsyncClient`` (for :meth:`asave`); used only from
            the event loop that was running when the Saver was made.
        max_bytes: the largest image written.
    """

    __slots__ = ("_ahttp", "_http", "_loop", "max_bytes")

    def __init__(
        self,
        *,
        http: httpx.Client | None = None,
        ahttp: httpx.AsyncClient | None = None,
        max_bytes: int = DEFAULT_MAX_DOWNLOAD_BYTES,
    ) -> None:
        self._http = http
        self._ahttp = ahttp
        self._loop: weakref.ref[asyncio.AbstractEventLoop] | None = None
        if ahttp is not None:
            self._loop = weakref.ref(asyncio.get_running_loop())
        self.max_bytes = max_bytes

    def _async_http(self) -> httpx.AsyncClient | None:
        # The client's connections belong to the event loop it ran in; another loop (a second
        # asyncio.run) must not touch them: it gets a fresh client instead.
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # pragma: no cover - asave always runs in a loop
            return None
        if self._loop is None or self._loop() is not loop:
            return None
        return self._ahttp

    def save(
        self,
        request_id: str,
        urls: list[str],
        directory: str | os.PathLike[str],
        *,
        http_client: httpx.Client | None = None,
        max_bytes: int | None = None,
    ) -> list[Path]:
        return save_images(
            request_id,
            urls,
            directory,
            http_client=http_client or self._http,
            max_bytes=self.max_bytes if max_bytes is None else max_bytes,
        )

    async def asave(
        self,
        request_id: str,
        urls: list[str],
        directory: str | os.PathLike[str],
        *,
        http_client: httpx.AsyncClient | None = None,
        max_bytes: int | None = None,
    ) -> list[Path]:
        return await asave_images(
            request_id,
            urls,
            directory,
            http_client=http_client or self._async_http(),
            max_bytes=self.max_bytes if max_bytes is None else max_bytes,
        )

    # Not data: equal to any other Saver (or none), and gone on pickle / deep copy.
    def __eq__(self, other: object) -> bool:
        return other is None or isinstance(other, Saver)

    __hash__ = None  # type: ignore[assignment]

    def __reduce__(self) -> tuple[Any, tuple[()]]:
        return (_no_saver, ())

    def __deepcopy__(self, memo: dict[int, Any]) -> None:
        return None

    def __repr__(self) -> str:
        return f"Saver(max_bytes={self.max_bytes})"
