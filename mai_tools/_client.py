"""The client constructor shared by both clients, and the sync client.

The async client is in :mod:`mai_tools._async_client`; both are I/O drivers over the shared
flows in :mod:`mai_tools._flow`.

Both are built by one constructor (:class:`_ClientBase`) from one frozen
:class:`~mai_tools._config.ClientOptions`; each adds only its driver (how to send, sleep and
report) and its connection pool.
"""

from __future__ import annotations

import contextlib
import threading
import warnings
from collections.abc import Iterator
from types import TracebackType
from typing import Any, ClassVar, Generic, Self, TypeVar

import httpx
import pydantic

from ._bodies import read_capped
from ._config import ClientOptions, ssl_context
from ._constants import (
    DEFAULT_MAX_CONCURRENT_REQUESTS,
    DEFAULT_MAX_DOWNLOAD_BYTES,
    DEFAULT_MAX_INPUT_BYTES,
    DEFAULT_MAX_RETRIES,
    DEFAULT_REQUEST_TIMEOUT,
    DEFAULT_WAIT_TIMEOUT,
    KEEPALIVE_EXPIRY,
)
from ._download import Saver
from ._exceptions import ConfigurationError, InvalidArgumentError, JobTimeoutError
from ._flow import Flow, FlowCore, HTTPRequest, Notify, OnStatus, Sleep, WaitForSignal, job_ref
from ._images import ImageInput, image_to_url
from ._models import (
    EditAspectRatio,
    EditRequest,
    GenerateAspectRatio,
    GenerateRequest,
    ImageResult,
    Job,
    JobStatus,
    OutputFormat,
)
from ._policies import Clock, DurationStats, PollPolicy, RetryPolicy
from ._transport import proxy_settings_checked
from ._webhooks import Ticket, WebhookReceiver

T = TypeVar("T")
M = TypeVar("M", bound=pydantic.BaseModel)
HttpT = TypeVar("HttpT", httpx.Client, httpx.AsyncClient)

# Stands in for the source image while an edit's cheap fields are checked, so a bad prompt is
# reported before a file is read.
_NO_IMAGE_YET = "data:,"


def _validated(model: type[M], **fields: Any) -> M:
    """The request model for ``fields``, or InvalidArgumentError naming each bad field."""
    try:
        return model.model_validate(fields)
    except pydantic.ValidationError as exc:
        raise InvalidArgumentError.from_validation(exc) from exc


def _with_image(body: EditRequest, url: str) -> EditRequest:
    # image_to_url returns only http(s) URLs and data: URIs, what the field accepts.
    return body.model_copy(update={"image_urls": [url]})


def _is_remote(image: ImageInput) -> bool:
    return isinstance(image, str) and image.lstrip()[:8].lower().startswith(("http://", "https://"))


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


