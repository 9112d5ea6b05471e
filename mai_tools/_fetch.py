"""Getting one result image from the CDN: retried, throttled per host, bounded by a deadline.

Result images live on Cloudflare R2 public URLs, which answer 429 (with ``Retry-After``) under
load, throttle bandwidth, and now and then drop a connection or answer 5xx. A download is a
GET, safe to repeat, so those are retried with backoff (``RetryPolicy``), but only while the
whole save's deadline allows: a stalled or byte-dripping host is cut off by the deadline (the
elapsed time is checked on every chunk, and every HTTP timeout is capped by the time left).

A URL that httpx cannot send (a space or tab in it, a bad IPv6 literal, a host IDNA refuses,
a port outside 1-65535, an empty string) is a :class:`DownloadError` before anything is sent,
and so is one a redirect leads to, never httpx's or idna's own exception:
the job has finished, and the adapters report such a save as "not saved", with the URLs.

This module writes no files (that is :mod:`mai_tools._download`); the API key is never sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import re
import threading
import time
import weakref
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Protocol

import httpx

from ._config import ssl_context
from ._constants import (
    DOWNLOAD_HEADERS,
    DOWNLOAD_MAX_ATTEMPTS,
    DOWNLOAD_TIMEOUT,
    DOWNLOADS_PER_HOST,
)
from ._exceptions import DownloadError
from ._policies import RetryPolicy, parse_retry_after

_MAX_PORT = 65535
_LABEL = re.compile(r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)\Z")
# Failures a second try cannot fix: a redirect to another scheme, a request httpx refused.
_FINAL_TRANSPORT_ERRORS = (httpx.UnsupportedProtocol, httpx.LocalProtocolError)
# What a URL httpx accepted can still raise below it, when it is sent (a redirect's Location is
# not checked like the result's URLs): idna's and the socket layer's own errors.
_UNSENDABLE = (httpx.InvalidURL, ValueError, OverflowError)


def short(url: str) -> str:
    return url[:100]


def check_download_url(url: str) -> str:
    """``url`` if it is an http(s) URL with a valid host; DownloadError (only) if not."""
    if not url.lower().startswith(("http://", "https://")):
        raise DownloadError(f"Refusing to download from a non-http(s) URL: {url[:60]!r}")
    try:
        parsed = httpx.URL(url)
        parsed.host  # noqa: B018 - decoding the IDNA host is what raises for a bad one
        host = parsed.raw_host.decode("ascii")
        port = parsed.port
    except (httpx.InvalidURL, ValueError) as exc:  # ValueError: UnicodeError, idna.IDNAError
        raise DownloadError(f"{url[:100]!r} is not a valid URL ({exc}); not downloaded.") from None
    if not _valid_host(host):
        raise DownloadError(f"{url[:100]!r} has an invalid host name; not downloaded.")
    # httpx keeps any number: the socket layer would raise OverflowError (asyncio) for it.
    if port is not None and not 0 < port <= _MAX_PORT:
        raise DownloadError(f"{url[:100]!r} has port {port}, not 1-65535; not downloaded.")
    return url


def _valid_host(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        labels = host[:-1].split(".") if host.endswith(".") else host.split(".")
        return bool(host) and len(host) <= 253 and all(_LABEL.match(label) for label in labels)
    return True


class Deadline:
    """The time limit of a whole save (or fetch); also how a given-up sync save stops.

    ``lock`` is held while a finished image is renamed into place, so a save reported as not
    finished in time never renames a file afterwards.
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.at = time.monotonic() + seconds
        self.abandoned = threading.Event()
        self.lock = threading.Lock()
        self.parts: set[Path] = set()
        """Temporary files of a sync save's worker, removed by :meth:`abandon`."""

    def abandon(self) -> None:
        """Give the save up (Ctrl-C, SIGTERM, the deadline): nothing is renamed after this,
        and the worker's temporary files go now (the process may exit before the worker wakes
        up to remove them itself)."""
        self.abandoned.set()
        with self.lock:
            for part in list(self.parts):
                with contextlib.suppress(OSError):
                    part.unlink()
            self.parts.clear()

    def left(self) -> float:
        return self.at - time.monotonic()

    def expired(self, url: str) -> DownloadError:
        return DownloadError(
            f"Downloading {short(url)} did not finish within the {self.seconds:.1f} s save "
            "timeout; not saved."
        )

    def check(self, url: str) -> None:
        """Raise when the time is up (or the save was given up on)."""
        if self.abandoned.is_set() or self.left() <= 0:
            raise self.expired(url)

    def http_timeout(self, url: str) -> httpx.Timeout:
        """The download timeouts, each capped by the time left."""
        self.check(url)
        left = self.left()

        def cap(value: float | None) -> float:
            return left if value is None else min(value, left)

        return httpx.Timeout(
            connect=cap(DOWNLOAD_TIMEOUT.connect),
            read=cap(DOWNLOAD_TIMEOUT.read),
            write=cap(DOWNLOAD_TIMEOUT.write),
            pool=cap(DOWNLOAD_TIMEOUT.pool),
        )


class Body(Protocol):
    """Where the bytes of one image go (a part file, or memory)."""

    def write(self, chunk: bytes) -> None: ...

    def reset(self) -> None: ...


class _Transient(Exception):
    """A failure worth another try: 429, 5xx, a dropped or timed-out connection."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def _check_response(url: str, response: httpx.Response) -> None:
    """Refuse an error status or a declared non-image body before reading it."""
    code = response.status_code
    if code == 429 or code == 408 or code >= 500:
        # Cloudflare's rate limit (error 1015) carries Retry-After in seconds or as a date.
        retry_after = parse_retry_after(response.headers.get("retry-after"))
        raise _Transient(f"{short(url)} answered HTTP {code}", retry_after)
    if code != 200:
        raise DownloadError(f"{short(url)} answered HTTP {code}.")
    kind = response.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if kind and not kind.startswith("image/") and kind != "application/octet-stream":
        raise DownloadError(f"{short(url)} is {kind!r}, not an image; not saved.")


def _failure(url: str, exc: httpx.HTTPError) -> _Transient | DownloadError:
    detail = str(exc) or type(exc).__name__
    text = f"Downloading {short(url)} failed: {detail}"
    if isinstance(exc, httpx.TransportError) and not isinstance(exc, _FINAL_TRANSPORT_ERRORS):
        return _Transient(text)
    return DownloadError(text)


def _pause(failure: _Transient, attempt: int, deadline: Deadline, policy: RetryPolicy) -> float:
    """Seconds to wait before the next try, or the DownloadError that ends the download."""
    if attempt >= DOWNLOAD_MAX_ATTEMPTS:
        raise DownloadError(f"{failure} (gave up after {attempt} tries); not saved.")
    wait = failure.retry_after
    if wait is not None and wait > policy.max_retry_after:
        raise DownloadError(f"{failure}; it asks to wait {wait:.0f}s, too long; not saved.")
    delay = policy.backoff(attempt, wait)
    if delay >= deadline.left():
        raise DownloadError(
            f"{failure}; no time left to retry within the {deadline.seconds:.1f} s save timeout; "
            "not saved."
        )
    return delay


def fetch(
    client: httpx.Client, url: str, body: Body, deadline: Deadline, policy: RetryPolicy
) -> None:
    """GET ``url`` into ``body``, retrying transient failures within ``deadline``."""
    attempt = 0
    while True:
        attempt += 1
        try:
            with client.stream(
                "GET",
                url,
                headers=DOWNLOAD_HEADERS,
                follow_redirects=True,
                timeout=deadline.http_timeout(url),
            ) as response:
                _check_response(url, response)
                for chunk in response.iter_bytes():
                    body.write(chunk)
                    deadline.check(url)
            return
        except _Transient as exc:
            failure = exc
        except httpx.HTTPError as exc:
            failure_or_final = _failure(url, exc)
            if isinstance(failure_or_final, DownloadError):
                raise failure_or_final from exc
            failure = failure_or_final
        except _UNSENDABLE as exc:  # e.g. a redirect to a host IDNA refuses, or to port 10**8
            raise DownloadError(f"Downloading {short(url)} failed: {exc}") from None
        body.reset()
        # Waiting on the event: a save given up on stops at once, not after the pause.
        deadline.abandoned.wait(_pause(failure, attempt, deadline, policy))


async def afetch(
    client: httpx.AsyncClient, url: str, body: Body, deadline: Deadline, policy: RetryPolicy
) -> None:
    """Async twin of :func:`fetch`; at most ``DOWNLOADS_PER_HOST`` at once per host."""
    slot = host_slot(client, url)
    attempt = 0
    while True:
        attempt += 1
        try:
            async with (
                slot,
                client.stream(
                    "GET",
                    url,
                    headers=DOWNLOAD_HEADERS,
                    follow_redirects=True,
                    timeout=deadline.http_timeout(url),
                ) as response,
            ):
                _check_response(url, response)
                async for chunk in response.aiter_bytes():
                    body.write(chunk)
                    deadline.check(url)
            return
        except _Transient as exc:
            failure = exc
        except httpx.HTTPError as exc:
            failure_or_final = _failure(url, exc)
            if isinstance(failure_or_final, DownloadError):
                raise failure_or_final from exc
            failure = failure_or_final
        except _UNSENDABLE as exc:
            raise DownloadError(f"Downloading {short(url)} failed: {exc}") from None
        except ExceptionGroup as group:  # anyio's connect raises its OverflowError in a group
            unsendable, rest = group.split(_UNSENDABLE)
            if unsendable is None or rest is not None:
                raise
            raise DownloadError(
                f"Downloading {short(url)} failed: {unsendable.exceptions[0]}"
            ) from None
        body.reset()
        await asyncio.sleep(_pause(failure, attempt, deadline, policy))


# Per async client, per host: how many downloads may run at once. A batch saving hundreds of
# results through one client then asks the CDN for a bounded number at a time, not hundreds.
_HOST_SLOTS: weakref.WeakKeyDictionary[httpx.AsyncClient, dict[str, asyncio.Semaphore]] = (
    weakref.WeakKeyDictionary()
)
_HOST_LIMITS: weakref.WeakKeyDictionary[httpx.AsyncClient, int] = weakref.WeakKeyDictionary()


def limit_per_host(client: httpx.AsyncClient, downloads: int) -> None:
    """Let ``client`` run at most ``downloads`` image downloads at once per host (instead of
    ``DOWNLOADS_PER_HOST``). Set it before the client downloads: slots already taken are not
    counted against the new limit."""
    _HOST_LIMITS[client] = downloads
    _HOST_SLOTS.pop(client, None)


def host_slot(client: httpx.AsyncClient, url: str) -> asyncio.Semaphore:
    hosts = _HOST_SLOTS.setdefault(client, {})
    host = httpx.URL(url).netloc.decode("ascii").lower()
    slot = hosts.get(host)
    if slot is None:
        slot = hosts[host] = asyncio.Semaphore(_HOST_LIMITS.get(client, DOWNLOADS_PER_HOST))
    return slot


def first_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The exception to raise for a failed task group: its first DownloadError, if any."""
    leaves: list[BaseException] = []

    def walk(exc: BaseException) -> None:
        if isinstance(exc, BaseExceptionGroup):
            for inner in exc.exceptions:
                walk(inner)
        else:
            leaves.append(exc)

    walk(group)
    return next((e for e in leaves if isinstance(e, DownloadError)), leaves[0])


