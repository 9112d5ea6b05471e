"""Saving one line's images: a few downloads at a time per host, over one pooled HTTP client.

The retries themselves are :func:`._download.save_with_retries`; this step owns the run's
download client (with the hook that hears ``Retry-After``), the per-host limits, and what a
failure means for the run (a full disk stops submitting: more images would not fit either).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
from collections.abc import AsyncIterator
from typing import Final
from urllib.parse import urlsplit

import httpx

from .._config import ssl_context
from .._constants import DOWNLOAD_TIMEOUT
from .._exceptions import DownloadError
from .._models import ImageResult
from ._download import RetryAfterHints, save_with_retries
from ._journal import Row
from ._state import RunState, Stopped

IMAGES_DIR: Final = "images"
_DISK_FULL: Final = tuple(os.strerror(code) for code in (errno.ENOSPC, errno.EDQUOT))


class Downloads:
    """Downloads the images of completed lines into ``out_dir/images``."""

    def __init__(
        self,
        state: RunState,
        *,
        per_host: int,
        http_client: httpx.AsyncClient | None,
    ) -> None:
        self._state = state
        self._images_dir = state.out_dir / IMAGES_DIR
        self._per_host = per_host
        self._user_client = http_client
        self._http: httpx.AsyncClient | None = None
        self._hints = RetryAfterHints()
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
        http.event_hooks.setdefault("response", []).append(self._hints)
        self._http = http
        try:
            yield
        finally:
            with contextlib.suppress(ValueError):
                http.event_hooks["response"].remove(self._hints)
            if owned:
                await http.aclose()

    def start(self, row: Row) -> None:
        """Download ``row``'s images in a task of the run; the line settles when it ends."""
        self._state.spawn(self._download(row))

    async def _download(self, row: Row) -> None:
        state = self._state
        host = urlsplit(row.image_urls[0]).netloc if row.image_urls else ""
        limit = self._host_limits.setdefault(host, asyncio.Semaphore(self._per_host))
        assert row.request_id is not None
        result = ImageResult(request_id=row.request_id, image_urls=list(row.image_urls))

        def retrying(exc: DownloadError, delay: float) -> None:
            state.emit("retrying", f"{row.id}: download failed ({exc}); retrying in {delay:.1f}s")

        try:
            try:
                async with limit:
                    paths = await save_with_retries(
                        result,
                        self._images_dir,
                        http_client=self._http,
                        hints=self._hints,
                        policy=state.retry,
                        on_retry=retrying,
                    )
            except DownloadError as exc:
                text = str(exc)
                if any(marker in text for marker in _DISK_FULL):
                    state.disk_trouble = True
                    state.hold(f"the disk is full ({text}); free some space and rerun")
                state.record(row, error=f"images not saved: {text}; rerun to download them again")
            else:
                relative = [p.relative_to(state.out_dir).as_posix() for p in paths]
                state.record(row, state="saved", paths=relative, error=None)
                state.images_saved_now += len(paths)
        except Stopped:
            return
        state.settle(row)
