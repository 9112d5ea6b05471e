"""Saving result images: streamed, size-capped, type-checked, atomic, within a deadline.

File names come from the request id and the position of the image only, never from a URL,
a header or the prompt, so a hostile server cannot choose where a file lands. The API key is
never sent with a download (images live on a CDN, another origin). How one image is fetched
(retries, per-host limits, the deadline) is :mod:`mai_tools._fetch`.

A save is bounded as a whole (``timeout=``, default ``DEFAULT_SAVE_TIMEOUT``). The async path
downloads the images of a result concurrently (bounded per host). The sync path downloads them
one after the other in a worker thread and waits for it at most until the deadline: a thread
blocked in a read cannot be interrupted, so this is the only way the caller gets its answer
on time whatever the host does; the abandoned worker stops at its next chunk and renames
nothing. One connection per save is also what a throttling CDN prefers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import secrets
import threading
import weakref
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, TypeVar

import httpx

from . import _telemetry
from ._config import call_timeout
from ._constants import DEFAULT_MAX_DOWNLOAD_BYTES, DEFAULT_SAVE_TIMEOUT
from ._exceptions import DownloadError, InvalidArgumentError, InvalidImageError
from ._fetch import (
    Deadline,
    afetch,
    async_client,
    check_download_url,
    fetch,
    first_error,
    sync_client,
)
from ._images import decode_data_uri, extension_for, sniff_image_type
from ._policies import RetryPolicy

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
T = TypeVar("T")


def safe_stem(request_id: str) -> str:
    """A file-name stem derived from a request id (no separators, no dot-files)."""
    stem = _UNSAFE.sub("_", request_id).strip("._") or "image"
    return stem[:150]


def check_file_stem(name: object) -> str:
    """``name`` if it is usable as a file-name stem for saved images, else a clear error."""
    if not isinstance(name, str) or not name.strip():
        raise InvalidArgumentError(
            "name must be a non-empty file-name stem, e.g. 'lighthouse' (files become "
            "lighthouse_1.png, ...)."
        )
    if "/" in name or "\\" in name or "\0" in name or name.strip() in (".", ".."):
        raise InvalidArgumentError(
            f"name must be a file name, not a path ({name[:80]!r}): pass the folder as the "
            "directory and only the stem as name."
        )
    return name


def write_sidecar(directory: Path, stem: str, data: dict[str, object]) -> Path:
    """Write ``<stem>.json`` beside the saved images (atomically: temporary file, rename)."""
    path = directory / f"{safe_stem(stem)}.json"
    text = json.dumps(data, indent=2, default=str, ensure_ascii=False) + "\n"
    fd, part = _create_part_file(directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write(text)
        Path(part).replace(path)
    except OSError as exc:
        Path(part).unlink(missing_ok=True)
        raise _disk_error(directory, exc) from None
    return path


def target_path(directory: Path, request_id: str, index: int, mime: str) -> Path:
    ext = extension_for(mime) or "img"
    return directory / f"{safe_stem(request_id)}_{index + 1}.{ext}"


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

    def reset(self) -> None:
        """Start over (a retried download)."""
        self.size = 0
        self.head = b""
        try:
            self.fh.seek(0)
            self.fh.truncate()
        except OSError as exc:
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


class _Buffer:
    """An image read into memory (previews), size-capped."""

    def __init__(self, url: str, max_bytes: int) -> None:
        self.url = url
        self.max_bytes = max_bytes
        self.chunks: list[bytes] = []
        self.size = 0

    def write(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self.max_bytes:
            raise DownloadError(f"{self.url[:100]} is larger than {self.max_bytes} bytes.")
        self.chunks.append(chunk)

    def reset(self) -> None:
        self.chunks, self.size = [], 0


def _split(
    request_id: str, urls: list[str], folder: Path, max_bytes: int
) -> tuple[dict[int, Path], list[tuple[int, str]]]:
    """Save the inline images now; check every URL before anything is downloaded."""
    saved: dict[int, Path] = {}
    remote: list[tuple[int, str]] = []
    for index, url in enumerate(urls):
        if url.startswith("data:"):
            saved[index] = _save_data_uri(folder, request_id, index, url, max_bytes)
        else:
            remote.append((index, check_download_url(url)))
    return saved, remote


def _commit(sink: _Sink, request_id: str, index: int, deadline: Deadline) -> Path:
    # Under the deadline's lock: once a sync save has been given up on, nothing is renamed.
    with deadline.lock:
        deadline.check(sink.url)
        return sink.commit(request_id, index)


def _download_to_file(
    client: httpx.Client,
    folder: Path,
    request_id: str,
    index: int,
    url: str,
    max_bytes: int,
    deadline: Deadline,
    policy: RetryPolicy,
) -> Path:
    sink = _Sink(folder, url, max_bytes)
    with deadline.lock:
        if deadline.abandoned.is_set():
            sink.discard()
            raise deadline.expired(url)
        deadline.parts.add(sink.tmp)
    try:
        with _telemetry.download(request_id, index, url):
            fetch(client, url, sink, deadline, policy)
        return _commit(sink, request_id, index, deadline)
    finally:
        sink.discard()
        deadline.parts.discard(sink.tmp)


async def _adownload_to_file(
    client: httpx.AsyncClient,
    folder: Path,
    request_id: str,
    index: int,
    url: str,
    max_bytes: int,
    deadline: Deadline,
    policy: RetryPolicy,
) -> Path:
    sink = _Sink(folder, url, max_bytes)
    try:
        with _telemetry.download(request_id, index, url):
            await afetch(client, url, sink, deadline, policy)
        return _commit(sink, request_id, index, deadline)
    finally:
        sink.discard()


def _within(deadline: Deadline, url: str, work: Callable[[], T]) -> T:
    """Run ``work`` in a worker thread; its result, or DownloadError once the deadline passes."""
    outcome: list[T] = []
    failure: list[BaseException] = []

    def target() -> None:
        try:
            outcome.append(work())
        except BaseException as exc:  # handed to the caller, which re-raises it
            failure.append(exc)

    worker = threading.Thread(target=target, name="mai-tools-save", daemon=True)
    worker.start()
    try:
        worker.join(max(deadline.left(), 0.0))
    except BaseException:  # Ctrl-C while waiting: the worker must not rename anything later
        deadline.abandon()  # ... and its .part file must not outlive the process
        raise
    if worker.is_alive():
        deadline.abandon()
        raise deadline.expired(url)
    worker.join()
    if failure:
        raise failure[0]
    return outcome[0]


def save_images(
    request_id: str,
    urls: list[str],
    directory: str | os.PathLike[str],
    *,
    http_client: httpx.Client | None = None,
    max_bytes: int = DEFAULT_MAX_DOWNLOAD_BYTES,
    timeout: float | None = None,
    retry_policy: RetryPolicy | None = None,
) -> list[Path]:
    """Download (or decode) each image into ``directory``; see :meth:`ImageResult.save`."""
    deadline = Deadline(call_timeout(timeout, DEFAULT_SAVE_TIMEOUT))
    policy = retry_policy or RetryPolicy()
    folder = _prepare(directory)
    saved, remote = _split(request_id, urls, folder, max_bytes)

    def download_all() -> dict[int, Path]:
        paths: dict[int, Path] = {}
        with sync_client(http_client) as client:
            for index, url in remote:
                paths[index] = _download_to_file(
                    client, folder, request_id, index, url, max_bytes, deadline, policy
                )
        return paths

    if remote:
        saved.update(_within(deadline, remote[0][1], download_all))
    return [saved[index] for index in sorted(saved)]


async def asave_images(
    request_id: str,
    urls: list[str],
    directory: str | os.PathLike[str],
    *,
    http_client: httpx.AsyncClient | None = None,
    max_bytes: int = DEFAULT_MAX_DOWNLOAD_BYTES,
    timeout: float | None = None,
    retry_policy: RetryPolicy | None = None,
) -> list[Path]:
    """Async twin of :func:`save_images`; the images download concurrently."""
    deadline = Deadline(call_timeout(timeout, DEFAULT_SAVE_TIMEOUT))
    policy = retry_policy or RetryPolicy()
    folder = _prepare(directory)
    saved, remote = _split(request_id, urls, folder, max_bytes)
    if not remote:
        return [saved[index] for index in sorted(saved)]
    # Not asyncio.TaskGroup: on Python 3.11 and 3.12 a failing child makes it cancel the
    # parent task, and under anyio (an MCP server, any Starlette app) that cancellation
    # escapes the caller's task group as a bare CancelledError instead of our DownloadError.
    async with async_client(http_client) as client:
        tasks = {
            index: asyncio.ensure_future(
                _adownload_to_file(
                    client, folder, request_id, index, url, max_bytes, deadline, policy
                )
            )
            for index, url in remote
        }
        try:
            async with asyncio.timeout(deadline.left()):
                await asyncio.wait(tasks.values(), return_when=asyncio.FIRST_EXCEPTION)
        except TimeoutError:
            raise deadline.expired(remote[0][1]) from None
        finally:
            await _cancel_and_reap(list(tasks.values()))
    failures = [e for t in tasks.values() if not t.cancelled() and (e := t.exception())]
    if failures:
        raise first_error(BaseExceptionGroup("saving failed", failures)) from None
    saved.update((index, task.result()) for index, task in tasks.items())
    return [saved[index] for index in sorted(saved)]


async def _cancel_and_reap(tasks: Sequence[asyncio.Future[Path]]) -> None:
    """Cancel the downloads still running and wait for them to end (their files cleaned up).

    Every failure is marked as seen: when the deadline wins, the caller raises its own error.
    """
    running = [t for t in tasks if not t.done()]
    for task in running:
        task.cancel()
    if running:
        await asyncio.wait(running)
    for task in tasks:
        if task.done() and not task.cancelled():
            task.exception()


async def afetch_image(
    url: str,
    *,
    http_client: httpx.AsyncClient | None = None,
    max_bytes: int = DEFAULT_MAX_DOWNLOAD_BYTES,
    timeout: float | None = None,
    retry_policy: RetryPolicy | None = None,
) -> bytes:
    """Read one result image into memory (no key sent), size-capped and checked to be an image.

    ``data:`` URIs are decoded. Used for previews, where nothing is written to disk. Rate
    limits, 5xx and dropped connections are retried within ``timeout`` (seconds, default
    ``DEFAULT_SAVE_TIMEOUT``).

    Raises:
        DownloadError: the download failed, was too large, took too long, was not an image,
            or the URL is malformed.
    """
    if url.startswith("data:"):
        return _inline_image(url, max_bytes)
    deadline = Deadline(call_timeout(timeout, DEFAULT_SAVE_TIMEOUT))
    buffer = _Buffer(check_download_url(url), max_bytes)
    try:
        async with asyncio.timeout(deadline.left()), async_client(http_client) as client:
            await afetch(client, url, buffer, deadline, retry_policy or RetryPolicy())
    except TimeoutError:
        raise deadline.expired(url) from None
    return _image_bytes(url, b"".join(buffer.chunks))


def _inline_image(url: str, max_bytes: int) -> bytes:
    try:
        _, data = decode_data_uri(url, max_bytes=max_bytes)
    except InvalidImageError as exc:
        raise DownloadError(str(exc)) from None
    return _image_bytes(url, data)


def _image_bytes(url: str, data: bytes) -> bytes:
    if sniff_image_type(data[:16]) is None:
        raise DownloadError(f"{url[:60]} did not return PNG/JPEG/WEBP/GIF data.")
    return data


def fetch_image(
    url: str,
    *,
    http_client: httpx.Client | None = None,
    max_bytes: int = DEFAULT_MAX_DOWNLOAD_BYTES,
    timeout: float | None = None,
    retry_policy: RetryPolicy | None = None,
) -> bytes:
    """Sync twin of :func:`afetch_image` (the same checks, limits and retries).

    Raises:
        DownloadError: as :func:`afetch_image`.
    """
    if url.startswith("data:"):
        return _inline_image(url, max_bytes)
    deadline = Deadline(call_timeout(timeout, DEFAULT_SAVE_TIMEOUT))
    buffer = _Buffer(check_download_url(url), max_bytes)
    with sync_client(http_client) as client:
        fetch(client, url, buffer, deadline, retry_policy or RetryPolicy())
    return _image_bytes(url, b"".join(buffer.chunks))


class Saver:
    """How a client saves results: its connection pool, size limit and download backoff.

    ``client.save(result, directory)`` runs through the client's Saver, so downloads reuse the
    client's connections and limits.

    Args:
        http: the sync client's ``httpx.Client`` (for :meth:`save`).
        ahttp: the async client's ``httpx.AsyncClient`` (for :meth:`asave`); used only from
            ``loop``, the event loop its connections belong to (default: the running one).
        max_bytes: the largest image written.
        retry_policy: the backoff between tries of a download (the client's own policy).
    """

    __slots__ = ("_ahttp", "_http", "_loop", "max_bytes", "retry_policy")

    def __init__(
        self,
        *,
        http: httpx.Client | None = None,
        ahttp: httpx.AsyncClient | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
        max_bytes: int = DEFAULT_MAX_DOWNLOAD_BYTES,
        retry_policy: RetryPolicy | None = None,
    ) -> None:
        self._http = http
        self._ahttp = ahttp
        self.retry_policy = retry_policy
        self._loop: weakref.ref[asyncio.AbstractEventLoop] | None = None
        if ahttp is not None:
            self._loop = weakref.ref(loop or asyncio.get_running_loop())
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
        timeout: float | None = None,
    ) -> list[Path]:
        return save_images(
            request_id,
            urls,
            directory,
            http_client=http_client or self._http,
            max_bytes=self.max_bytes if max_bytes is None else max_bytes,
            timeout=timeout,
            retry_policy=self.retry_policy,
        )

    async def asave(
        self,
        request_id: str,
        urls: list[str],
        directory: str | os.PathLike[str],
        *,
        http_client: httpx.AsyncClient | None = None,
        max_bytes: int | None = None,
        timeout: float | None = None,
    ) -> list[Path]:
        return await asave_images(
            request_id,
            urls,
            directory,
            http_client=http_client or self._async_http(),
            max_bytes=self.max_bytes if max_bytes is None else max_bytes,
            timeout=timeout,
            retry_policy=self.retry_policy,
        )

    def __repr__(self) -> str:
        return f"Saver(max_bytes={self.max_bytes})"


_PART_NAME = re.compile(r"\.mai-[0-9a-f]{16}\.part")


def remove_part_files(directory: str | os.PathLike[str]) -> int:
    """Delete the temporary files of saves that never ended (a process killed while saving)
    from ``directory``; how many were deleted.

    Only a caller that owns ``directory`` may call it (the batch, under its directory lock): a
    save running in another process would lose its file.
    """
    removed = 0
    try:
        entries = list(os.scandir(directory))
    except OSError:  # no directory yet: nothing was left
        return 0
    for entry in entries:
        if _PART_NAME.fullmatch(entry.name) and entry.is_file(follow_symlinks=False):
            with contextlib.suppress(OSError):
                os.unlink(entry.path)
                removed += 1
    return removed