class _ClientBase(Generic[HttpT]):
    """The one constructor and shared plumbing; subclasses add only the I/O driver.

    Args:
        api_key: the Pixazo subscription key; defaults to ``$PIXAZO_API_KEY``.
        base_url: the gateway origin; defaults to ``$PIXAZO_BASE_URL`` or
            ``https://gateway.pixazo.ai``.
        request_timeout: bound on each HTTP request (seconds or an ``httpx.Timeout``); a
            whole call is bounded by ``wait_timeout`` / the call's own ``timeout=``.
        max_retries: retries of a submit refused with 429 or never connected, and of a
            standalone status read. Status reads while waiting retry until the wait deadline.
        wait_timeout: default bound on a whole generate/edit/wait call, in seconds.
        http_client: an httpx client to use (not closed by this client).
        poll_policy, retry_policy, clock: injectable policies; defaults are adaptive polling,
            exponential backoff with jitter, and the system clock.
        max_input_image_bytes: largest local image accepted by ``edit``.
        max_download_bytes: largest image :meth:`ImageResult.save` writes.
        max_concurrent_requests: API requests in flight at once; further requests wait their
            turn in the client (at most the pool timeout, within the call's deadline).
        durations: learned job durations to start from and add to (a
            :class:`DurationStats`); pass one instance to several clients to share what they
            learn, or restore one saved with :meth:`DurationStats.to_dict`.
        webhooks: a :class:`~mai_tools.WebhookReceiver`: push waiting. Every submit then
            carries ``X-Webhook-URL: <receiver url>/<token>`` (a fresh token per job), and
            waits sleep until the job's callback or a sparse fallback read, then read the
            status once. A per-call ``webhook_url=`` is refused on such a client (the
            gateway takes one URL per job, and the receiver needs it).
        timeout: deprecated name of ``request_timeout``.

    Raises:
        ConfigurationError: no API key, a malformed base URL, or a bad option.
    """

    _http_type: ClassVar[type[httpx.Client] | type[httpx.AsyncClient]]
    _core: FlowCore
    _http: HttpT

    def __init__(
        self,
        api_key: str | None = None,
        *,
        base_url: str | None = None,
        request_timeout: float | httpx.Timeout = DEFAULT_REQUEST_TIMEOUT,
        max_retries: int = DEFAULT_MAX_RETRIES,
        wait_timeout: float = DEFAULT_WAIT_TIMEOUT,
        http_client: HttpT | None = None,
        poll_policy: PollPolicy | None = None,
        retry_policy: RetryPolicy | None = None,
        clock: Clock | None = None,
        max_input_image_bytes: int = DEFAULT_MAX_INPUT_BYTES,
        max_download_bytes: int = DEFAULT_MAX_DOWNLOAD_BYTES,
        max_concurrent_requests: int = DEFAULT_MAX_CONCURRENT_REQUESTS,
        durations: DurationStats | None = None,
        webhooks: WebhookReceiver | None = None,
        timeout: float | httpx.Timeout | None = None,
    ) -> None:
        if webhooks is not None and not isinstance(webhooks, WebhookReceiver):
            raise ConfigurationError(
                f"webhooks must be a mai_tools.WebhookReceiver; got {type(webhooks).__name__}."
            )
        self._webhooks = webhooks
        if http_client is not None and not isinstance(http_client, self._http_type):
            raise TypeError(
                f"http_client must be an {self._http_type.__module__}."
                f"{self._http_type.__name__}, got {type(http_client).__name__}"
            )
        if timeout is not None:
            # The constructor's timeout bounds one HTTP request; the calls' timeout= bounds a
            # whole call. One name for two meanings misled users: the former is renamed.
            warnings.warn(
                f"{type(self).__name__}(timeout=...) is renamed request_timeout=...; "
                "timeout= on generate/edit/wait bounds a whole call.",
                DeprecationWarning,
                stacklevel=2,
            )
            request_timeout = timeout
        options = ClientOptions.resolve(
            api_key,
            base_url=base_url,
            request_timeout=request_timeout,
            max_retries=max_retries,
            wait_timeout=wait_timeout,
            max_input_image_bytes=max_input_image_bytes,
            max_download_bytes=max_download_bytes,
            max_concurrent_requests=max_concurrent_requests,
        )
        self._core = FlowCore(
            options,
            poll_policy=poll_policy,
            retry_policy=retry_policy,
            clock=clock,
            durations=durations,
        )
        self._owns_http = http_client is None
        if http_client is None:
            # Both clients honour HTTP(S)_PROXY/ALL_PROXY/NO_PROXY; a bad one is the operator's.
            with proxy_settings_checked():
                http_client = self._new_http(options)
        self._http = http_client
        self._init_limiter(options.max_concurrent_requests)

    def _new_http(self, options: ClientOptions) -> HttpT:
        raise NotImplementedError

    def _init_limiter(self, slots: int) -> None:
        raise NotImplementedError

    @property
    def options(self) -> ClientOptions:
        """Everything this client was configured with (the key hidden in a Secret)."""
        return self._core.options

    @property
    def base_url(self) -> str:
        """The gateway origin every keyed request goes to."""
        return self._core.options.base_url

    @property
    def wait_timeout(self) -> float:
        """Default bound, in seconds, on a whole generate/edit/wait call."""
        return self._core.options.wait_timeout

    @property
    def max_download_bytes(self) -> int:
        """Largest image :meth:`ImageResult.save` writes for this client's results."""
        return self._core.options.max_download_bytes

    @property
    def poll_policy(self) -> PollPolicy:
        return self._core.poll_policy

    @property
    def durations(self) -> DurationStats:
        """The job durations this client has learned (and polls by), per operation."""
        return self._core.durations

    @property
    def webhooks(self) -> WebhookReceiver | None:
        """The receiver this client waits on for callbacks (push waiting), if any."""
        return self._webhooks

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base_url={self.base_url!r})"

    # ------------------------------------------------------------------ push waiting

    def _ticket(self, webhook_url: str | None) -> Ticket | None:
        """A callback token for one submit (None without a receiver, or a full one)."""
        if self._webhooks is None:
            return None
        if webhook_url is not None:
            raise InvalidArgumentError(
                "webhook_url= cannot be combined with a client made with webhooks=: the "
                "gateway takes one X-Webhook-URL per job, and this client's receiver needs it "
                "to wake the wait. Drop webhook_url=, or use a client without webhooks=."
            )
        return self._webhooks.issue()

    @contextlib.contextmanager
    def _pushing(self, ticket: Ticket | None) -> Iterator[Ticket | None]:
        """Release ``ticket`` when the call ends: parked if the job still runs, else dropped."""
        if ticket is None or self._webhooks is None:
            yield ticket
            return
        try:
            yield ticket
        except JobTimeoutError as exc:
            ticket.bind(exc.request_id)
            self._webhooks.release(ticket, keep=True)  # a later wait() may still be pushed
            raise
        except BaseException:
            self._webhooks.release(ticket)
            raise
        self._webhooks.release(ticket)

    def _submit_flow(
        self, body: GenerateRequest | EditRequest, webhook_url: str | None, timeout: float | None
    ) -> tuple[Flow[ImageResult], Ticket | None]:
        ticket = self._ticket(webhook_url)
        url = ticket.url if ticket is not None else webhook_url
        flow = self._core.run_flow(body, webhook_url=url, timeout=timeout, push=ticket is not None)
        return flow, ticket

    def _submit_only(
        self, body: GenerateRequest | EditRequest, webhook_url: str | None
    ) -> tuple[Flow[Job], Ticket | None]:
        ticket = self._ticket(webhook_url)
        url = ticket.url if ticket is not None else webhook_url
        return self._core.submit_only_flow(body, webhook_url=url), ticket

    def _drop(self, ticket: Ticket | None) -> None:
        if ticket is not None and self._webhooks is not None:
            self._webhooks.release(ticket)

    def _submitted(self, job: Job, ticket: Ticket | None) -> Job:
        """Park the token of a job submitted without waiting, for a later :meth:`wait`."""
        if ticket is not None and self._webhooks is not None:
            ticket.bind(job.request_id)
            self._webhooks.release(ticket, keep=True)
        return job

    def _wait_flow(
        self, job_or_request_id: Job | JobStatus | str, timeout: float | None
    ) -> tuple[Flow[ImageResult], Ticket | None]:
        request_id, polling_url = job_ref(job_or_request_id)
        ticket = self._webhooks.claim(request_id) if self._webhooks is not None else None
        flow = self._core.resume_flow(
            request_id, polling_url, timeout=timeout, push=ticket is not None
        )
        return flow, ticket

    def _generate_body(
        self,
        prompt: str,
        num_images: int,
        aspect_ratio: str,
        output_format: str,
        sync_mode: bool,
    ) -> GenerateRequest:
        return _validated(
            GenerateRequest,
            prompt=prompt,
            num_images=num_images,
            aspect_ratio=aspect_ratio,
            output_format=output_format,
            sync_mode=sync_mode,
        )

    def _edit_fields(
        self,
        prompt: str,
        num_images: int,
        aspect_ratio: str,
        output_format: str,
        sync_mode: bool,
    ) -> EditRequest:
        return _validated(
            EditRequest,
            prompt=prompt,
            image_urls=[_NO_IMAGE_YET],
            num_images=num_images,
            aspect_ratio=aspect_ratio,
            output_format=output_format,
            sync_mode=sync_mode,
        )

    def _image_url(self, image: ImageInput) -> str:
        return image_to_url(image, max_bytes=self._core.options.max_input_image_bytes)


