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

from ._actions import AsyncRequestGate, Flow, HTTPRequest, Notify, OnStatus, Sleep, WaitForSignal
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
from ._webhooks import Ticket

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
        # A plain httpx client: the environment's proxies are honoured by httpx itself.
        return httpx.AsyncClient(
            timeout=options.request_timeout,
            limits=pool_limits(),  # unbounded: the slots above bound what is in flight
            follow_redirects=False,
            verify=ssl_context(),
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
        reply: httpx.Response | httpx.TransportError | bool | None = None
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
                    if gate is not None:
                        await gate.admit(action)  # may wait, or raise to refuse: nothing is sent
                    try:
                        async with self._http.stream(**_request_args(action)) as response:
                            reply = await aread_capped(
                                response, response.aiter_bytes(), action.max_body
                            )
                    except httpx.TransportError as exc:
                        reply = exc
                    if gate is not None:
                        gate.observe(action, reply)
                finally:
                    self._limiter.release()
            elif isinstance(action, Sleep) or (isinstance(action, WaitForSignal) and not ticket):
                await self._core.clock.asleep(action.seconds)
            elif isinstance(action, WaitForSignal) and ticket is not None:
                ticket.bind(action.request_id)
                reply = await ticket.await_signal(action.seconds)
            elif isinstance(action, Notify) and on_status is not None:
                outcome: Any = on_status(action.status, action.elapsed)
                if inspect.isawaitable(outcome):
                    await outcome

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
    ) -> ImageResult:
        """Async :meth:`MAIImageClient.run`."""
        flow, ticket = self._submit_flow(request, webhook_url, timeout, extra_body)
        with self._pushing(ticket):
            return await self._run(flow, on_status, ticket, gate)

    async def submit(
        self,
        request: JobRequest,
        *,
        webhook_url: str | None = None,
        extra_body: Mapping[str, Any] | None = None,
        gate: AsyncRequestGate | None = None,
    ) -> Job:
        """Async :meth:`MAIImageClient.submit`."""
        flow, ticket = self._submit_only(request, webhook_url, extra_body)
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
    ) -> ImageResult:
        """Async :meth:`MAIImageClient.generate`."""
        body = self._generate_body(prompt, num_images, aspect_ratio, output_format, sync_mode)
        return await self.run(
            body,
            webhook_url=webhook_url,
            timeout=timeout,
            on_status=on_status,
            extra_body=extra_body,
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
