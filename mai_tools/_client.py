"""The synchronous client: an I/O driver over the shared flows, on one ``httpx.Client``."""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

import httpx

from ._actions import (
    BookIO,
    Flow,
    HTTPRequest,
    Notify,
    OnStatus,
    RequestGate,
    Sleep,
    WaitForSignal,
)
from ._base_client import (
    _ClientBase,
    _deprecated,
    _no_free_slot,
    _request_args,
    _with_image,
)
from ._bodies import read_capped
from ._config import ClientOptions, pool_limits, ssl_context
from ._download import Saver
from ._images import ImageInput
from ._models import (
    EditAspectRatio,
    EditRequest,
    GenerateAspectRatio,
    ImageResult,
    Job,
    JobRequest,
    JobStatus,
    OutputFormat,
)
from ._webhooks import Ticket
from .jobbook import JobScope

T = TypeVar("T")


class MAIImageClient(_ClientBase[httpx.Client]):
    """Synchronous client for MAI Image 2.5 on the Pixazo gateway.

    Safe to share across threads. Use as a context manager, or call :meth:`close`. Both
    clients take the same arguments; here ``http_client`` is an ``httpx.Client``.
    """

    _http_type = httpx.Client

    def _init_limiter(self, slots: int) -> None:
        self._limiter = threading.BoundedSemaphore(slots)

    def _new_http(self, options: ClientOptions) -> httpx.Client:
        return httpx.Client(
            timeout=options.request_timeout,
            limits=pool_limits(),  # unbounded: the slots above bound what is in flight
            follow_redirects=False,
            verify=ssl_context(),
        )

    # ------------------------------------------------------------------ driver

    def _run(
        self,
        flow: Flow[T],
        on_status: OnStatus | None = None,
        ticket: Ticket | None = None,
        gate: RequestGate | None = None,
    ) -> T:
        reply: Any = None
        error: Exception | None = None
        while True:
            try:
                action = flow.send(reply) if error is None else flow.throw(error)
            except StopIteration as stop:
                return stop.value  # type: ignore[no-any-return]
            reply, error = None, None
            sending = [False]
            try:
                if isinstance(action, BookIO):
                    try:
                        reply = action.op(self._book_or_none())
                    except Exception as exc:
                        error = exc
                elif isinstance(action, HTTPRequest):
                    reply = self._send(action, gate, sending)
                elif isinstance(action, Sleep) or (
                    isinstance(action, WaitForSignal) and not ticket
                ):
                    self._core.clock.sleep(action.seconds)
                elif isinstance(action, WaitForSignal) and ticket is not None:
                    ticket.bind(action.request_id)
                    reply = ticket.wait(action.seconds)
                elif isinstance(action, Notify) and on_status is not None:
                    on_status(action.status, action.elapsed)
            except BaseException:
                self._abandon(flow, sent=sending[0])
                raise

    def _send(
        self, action: HTTPRequest, gate: RequestGate | None, sending: list[bool]
    ) -> httpx.Response | httpx.TransportError:
        wait = action.timeout.pool
        if not self._limiter.acquire(timeout=wait):
            return _no_free_slot(wait)
        try:
            if gate is not None:
                gate.admit(action)  # may wait, or raise to refuse: nothing is sent
            sending[0] = True
            reply: httpx.Response | httpx.TransportError
            try:
                with self._http.stream(**_request_args(action)) as response:
                    reply = read_capped(response, response.iter_bytes(), action.max_body)
            except httpx.TransportError as exc:
                reply = exc
            if gate is not None:
                gate.observe(action, reply)
            return reply
        finally:
            self._limiter.release()

    @property
    def _saver(self) -> Saver:
        return Saver(
            http=self._http,
            max_bytes=self.max_download_bytes,
            retry_policy=self._core.retry_policy,
        )

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

    def run(
        self,
        request: JobRequest,
        *,
        webhook_url: str | None = None,
        timeout: float | None = None,
        on_status: OnStatus | None = None,
        extra_body: Mapping[str, Any] | None = None,
        gate: RequestGate | None = None,
        idempotency_key: str | None = None,
        job_scope: JobScope | None = None,
    ) -> ImageResult:
        """Submit ``request`` and wait for its images: the one way every job runs.

        Args:
            request: a :class:`GenerateRequest` or :class:`EditRequest`.
            webhook_url: also have the gateway POST the final status there.
            timeout: bound on the whole call in seconds (default: ``wait_timeout``).
            on_status: called as ``on_status(status, elapsed)`` on every status change.
            extra_body: gateway fields this version does not know yet, added to the JSON body
                unchecked (a field the request already has is refused).
            gate: admits each HTTP request of this call (see :class:`RequestGate`): a run-wide
                pace, or a journal that records a submit just before it is sent.
            idempotency_key: names this job (e.g. a workflow's step id). A call with the same
                key, in any process sharing the job book, continues the same job instead of
                paying for another; the same key with another request is refused. Needs the
                job book (on by default).
            job_scope: who the job is for and which front end made it
                (:class:`~mai_tools.jobbook.JobScope`; front ends set it).

        Returns:
            The :class:`ImageResult`, carrying ``request``.

        Raises:
            InvalidArgumentError: invalid arguments (nothing was sent).
            JobFailedError: the job ended FAILED or ERROR.
            JobTimeoutError: not finished within ``timeout``; resume with :meth:`wait`.
            APIStatusError: the gateway refused the request.
            APIConnectionError: the gateway could not be reached (``may_have_arrived`` says
                whether a job may exist: a submit that may have arrived is never re-sent).
            JobUnknownError: the job book holds an earlier submit of this key that may have
                created a job whose request id was never recorded (it is not sent again).
            JobBookError: the job book could not be written (nothing was sent).
        """
        flow, ticket = self._submit_flow(
            request, webhook_url, timeout, extra_body, idempotency_key, job_scope
        )
        with self._pushing(ticket):
            return self._run(flow, on_status, ticket, gate)

    def submit(
        self,
        request: JobRequest,
        *,
        webhook_url: str | None = None,
        extra_body: Mapping[str, Any] | None = None,
        gate: RequestGate | None = None,
        idempotency_key: str | None = None,
        job_scope: JobScope | None = None,
    ) -> Job:
        """Submit ``request`` without waiting; returns the :class:`Job` (wait with :meth:`wait`).

        Arguments and errors are as for :meth:`run`.
        """
        flow, ticket = self._submit_only(
            request, webhook_url, extra_body, idempotency_key, job_scope
        )
        try:
            job = self._run(flow, gate=gate)
        except BaseException:
            self._drop(ticket)
            raise
        return self._submitted(job, ticket)

    def wait(
        self,
        job_or_request_id: Job | JobStatus | str,
        *,
        timeout: float | None = None,
        on_status: OnStatus | None = None,
        gate: RequestGate | None = None,
    ) -> ImageResult:
        """Wait for any job, also one submitted elsewhere, and return its result.

        A job this client submitted is polled as in :meth:`run` (its age and the learned
        durations are known) and its result carries the request.

        Raises:
            JobFailedError, JobTimeoutError, APIStatusError: as for :meth:`run`.
        """
        flow, ticket = self._wait_flow(job_or_request_id, timeout)
        with self._pushing(ticket):
            return self._run(flow, on_status, ticket, gate)

    def get_status(self, request_id: str, *, gate: RequestGate | None = None) -> JobStatus:
        """Read a job's status once (retried on transient failures up to ``max_retries``)."""
        return self._run(self._core.status_flow(request_id), gate=gate)

    def save(
        self,
        result: ImageResult,
        directory: str | os.PathLike[str],
        *,
        name: str | None = None,
        metadata: bool = False,
        max_bytes: int | None = None,
        timeout: float | None = None,
    ) -> list[Path]:
        """Download every image of ``result`` into ``directory`` and return the file paths.

        Files are named ``<name>_<n>.<ext>`` (``name`` defaults to the request id; the
        extension comes from the image bytes), streamed to a temporary file and renamed into
        place, refused when they are not an image or exceed ``max_bytes`` (default:
        ``max_download_bytes``). ``data:`` URIs (sync mode) are decoded. The API key is never
        sent with a download. Rate limits (429, ``Retry-After`` honoured), 5xx answers and
        dropped connections are retried with backoff; ``timeout`` (seconds, default 300)
        bounds the whole save. With ``metadata=True`` a ``<name>.json`` sidecar records the
        request (prompt and options), the request id and which file is which image.

        Raises:
            DownloadError: a download failed, was too large, was not an image, did not finish
                within ``timeout``, or its URL is malformed.
            InvalidArgumentError: a bad ``name`` or ``timeout`` (nothing was downloaded).
        """
        result, stem = self._save_plan(result, directory, name)
        paths = self._saver.save(
            stem, result.image_urls, directory, max_bytes=max_bytes, timeout=timeout
        )
        self._note_saved(result, paths)
        if metadata:
            self._saved(result, directory, stem, paths)
        self._check_unavailable(result, paths)
        return paths

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
        extra_body: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
        job_scope: JobScope | None = None,
    ) -> ImageResult:
        """Generate images from a text prompt and wait for them: :meth:`run` of a
        :class:`GenerateRequest` built from these keywords.

        Args:
            prompt: what to draw (3-5000 characters).
            num_images: 1-4.
            aspect_ratio: ``auto`` or one of 21:9, 16:9, 3:2, 4:3, 5:4, 1:1, 4:5, 3:4, 2:3, 9:16.
            output_format: ``png``, ``jpeg`` or ``webp``.
            sync_mode: ask the gateway to answer inline with data URIs.
            webhook_url: as for :meth:`run`.
            timeout: as for :meth:`run`.
            on_status: as for :meth:`run`.
            extra_body: as for :meth:`run`.
            idempotency_key: as for :meth:`run`.
            job_scope: as for :meth:`run`.

        It raises what :meth:`run` raises.
        """
        body = self._generate_body(prompt, num_images, aspect_ratio, output_format, sync_mode)
        return self.run(
            body,
            webhook_url=webhook_url,
            timeout=timeout,
            on_status=on_status,
            extra_body=extra_body,
            idempotency_key=idempotency_key,
            job_scope=job_scope,
        )

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
        extra_body: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
        job_scope: JobScope | None = None,
    ) -> ImageResult:
        """Edit an image following an instruction, and wait for the result: :meth:`run` of an
        :class:`EditRequest` built from these keywords.

        ``image`` is an http(s) URL, a ``data:`` URI, a local path or raw bytes; local files
        and bytes are checked to be PNG/JPEG/WEBP/GIF and sent as a data URI. Other arguments
        and errors are as for :meth:`generate` (edit allows fewer aspect ratios).

        Raises:
            InvalidImageError: the image is missing, not an image, too large, or an
                unsupported URL scheme (nothing was sent).
        """
        body = self._edit_body(prompt, image, num_images, aspect_ratio, output_format, sync_mode)
        return self.run(
            body,
            webhook_url=webhook_url,
            timeout=timeout,
            on_status=on_status,
            extra_body=extra_body,
            idempotency_key=idempotency_key,
            job_scope=job_scope,
        )

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
        """Deprecated: ``submit(GenerateRequest(prompt=..., ...))``."""
        _deprecated("submit_generate(...)", "submit(GenerateRequest(prompt=..., ...))")
        body = self._generate_body(prompt, num_images, aspect_ratio, output_format, sync_mode)
        return self.submit(body, webhook_url=webhook_url)

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
        """Deprecated: ``submit(EditRequest(prompt=..., image_urls=[image_to_url(...)]))``."""
        _deprecated("submit_edit(...)", "submit(EditRequest(prompt=..., image_urls=[...]))")
        body = self._edit_body(prompt, image, num_images, aspect_ratio, output_format, sync_mode)
        return self.submit(body, webhook_url=webhook_url)

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
