"""Saving one line's images: a few downloads at a time per host, over one pooled HTTP client.

The download itself is the core's (:func:`mai_tools._download.asave_images`): streamed,
size-capped, atomic, and retried on 429 (``Retry-After`` honoured), 5xx and dropped
connections within the save's deadline. This step owns the run's download client, the
per-host limit, and what a failure means for the run (a full disk stops submitting: more
images would not fit either).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
from collections.abc import AsyncIterator
from typing import Final

import httpx

from .._config import ssl_context
from .._constants import DOWNLOAD_TIMEOUT
from .._download import asave_images, remove_part_files
from .._exceptions import DownloadError, JobBookError
from .._fetch import limit_per_host
from .._urls import split_url
from ..jobbook import JobBook
from ._journal import Row, with_unfetchable
from ._state import RunState, Stopped

logger = logging.getLogger("mai_tools.batch")

IMAGES_DIR: Final = "images"
"""The subdirectory of a run's output directory its images are saved in."""
_NO_URL: Final = (
    "the job finished but the gateway sent no usable image URL (an empty string); "
    "no image can be fetched"
)
_DISK_FULL: Final = tuple(os.strerror(code) for code in (errno.ENOSPC, errno.EDQUOT))


class Downloads:
    """Downloads the images of completed lines into ``out_dir/images``.

    At most ``per_host`` lines download from one host at once, and at most ``per_host``
    images (the download client's per-host limit, which a caller's ``download_client`` keeps
    after the run). A line waits for its turn *before* its save starts, so the save's deadline
    covers its own downloads, not the queue ahead of it.
    """

    def __init__(
        self,
        state: RunState,
        *,
        per_host: int,
        http_client: httpx.AsyncClient | None,
        max_bytes: int,
        book: JobBook | None = None,
    ) -> None:
        self._state = state
        self._book = book
        self._images_dir = state.out_dir / IMAGES_DIR
        self._per_host = per_host
        self._max_bytes = max_bytes
        self._user_client = http_client
        self._http: httpx.AsyncClient | None = None
        self._host_limits: dict[str, asyncio.Semaphore] = {}

    @contextlib.asynccontextmanager
    async def connected(self) -> AsyncIterator[None]:
        """Hold the download client (the caller's, or a pooled one closed at the end)."""
        owned = self._user_client is None
        http = self._user_client or httpx.AsyncClient(
            timeout=DOWNLOAD_TIMEOUT,
            verify=ssl_context(),
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=64),
        )
        limit_per_host(http, self._per_host)
        self._http = http
        try:
            yield
        finally:
            if owned:
                await http.aclose()

    def remove_leftovers(self) -> None:
        """Delete the ``.part`` files of saves a killed run left in ``images/`` (the run holds
        the directory's lock: no other save writes there)."""
        removed = remove_part_files(self._images_dir)
        if removed:
            logger.info("batch: removed %d unfinished download(s) of an earlier run", removed)

    def start(self, row: Row) -> None:
        """Download ``row``'s images in a task of the run; the line settles when it ends."""
        if not row.image_urls:  # the gateway sent only empty URLs: nothing can be fetched
            self._state.record(row, state="saved", paths=[], error=_NO_URL)
            self._state.settle(row)
            return
        self._state.spawn(self._download(row))

    async def _download(self, row: Row) -> None:
        state = self._state
        unfetchable = row.unfetchable()
        limit = self._host_limits.setdefault(_host(row), asyncio.Semaphore(self._per_host))
        assert row.request_id is not None
        try:
            try:
                async with limit:
                    paths = await asave_images(
                        row.request_id,
                        list(row.image_urls),
                        self._images_dir,
                        http_client=self._http,
                        max_bytes=self._max_bytes,
                        retry_policy=state.retry,
                    )
            except DownloadError as exc:
                text = str(exc)
                if any(marker in text for marker in _DISK_FULL):
                    state.disk_trouble = True
                    state.hold(f"the disk is full ({text}); free some space and rerun")
                again = f"images not saved: {text}; rerun to download them again"
                state.record(row, error=with_unfetchable(unfetchable, again))
            except Exception as exc:  # a URL or an answer nothing foresaw: this line's error only
                logger.error("batch: saving the images of %s failed", row.id, exc_info=exc)
                state.record(
                    row,
                    error=with_unfetchable(
                        unfetchable,
                        f"images not saved: {type(exc).__name__}: {exc}; rerun to try again",
                    ),
                )
            else:
                relative = [p.relative_to(state.out_dir).as_posix() for p in paths]
                state.record(
                    row,
                    state="saved",
                    paths=relative,
                    # The images the gateway gave no URL for stay this line's save error.
                    error=with_unfetchable(unfetchable, "not saved") if unfetchable else None,
                )
                state.images_saved_now += len(paths)
                await self._note_saved(row.request_id, [str(p) for p in paths])
        except Stopped:
            return
        state.settle(row)

    async def _note_saved(self, request_id: str, paths: list[str]) -> None:
        """Where the job's images are, in the job book (the client recorded the rest). A
        failure is logged: the images are saved and the journal knows it."""
        book = self._book
        if book is None:
            return
        try:
            if book.offload:  # a network book: never on the event loop
                await asyncio.to_thread(book.saved, request_id, paths)
            else:
                book.saved(request_id, paths)
        except JobBookError as exc:
            logger.warning("job book: could not record the saved files of %s: %s", request_id, exc)


def _host(row: Row) -> str:
    """The host whose download slots the line waits for ("" when its URL has none)."""
    # A malformed URL (``http://[::1/x``) has no host: the save reports it on this line.
    parts = split_url(row.image_urls[0]) if row.image_urls else None
    return parts.netloc if parts is not None else ""
