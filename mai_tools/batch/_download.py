"""Saving a finished job's images with retries: 429, 5xx and transport errors are retried.

Result images live on a CDN that rate-limits bursts (Cloudflare R2 answers 429 under load);
a batch downloads thousands, so a transient failure is retried with backoff, honouring
``Retry-After``. Anything else (not an image, too large, the disk) fails at once.
"""

from __future__ import annotations

import asyncio
import os
import random
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Final

import httpx

from .._exceptions import DownloadError
from .._models import ImageResult
from .._policies import RetryPolicy, parse_retry_after

DOWNLOAD_ATTEMPTS: Final = 5
DOWNLOAD_RETRY: Final = RetryPolicy(initial_backoff=0.5, max_backoff=10.0, max_retry_after=60.0)
_TRANSIENT_STATUS = re.compile(r"answered HTTP (?:408|429|5\d\d)\b")


class RetryAfterHints:
    """An httpx response hook remembering the ``Retry-After`` of refused downloads, per URL
    (a DownloadError carries the status code in its text, not the headers)."""

    def __init__(self) -> None:
        self._hints: dict[str, float] = {}

    async def __call__(self, response: httpx.Response) -> None:
        if response.status_code in (429, 503):
            seconds = parse_retry_after(response.headers.get("retry-after"))
            if seconds is not None:
                self._hints[str(response.request.url)] = seconds

    def pop_for(self, urls: list[str]) -> float | None:
        found = [self._hints.pop(url, None) for url in urls]
        return max((s for s in found if s is not None), default=None)


def is_transient(exc: DownloadError) -> bool:
    """A download failure worth retrying: 408/429/5xx, or the connection failed."""
    if isinstance(exc.__cause__, httpx.TransportError):
        return True
    return _TRANSIENT_STATUS.search(str(exc)) is not None


async def save_with_retries(
    result: ImageResult,
    directory: str | os.PathLike[str],
    *,
    http_client: httpx.AsyncClient | None = None,
    hints: RetryAfterHints | None = None,
    attempts: int = DOWNLOAD_ATTEMPTS,
    policy: RetryPolicy = DOWNLOAD_RETRY,
    sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    on_retry: Callable[[DownloadError, float], object] | None = None,
) -> list[Path]:
    """:meth:`ImageResult.asave`, retried on transient failures with backoff.

    Raises:
        DownloadError: the last failure, once ``attempts`` are used or it is not transient.
    """
    rng = random.Random()
    for attempt in range(1, attempts + 1):
        try:
            return await result.asave(directory, http_client=http_client)
        except DownloadError as exc:
            if attempt >= attempts or not is_transient(exc):
                raise
            hint = hints.pop_for(result.image_urls) if hints is not None else None
            if hint is not None and hint > policy.max_retry_after:
                raise
            delay = policy.backoff(attempt, hint, rng)
            if on_retry is not None:
                on_retry(exc, delay)
            await sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover
