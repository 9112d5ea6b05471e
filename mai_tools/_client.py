"""The sync and async clients: I/O drivers over the shared flows in :mod:`mai_tools._flow`."""

from __future__ import annotations

import asyncio
import inspect
import threading
import weakref
from types import TracebackType
from typing import Any, Self, TypeVar

import httpx

from ._download import DEFAULT_MAX_DOWNLOAD_BYTES
from ._flow import (
    DEFAULT_MAX_RETRIES,
    DEFAULT_TIMEOUT,
    DEFAULT_WAIT_TIMEOUT,
    KEEPALIVE_EXPIRY,
    Flow,
    FlowCore,
    HTTPRequest,
    Notify,
    OnStatus,
    Sleep,
    job_ref,
    require_whole,
    ssl_context,
)
from ._images import DEFAULT_MAX_INPUT_BYTES, ImageInput
from ._models import (
    EditAspectRatio,
    GenerateAspectRatio,
    ImageResult,
    Job,
    JobStatus,
    OutputFormat,
)
from ._policies import Clock, DurationStats, PollPolicy, RetryPolicy
from ._transport import SpreadTransport

T = TypeVar("T")

# Requests in flight at once on one client; jobs beyond it queue in the client (cheap), not in
# httpcore's pool, whose bookkeeping grows with queued requests x connections.
DEFAULT_MAX_CONCURRENT_REQUESTS = 32


def _request_args(action: HTTPRequest) -> dict[str, Any]:
    return {
        "method": action.method,
        "url": action.url,
        "headers": action.headers,
        "json": action.json,
        "timeout": action.timeout,
        "follow_redirects": False,
    }


def _no_free_slot(wait: float | None) -> httpx.PoolTimeout:
    # Waiting for one of the client's request slots is waiting for a pool connection: the
    # pool timeout (capped by the call's deadline) bounds it, and the flow treats it as a
    # request that was never sent.
    return httpx.PoolTimeout(f"No free connection within {wait or 0:.1f}s.")


class _ClientBase:
    """Constructor and shared plumbing; subclasses add only the I/O driver."""

    _core: FlowCore

    def __init__(
        self,
        api_key: str | None = None,
        *,
        base_url: str | None = None,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        max_retries: int = DEFAULT_MAX_RETRIES,
        wait_timeout: float = DEFAULT_WAIT_TIMEOUT,
        poll_policy: PollPolicy | None = None,
        retry_policy: RetryPolicy | None = None,
        clock: Clock | None = None,
        max_input_image_bytes: int = DEFAULT_MAX_INPUT_BYTES,
        max_download_bytes: int = DEFAULT_MAX_DOWNLOAD_BYTES,
        durations: DurationStats | None = None,
    ) -> None:
        self._core = FlowCore(
            api_key,
            base_url=base_url,
            timeout=timeout,
            max_retries=max_retries,
            wait_timeout=wait_timeout,
            poll_policy=poll_policy,
            retry_policy=retry_policy,
            clock=clock,
            max_input_image_bytes=max_input_image_bytes,
            durations=durations,
        )
        self.max_download_bytes = require_whole(max_download_bytes, "max_download_bytes", minimum=1)

    @property
    def base_url(self) -> str:
        """The gateway origin every keyed request goes to."""
        return self._core.base_url

    @property
    def wait_timeout(self) -> float:
        """Default bound, in seconds, on a whole generate/edit/wait call."""
        return self._core.wait_timeout

    @property
    def poll_policy(self) -> PollPolicy:
        return self._core.poll_policy

    @property
    def durations(self) -> DurationStats:
        """The job durations this client has learned (and polls by), per operation."""
        return self._core.durations

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base_url={self.base_url!r})"

    def _flow_generate(
        self,
        prompt: str,
        num_images: int,
        aspect_ratio: str,
        output_format: str,
        sync_mode: bool,
        webhook_url: str | None,
        timeout: float | None,
    ) -> Flow[ImageResult]:
        body = self._core.generate_request(
            prompt, num_images, aspect_ratio, output_format, sync_mode
        )
        self._core.check_webhook(webhook_url)
        return self._core.run_flow("generate", body, webhook_url=webhook_url, timeout=timeout)

    def _flow_edit(
        self,
        prompt: str,
        image: ImageInput,
        num_images: int,
        aspect_ratio: str,
        output_format: str,
        sync_mode: bool,
        webhook_url: str | None,
        timeout: float | None,
    ) -> Flow[ImageResult]:
        body = self._core.edit_request(
            prompt, image, num_images, aspect_ratio, output_format, sync_mode
        )
        self._core.check_webhook(webhook_url)
        return self._core.run_flow("edit", body, webhook_url=webhook_url, timeout=timeout)

    def _flow_wait(
        self, job_or_request_id: Job | JobStatus | str, timeout: float | None
    ) -> Flow[ImageResult]:
        request_id, polling_url = job_ref(job_or_request_id)
        timeout_value, deadline = self._core.deadline_for(timeout)
        return self._core.wait_flow(
            request_id,
            polling_url,
            timeout=timeout_value,
            deadline=deadline,
            started_at=None,
            initial=None,
        )


def _check_http_client(client: object, expected: type) -> None:
    if client is not None and not isinstance(client, expected):
        raise TypeError(
            f"http_client must be an {expected.__module__}.{expected.__name__}, "
            f"got {type(client).__name__}"
        )


class MAIImageClient(_ClientBase):
    """Synchronous client for MAI Image 2.5 on the Pixazo gateway.

    Safe to share across threads. Use as a context manager, or call :meth:`close`.

    Args:
        api_key: the Pixazo subscription key; defaults to ``$PIXAZO_API_KEY``.
        base_url: the gateway origin; defaults to ``$PIXAZO_BASE_URL`` or
            ``https://gateway.pixazo.ai``.
        timeout: per-HTTP-request timeout (seconds or an ``httpx.Timeout``).
        max_retries: retries of a submit refused with 429 or never connected, and of a
            standalone status read. Status reads while waiting retry until the wait deadline.
        wait_timeout: default bound on a whole generate/edit/wait call, in seconds.
        http_client: an ``httpx.Client`` to use (not closed by this client).
        poll_policy, retry_policy, clock: injectable policies; defaults are adaptive polling,
            exponential backoff with jitter, and the system clock.
        max_input_image_bytes: largest local image accepted by :meth:`edit`.
        max_download_bytes: largest image :meth:`ImageResult.save` writes.
        max_concurrent_requests: API requests in flight at once across all threads; further
            threads wait their turn in the client (at most the pool timeout, within the call's
            deadline).
        durations: learned job durations to start from and add to (a
            :class:`DurationStats`); pass one instance to several clients to share what they
            learn, or restore one saved with :meth:`DurationStats.to_dict`.

    Raises:
        ConfigurationError: no API key, or a malformed base URL.
    """

    def __init__(
        self,
        api_key: str | None = None,
        *,
        base_url: str | None = None,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        max_retries: int = DEFAULT_MAX_RETRIES,
        wait_timeout: float = DEFAULT_WAIT_TIMEOUT,
        http_client: httpx.Client | None = None,
        poll_policy: PollPolicy | None = None,
        retry_policy: RetryPolicy | None = None,
        clock: Clock | None = None,
        max_input_image_bytes: int = DEFAULT_MAX_INPUT_BYTES,
        max_download_bytes: int = DEFAULT_MAX_DOWNLOAD_BYTES,
        max_concurrent_requests: int = DEFAULT_MAX_CONCURRENT_REQUESTS,
        durations: DurationStats | None = None,
    ) -> None:
        _check_http_client(http_client, httpx.Client)
        require_whole(max_concurrent_requests, "max_concurrent_requests", minimum=1)
        super().__init__(
            api_key,
            base_url=base_url,
            timeout=timeout,
            max_retries=max_retries,
            wait_timeout=wait_timeout,
            poll_policy=poll_policy,
            retry_policy=retry_policy,
            clock=clock,
            max_input_image_bytes=max_input_image_bytes,
            max_download_bytes=max_download_bytes,
            durations=durations,
        )
        self._owns_http = http_client is None
        self._http = http_client or httpx.Client(
            timeout=self._core.timeout,
            # httpcore's sync pool can close a connection it has just handed to another thread
            # when it queues requests or trims idle connections (encode/httpcore#1110: "Bad
            # file descriptor", or a hang until the read timeout). So the pool never queues or
            # trims (idle connections expire after KEEPALIVE_EXPIRY), and API requests wait
            # for a slot here instead: at most max_concurrent_requests are in flight.
            limits=httpx.Limits(
                max_connections=None,
                max_keepalive_connections=None,
                keepalive_expiry=KEEPALIVE_EXPIRY,
            ),
            follow_redirects=False,
            verify=ssl_context(),
        )
        self._limiter = threading.BoundedSemaphore(max_concurrent_requests)

    # ------------------------------------------------------------------ driver

    def _run(self, flow: Flow[T], on_status: OnStatus | None = None) -> T:
        reply: httpx.Response | httpx.TransportError | None = None
        while True:
            try:
                action = flow.send(reply)
            except StopIteration as stop:
                return stop.value  # type: ignore[no-any-return]
            reply = None
            if isinstance(action, HTTPRequest):
                wait = action.timeout.pool
                if not self._limiter.acquire(timeout=wait):
                    reply = _no_free_slot(wait)
                    continue
                try:
                    reply = self._http.request(**_request_args(action))
                except httpx.TransportError as exc:
                    reply = exc
                finally:
                    self._limiter.release()
            elif isinstance(action, Sleep):
                self._core.clock.sleep(action.seconds)
            elif isinstance(action, Notify) and on_status is not None:
                on_status(action.status, action.elapsed)

    def _result(self, result: ImageResult) -> ImageResult:
        result._http = self._http
        result._max_bytes = self.max_download_bytes
        return result

    # ------------------------------------------------------------------ API

    def generate(
        self,
        prompt: str,
        *,
        num_images: int = 1,
        aspect_ratio: GenerateAspectRatio = "auto",
        output_format: OutputFormat = "png",
        sync_mode: bool = False,
        webhook_url: str | None = None,
        timeout: float | None = None,
        on_status: OnStatus | None = None,
    ) -> ImageResult:
        """Generate images from a text prompt and wait for them.

        Args:
            prompt: what to draw (3-5000 characters).
            num_images: 1-4.
            aspect_ratio: ``auto`` or one of 21:9, 16:9, 3:2, 4:3, 5:4, 1:1, 4:5, 3:4, 2:3, 9:16.
            output_format: ``png``, ``jpeg`` or ``webp``.
            sync_mode: ask the gateway to answer inline with data URIs.
            webhook_url: also have the gateway POST the final status there.
            timeout: bound on the whole call in seconds (default: ``wait_timeout``).
            on_status: called as ``on_status(status, elapsed)`` on every status change.

        Raises:
            pydantic.ValidationError: invalid arguments (nothing was sent).
            JobFailedError: the job ended FAILED or ERROR.
            JobTimeoutError: not finished within ``timeout``; resume with :meth:`wait`.
            APIStatusError: the gateway refused the request.
            APIConnectionError: the gateway could not be reached.
        """
        flow = self._flow_generate(
            prompt, num_images, aspect_ratio, output_format, sync_mode, webhook_url, timeout
        )
        return self._result(self._run(flow, on_status))

    def edit(
        self,
        prompt: str,
        image: ImageInput,
        *,
        num_images: int = 1,
        aspect_ratio: EditAspectRatio = "auto",
        output_format: OutputFormat = "png",
        sync_mode: bool = False,
        webhook_url: str | None = None,
        timeout: float | None = None,
        on_status: OnStatus | None = None,
    ) -> ImageResult:
        """Edit an image following an instruction, and wait for the result.

        ``image`` is an http(s) URL, a ``data:`` URI, a local path or raw bytes; local files
        and bytes are checked to be PNG/JPEG/WEBP/GIF and sent as a data URI. Other arguments
        and errors are as for :meth:`generate` (edit allows fewer aspect ratios).

        Raises:
            InvalidImageError: the image is missing, not an image, too large, or an
                unsupported URL scheme (nothing was sent).
        """
        flow = self._flow_edit(
            prompt, image, num_images, aspect_ratio, output_format, sync_mode, webhook_url, timeout
        )
        return self._result(self._run(flow, on_status))

    def submit_generate(
        self,
        prompt: str,
        *,
        num_images: int = 1,
        aspect_ratio: GenerateAspectRatio = "auto",
        output_format: OutputFormat = "png",
        sync_mode: bool = False,
        webhook_url: str | None = None,
    ) -> Job:
        """Submit a generation without waiting; returns the :class:`Job`."""
        body = self._core.generate_request(
            prompt, num_images, aspect_ratio, output_format, sync_mode
        )
        return self._run(self._core.submit_only_flow("generate", body, webhook_url))

    def submit_edit(
        self,
        prompt: str,
        image: ImageInput,
        *,
        num_images: int = 1,
        aspect_ratio: EditAspectRatio = "auto",
        output_format: OutputFormat = "png",
        sync_mode: bool = False,
        webhook_url: str | None = None,
    ) -> Job:
        """Submit an edit without waiting; returns the :class:`Job`."""
        body = self._core.edit_request(
            prompt, image, num_images, aspect_ratio, output_format, sync_mode
        )
        return self._run(self._core.submit_only_flow("edit", body, webhook_url))

    def get_status(self, request_id: str) -> JobStatus:
        """Read a job's status once (retried on transient failures up to ``max_retries``)."""
        return self._run(self._core.get_status_flow(request_id))

    def wait(
        self,
        job_or_request_id: Job | JobStatus | str,
        *,
        timeout: float | None = None,
        on_status: OnStatus | None = None,
    ) -> ImageResult:
        """Wait for any job, also one submitted elsewhere, and return its result.

        Raises:
            JobFailedError, JobTimeoutError, APIStatusError: as for :meth:`generate`.
        """
        return self._result(self._run(self._flow_wait(job_or_request_id, timeout), on_status))

    # ------------------------------------------------------------------ lifecycle

    def close(self) -> None:
        """Close the connection pool (unless the http_client was supplied by the caller)."""
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class AsyncMAIImageClient(_ClientBase):
    """Asynchronous client; the same methods as :class:`MAIImageClient`, awaitable.

    One client serves hundreds of concurrent jobs on one event loop; at most
    ``max_concurrent_requests`` HTTP requests are in flight at once (the rest wait their turn in
    the client). Create it inside the loop that uses it (an ``httpx.AsyncClient`` must not be
    shared across event loops).
    ``on_status`` may be a plain function or a coroutine function.
    """

    def __init__(
        self,
        api_key: str | None = None,
        *,
        base_url: str | None = None,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        max_retries: int = DEFAULT_MAX_RETRIES,
        wait_timeout: float = DEFAULT_WAIT_TIMEOUT,
        http_client: httpx.AsyncClient | None = None,
        poll_policy: PollPolicy | None = None,
        retry_policy: RetryPolicy | None = None,
        clock: Clock | None = None,
        max_input_image_bytes: int = DEFAULT_MAX_INPUT_BYTES,
        max_download_bytes: int = DEFAULT_MAX_DOWNLOAD_BYTES,
        max_concurrent_requests: int = DEFAULT_MAX_CONCURRENT_REQUESTS,
        durations: DurationStats | None = None,
    ) -> None:
        _check_http_client(http_client, httpx.AsyncClient)
        require_whole(max_concurrent_requests, "max_concurrent_requests", minimum=1)
        super().__init__(
            api_key,
            base_url=base_url,
            timeout=timeout,
            max_retries=max_retries,
            wait_timeout=wait_timeout,
            poll_policy=poll_policy,
            retry_policy=retry_policy,
            clock=clock,
            max_input_image_bytes=max_input_image_bytes,
            max_download_bytes=max_download_bytes,
            durations=durations,
        )
        self._owns_http = http_client is None
        self._http = http_client or httpx.AsyncClient(
            timeout=self._core.timeout,
            transport=SpreadTransport(
                max_connections=max_concurrent_requests,
                keepalive_expiry=KEEPALIVE_EXPIRY,
                verify=ssl_context(),
            ),
            follow_redirects=False,
            verify=ssl_context(),
        )
        # httpcore's pool does work per queued request on every state change, which turns
        # quadratic with hundreds of requests queued at once (1,000 concurrent jobs took two
        # minutes). Queue here instead, so the pool never holds more than it can serve.
        self._limiter = asyncio.Semaphore(max_concurrent_requests)

    async def _run(self, flow: Flow[T], on_status: OnStatus | None = None) -> T:
        reply: httpx.Response | httpx.TransportError | None = None
        while True:
            try:
                action = flow.send(reply)
            except StopIteration as stop:
                return stop.value  # type: ignore[no-any-return]
            reply = None
            if isinstance(action, HTTPRequest):
                wait = action.timeout.pool
                try:
                    async with asyncio.timeout(wait):
                        await self._limiter.acquire()
                except TimeoutError:
                    reply = _no_free_slot(wait)
                    continue
                try:
                    reply = await self._http.request(**_request_args(action))
                except httpx.TransportError as exc:
                    reply = exc
                finally:
                    self._limiter.release()
            elif isinstance(action, Sleep):
                await self._core.clock.asleep(action.seconds)
            elif isinstance(action, Notify) and on_status is not None:
                outcome: Any = on_status(action.status, action.elapsed)
                if inspect.isawaitable(outcome):
                    await outcome

    def _result(self, result: ImageResult) -> ImageResult:
        result._ahttp = self._http
        result._ahttp_loop = weakref.ref(asyncio.get_running_loop())
        result._max_bytes = self.max_download_bytes
        return result

    async def generate(
        self,
        prompt: str,
        *,
        num_images: int = 1,
        aspect_ratio: GenerateAspectRatio = "auto",
        output_format: OutputFormat = "png",
        sync_mode: bool = False,
        webhook_url: str | None = None,
        timeout: float | None = None,
        on_status: OnStatus | None = None,
    ) -> ImageResult:
        """Async :meth:`MAIImageClient.generate`."""
        flow = self._flow_generate(
            prompt, num_images, aspect_ratio, output_format, sync_mode, webhook_url, timeout
        )
        return self._result(await self._run(flow, on_status))

    async def edit(
        self,
        prompt: str,
        image: ImageInput,
        *,
        num_images: int = 1,
        aspect_ratio: EditAspectRatio = "auto",
        output_format: OutputFormat = "png",
        sync_mode: bool = False,
        webhook_url: str | None = None,
        timeout: float | None = None,
        on_status: OnStatus | None = None,
    ) -> ImageResult:
        """Async :meth:`MAIImageClient.edit`."""
        flow = self._flow_edit(
            prompt, image, num_images, aspect_ratio, output_format, sync_mode, webhook_url, timeout
        )
        return self._result(await self._run(flow, on_status))

    async def submit_generate(
        self,
        prompt: str,
        *,
        num_images: int = 1,
        aspect_ratio: GenerateAspectRatio = "auto",
        output_format: OutputFormat = "png",
        sync_mode: bool = False,
        webhook_url: str | None = None,
    ) -> Job:
        """Async :meth:`MAIImageClient.submit_generate`."""
        body = self._core.generate_request(
            prompt, num_images, aspect_ratio, output_format, sync_mode
        )
        return await self._run(self._core.submit_only_flow("generate", body, webhook_url))

    async def submit_edit(
        self,
        prompt: str,
        image: ImageInput,
        *,
        num_images: int = 1,
        aspect_ratio: EditAspectRatio = "auto",
        output_format: OutputFormat = "png",
        sync_mode: bool = False,
        webhook_url: str | None = None,
    ) -> Job:
        """Async :meth:`MAIImageClient.submit_edit`."""
        body = self._core.edit_request(
            prompt, image, num_images, aspect_ratio, output_format, sync_mode
        )
        return await self._run(self._core.submit_only_flow("edit", body, webhook_url))

    async def get_status(self, request_id: str) -> JobStatus:
        """Async :meth:`MAIImageClient.get_status`."""
        return await self._run(self._core.get_status_flow(request_id))

    async def wait(
        self,
        job_or_request_id: Job | JobStatus | str,
        *,
        timeout: float | None = None,
        on_status: OnStatus | None = None,
    ) -> ImageResult:
        """Async :meth:`MAIImageClient.wait`."""
        flow = self._flow_wait(job_or_request_id, timeout)
        return self._result(await self._run(flow, on_status))

    async def aclose(self) -> None:
        """Close the connection pool (unless the http_client was supplied by the caller)."""
        if self._owns_http:
            await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


__all__ = ["AsyncMAIImageClient", "MAIImageClient"]
