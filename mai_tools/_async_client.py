"""The async client: the same operations as :class:`~mai_tools.MAIImageClient`, awaitable."""

from __future__ import annotations

import asyncio
import inspect
import os
import weakref
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

import httpx

from ._actions import (
    AsyncRequestGate,
    BookIO,
    Flow,
    HTTPRequest,
    Notify,
    OnStatus,
    Sleep,
    WaitForSignal,
)
from ._base_client import (
    _ClientBase,
    _deprecated,
    _is_remote,
    _no_free_slot,
    _request_args,
    _with_image,
)
from ._bodies import aread_capped
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
from ._spread_pools import spread_transport
from ._webhooks import Ticket
from .jobbook import JobScope

T = TypeVar("T")


class AsyncMAIImageClient(_ClientBase[httpx.AsyncClient]):
    """Asynchronous client; the same methods as :class:`MAIImageClient`, awaitable.

    One client serves hundreds of concurrent jobs on one event loop; at most
    ``max_concurrent_requests`` HTTP requests are in flight at once (the rest wait their turn in
    the client). Create it inside the loop that uses it (an ``httpx.AsyncClient`` must not be
    shared across event loops). ``on_status`` may be a plain function or a coroutine function.
    Local image files for :meth:`edit` are read in a worker thread, never on the event loop.
    """

    _http_type = httpx.AsyncClient

    def _init_limiter(self, slots: int) -> None:
        # Requests wait for a slot here, never in httpcore's pool (see pool_limits).
        self._limiter = asyncio.Semaphore(slots)
        self._loop: weakref.ref[asyncio.AbstractEventLoop] | None = None

    def _new_http(self, options: ClientOptions) -> httpx.AsyncClient:
        # The slots' requests spread over small pools (cheaper than one big one), unless the
        # environment names a proxy: then a plain httpx client, which honours it itself.
        verify = ssl_context()
        return httpx.AsyncClient(
            timeout=options.request_timeout,
            limits=pool_limits(),  # unbounded: the slots above bound what is in flight
            follow_redirects=False,
            verify=verify,
            transport=spread_transport(options.max_concurrent_requests, verify),
        )

    async def _run(
        self,
        flow: Flow[T],
        on_status: OnStatus | None = None,
        ticket: Ticket | None = None,
        gate: AsyncRequestGate | None = None,
    ) -> T:
        if self._loop is None:
            self._loop = weakref.ref(asyncio.get_running_loop())
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
                        reply = await self._book_io(action)
                    except Exception as exc:
                        error = exc
                elif isinstance(action, HTTPRequest):
                    reply = await self._send(action, gate, sending)
                elif isinstance(action, Sleep) or (
                    isinstance(action, WaitForSignal) and not ticket
                ):
                    await self._core.clock.asleep(action.seconds)
                elif isinstance(action, WaitForSignal) and ticket is not None:
                    ticket.bind(action.request_id)
                    reply = await ticket.await_signal(action.seconds)
                elif isinstance(action, Notify) and on_status is not None:
                    outcome: Any = on_status(action.status, action.elapsed)
                    if inspect.isawaitable(outcome):
                        await outcome
            except BaseException:
                self._abandon(flow, sent=sending[0])
                raise

    async def _book_io(self, action: BookIO) -> Any:
        book = self._book_or_none()
        if not book.offload:
            return action.op(book)  # SQLite: tens of microseconds, on the loop
        # A network book runs in a thread; a cancel waits for the statement to end, so the
        # flow settles a book whose state it knows.
        done = asyncio.ensure_future(asyncio.to_thread(action.op, book))
        try:
            return await asyncio.shield(done)
        except asyncio.CancelledError:
            await asyncio.wait([done])
            raise

    async def _send(
        self, action: HTTPRequest, gate: AsyncRequestGate | None, sending: list[bool]
    ) -> httpx.Response | httpx.TransportError:
        wait = action.timeout.pool
        try:
            async with asyncio.timeout(wait):
                await self._limiter.acquire()
        except TimeoutError:
            return _no_free_slot(wait)
        try:
            if gate is not None:
                await gate.admit(action)  # may wait, or raise to refuse: nothing is sent
            sending[0] = True
            reply: httpx.Response | httpx.TransportError
            try:
                async with self._http.stream(**_request_args(action)) as response:
                    reply = await aread_capped(response, response.aiter_bytes(), action.max_body)
            except httpx.TransportError as exc:
                reply = exc
            if gate is not None:
                gate.observe(action, reply)
            return reply
        finally:
            self._limiter.release()

    @property
    def _saver(self) -> Saver:
        # The pool's connections belong to the loop the client's requests ran in; a save from
        # another loop (a second asyncio.run) gets a fresh connection instead.
        loop = self._loop() if self._loop is not None else None
        return Saver(
            ahttp=self._http,
            loop=loop or asyncio.get_running_loop(),
            max_bytes=self.max_download_bytes,
            retry_policy=self._core.retry_policy,
        )

    async def _edit_body(
        self,
        prompt: str,
        image: ImageInput,
        num_images: int,
        aspect_ratio: str,
        output_format: str,
        sync_mode: bool,
    ) -> EditRequest:
        body = self._edit_fields(prompt, num_images, aspect_ratio, output_format, sync_mode)
        if _is_remote(image):
            return _with_image(body, self._image_url(image))
        # A path (or bytes to encode) means file I/O and base64 work: not on the event loop.
        return _with_image(body, await asyncio.to_thread(self._image_url, image))

    async def run(
        self,
        request: JobRequest,
        *,
        webhook_url: str | None = None,
        timeout: float | None = None,
        on_status: OnStatus | None = None,
        extra_body: Mapping[str, Any] | None = None,
        gate: AsyncRequestGate | None = None,
        idempotency_key: str | None = None,
        job_scope: JobScope | None = None,
    ) -> ImageResult:
        """Async :meth:`MAIImageClient.run`."""
        flow, ticket = self._submit_flow(
            request, webhook_url, timeout, extra_body, idempotency_key, job_scope
        )
        with self._pushing(ticket):
            return await self._run(flow, on_status, ticket, gate)

    async def submit(
        self,
        request: JobRequest,
        *,
        webhook_url: str | None = None,
        extra_body: Mapping[str, Any] | None = None,
        gate: AsyncRequestGate | None = None,
        idempotency_key: str | None = None,
        job_scope: JobScope | None = None,
    ) -> Job:
        """Async :meth:`MAIImageClient.submit`."""
        flow, ticket = self._submit_only(
            request, webhook_url, extra_body, idempotency_key, job_scope
        )
        try:
            job = await self._run(flow, gate=gate)
        except BaseException:
            self._drop(ticket)
            raise
        return self._submitted(job, ticket)

    async def wait(
        self,
        job_or_request_id: Job | JobStatus | str,
        *,
        timeout: float | None = None,
        on_status: OnStatus | None = None,
        gate: AsyncRequestGate | None = None,
    ) -> ImageResult:
        """Async :meth:`MAIImageClient.wait`."""
        flow, ticket = self._wait_flow(job_or_request_id, timeout)
        with self._pushing(ticket):
            return await self._run(flow, on_status, ticket, gate)

    async def get_status(
        self, request_id: str, *, gate: AsyncRequestGate | None = None
    ) -> JobStatus:
        """Async :meth:`MAIImageClient.get_status`."""
        return await self._run(self._core.status_flow(request_id), gate=gate)

    async def save(
        self,
        result: ImageResult,
        directory: str | os.PathLike[str],
        *,
        name: str | None = None,
        metadata: bool = False,
        max_bytes: int | None = None,
        timeout: float | None = None,
    ) -> list[Path]:
        """Async :meth:`MAIImageClient.save`; the images download concurrently."""
        result, stem = self._save_plan(result, directory, name)
        paths = await self._saver.asave(
            stem, result.image_urls, directory, max_bytes=max_bytes, timeout=timeout
        )
        if metadata:
            await asyncio.to_thread(self._saved, result, directory, stem, paths)
        book = self.job_book
        if book is not None and book.offload:
            await asyncio.to_thread(self._note_saved, result, paths)
        else:
            self._note_saved(result, paths)
        self._check_unavailable(result, paths)
        return paths

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
        extra_body: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
        job_scope: JobScope | None = None,
    ) -> ImageResult:
        """Async :meth:`MAIImageClient.generate`."""
        body = self._generate_body(prompt, num_images, aspect_ratio, output_format, sync_mode)
        return await self.run(
            body,
            webhook_url=webhook_url,
            timeout=timeout,
            on_status=on_status,
            extra_body=extra_body,
            idempotency_key=idempotency_key,
            job_scope=job_scope,
        )

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
        extra_body: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
        job_scope: JobScope | None = None,
    ) -> ImageResult:
        """Async :meth:`MAIImageClient.edit`."""
        body = await self._edit_body(
            prompt, image, num_images, aspect_ratio, output_format, sync_mode
        )
        return await self.run(
            body,
            webhook_url=webhook_url,
            timeout=timeout,
            on_status=on_status,
            extra_body=extra_body,
            idempotency_key=idempotency_key,
            job_scope=job_scope,
        )

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
        """Deprecated: ``await submit(GenerateRequest(prompt=..., ...))``."""
        _deprecated("submit_generate(...)", "submit(GenerateRequest(prompt=..., ...))")
        body = self._generate_body(prompt, num_images, aspect_ratio, output_format, sync_mode)
        return await self.submit(body, webhook_url=webhook_url)

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
        """Deprecated: ``await submit(EditRequest(prompt=..., image_urls=[...]))``."""
        _deprecated("submit_edit(...)", "submit(EditRequest(prompt=..., image_urls=[...]))")
        body = await self._edit_body(
            prompt, image, num_images, aspect_ratio, output_format, sync_mode
        )
        return await self.submit(body, webhook_url=webhook_url)

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


__all__ = ["AsyncMAIImageClient"]