@contextlib.contextmanager
def _proxy_settings_checked() -> Iterator[None]:
    # A fresh client reads HTTP(S)_PROXY/ALL_PROXY; a bad one fails the save, not the call.
    try:
        yield
    except (ValueError, ImportError, httpx.InvalidURL) as exc:
        raise DownloadError(
            "Cannot download: HTTP_PROXY, HTTPS_PROXY or ALL_PROXY in the environment is not a "
            f"usable proxy ({type(exc).__name__}); fix or unset it."
        ) from None


@contextlib.contextmanager
def sync_client(client: httpx.Client | None) -> Iterator[httpx.Client]:
    """``client``, or a fresh one (it honours the environment's proxies, as httpx does)."""
    if client is not None and not client.is_closed:
        yield client
        return
    with _proxy_settings_checked():
        fresh = httpx.Client(timeout=DOWNLOAD_TIMEOUT, verify=ssl_context())
    with fresh:
        yield fresh


@contextlib.asynccontextmanager
async def async_client(client: httpx.AsyncClient | None) -> AsyncIterator[httpx.AsyncClient]:
    """Async twin of :func:`sync_client`."""
    if client is not None and not client.is_closed:
        yield client
        return
    with _proxy_settings_checked():
        fresh = httpx.AsyncClient(timeout=DOWNLOAD_TIMEOUT, verify=ssl_context())
    async with fresh:
        yield fresh