class MAIImageClient(_ClientBase[httpx.Client]):
    """Synchronous client for MAI Image 2.5 on the Pixazo gateway.

    Safe to share across threads. Use as a context manager, or call :meth:`close`. The
    constructor's arguments are described on :class:`_ClientBase` (both clients take the
    same ones); ``http_client`` is an ``httpx.Client``.
    """

    _http_type = httpx.Client

    def _init_limiter(self, slots: int) -> None:
        self._limiter = threading.BoundedSemaphore(slots)

    def _new_http(self, options: ClientOptions) -> httpx.Client:
        return httpx.Client(
            timeout=options.request_timeout,
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

    # ------------------------------------------------------------------ driver

    def _run(
        self, flow: Flow[T], on_status: OnStatus | None = None, ticket: Ticket | None = None
    ) -> T:
        reply: httpx.Response | httpx.TransportError | bool | None = None
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
                    with self._http.stream(**_request_args(action)) as response:
                        reply = read_capped(response, response.iter_bytes(), action.max_body)
                except httpx.TransportError as exc:
                    reply = exc
                finally:
                    self._limiter.release()
            elif isinstance(action, Sleep) or (isinstance(action, WaitForSignal) and not ticket):
                self._core.clock.sleep(action.seconds)
            elif isinstance(action, WaitForSignal) and ticket is not None:
                ticket.bind(action.request_id)
                reply = ticket.wait(action.seconds)
            elif isinstance(action, Notify) and on_status is not None:
                on_status(action.status, action.elapsed)

    def _result(self, result: ImageResult) -> ImageResult:
        saver = Saver(
            http=self._http,
            max_bytes=self.max_download_bytes,
            retry_policy=self._core.retry_policy,
        )
        return result.with_saver(saver)

    def _edit_body(
        self,
        prompt: str,
        image: ImageInput,
        num_images: int,
        aspect_ratio: str,
        output_format: str,
        sync_mode: bool,
    ) -> EditRequest:
        body = self._edit_fields(prompt, num_images, aspect_ratio, output_format, sync_mode)
        return _with_image(body, self._image_url(image))

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
            InvalidArgumentError: invalid arguments (nothing was sent).
            JobFailedError: the job ended FAILED or ERROR.
            JobTimeoutError: not finished within ``timeout``; resume with :meth:`wait`.
            APIStatusError: the gateway refused the request.
            APIConnectionError: the gateway could not be reached.
        """
        body = self._generate_body(prompt, num_images, aspect_ratio, output_format, sync_mode)
        flow, ticket = self._submit_flow(body, webhook_url, timeout)
        with self._pushing(ticket):
            return self._result(self._run(flow, on_status, ticket))

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
        body = self._edit_body(prompt, image, num_images, aspect_ratio, output_format, sync_mode)
        flow, ticket = self._submit_flow(body, webhook_url, timeout)
        with self._pushing(ticket):
            return self._result(self._run(flow, on_status, ticket))

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
        body = self._generate_body(prompt, num_images, aspect_ratio, output_format, sync_mode)
        flow, ticket = self._submit_only(body, webhook_url)
        try:
            job = self._run(flow)
        except BaseException:
            self._drop(ticket)
            raise
        return self._submitted(job, ticket)

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
        body = self._edit_body(prompt, image, num_images, aspect_ratio, output_format, sync_mode)
        flow, ticket = self._submit_only(body, webhook_url)
        try:
            job = self._run(flow)
        except BaseException:
            self._drop(ticket)
            raise
        return self._submitted(job, ticket)

    def get_status(self, request_id: str) -> JobStatus:
        """Read a job's status once (retried on transient failures up to ``max_retries``)."""
        return self._run(self._core.status_flow(request_id))

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
        flow, ticket = self._wait_flow(job_or_request_id, timeout)
        with self._pushing(ticket):
            return self._result(self._run(flow, on_status, ticket))

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


__all__ = ["MAIImageClient"]
