"""The client constructor and plumbing shared by both clients.

The sync client is in :mod:`mai_tools._client`, the async one in :mod:`mai_tools._async_client`;
both are I/O drivers over the shared flows in :mod:`mai_tools._flow`.

Both are built by one constructor (:class:`_ClientBase`) from one frozen
:class:`~mai_tools._config.ClientOptions`; each adds only its driver (how to send, sleep and
report) and its connection pool.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar

import httpx
import pydantic

from . import _bookkeeping as bk
from . import _traced
from ._actions import Abandoned, BookIO, Flow, HTTPRequest
from ._config import ClientOptions, proxy_settings_checked
from ._constants import (
    DEFAULT_MAX_CONCURRENT_REQUESTS,
    DEFAULT_MAX_DOWNLOAD_BYTES,
    DEFAULT_MAX_INPUT_BYTES,
    DEFAULT_MAX_RETRIES,
    DEFAULT_REQUEST_TIMEOUT,
    DEFAULT_WAIT_TIMEOUT,
)
from ._download import check_file_stem, write_sidecar
from ._exceptions import (
    ConfigurationError,
    DownloadError,
    InvalidArgumentError,
    JobBookError,
    JobTimeoutError,
)
from ._flow import FlowCore, job_ref
from ._images import ImageInput, image_to_url
from ._models import (
    EditFields,
    EditRequest,
    GenerateFields,
    GenerateRequest,
    ImageResult,
    Job,
    JobRequest,
    JobStatus,
    short_url,
)
from ._policies import Clock, DurationStats, PollPolicy, RetryPolicy
from ._webhooks import Ticket, WebhookReceiver
from .jobbook import JobBook, JobBookSpec, JobScope, open_job_book
from .jobbook._limits import SpendingLimits

logger = logging.getLogger("mai_tools")

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


def _deprecated(old: str, new: str) -> None:
    warnings.warn(
        f"{old} is deprecated and will be removed in the next release: use {new}.",
        DeprecationWarning,
        stacklevel=3,
    )


def _short_request(body: dict[str, Any]) -> dict[str, Any]:
    if isinstance(body.get("image_urls"), list):
        body["image_urls"] = [short_url(str(u)) for u in body["image_urls"]]
    return body


def _checked_request(request: object) -> JobRequest:
    """``request`` if it is a request object; else an error that says how to build one."""
    if isinstance(request, GenerateRequest | EditRequest):
        return request
    if isinstance(request, GenerateFields | EditFields):
        raise InvalidArgumentError(
            f"{type(request).__name__} holds a caller's choices, not a whole request: pass "
            "GenerateRequest(...) or EditRequest(..., image_urls=[...]) (or use generate/edit)."
        )
    raise InvalidArgumentError(
        f"Expected a GenerateRequest or an EditRequest, got {type(request).__name__}: build one "
        "by keyword, e.g. GenerateRequest(prompt='a lighthouse at dawn', num_images=2)."
    )


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
    """The one constructor and shared plumbing; subclasses add only the I/O driver."""

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
        job_book: JobBookSpec = None,
        spending_limits: SpendingLimits | None = None,
    ) -> None:
        """Configure the client (read once, here: arguments, then environment, then defaults).

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
            poll_policy: when to read a job's status while waiting (default: adaptive polling,
                learned from the job durations).
            retry_policy: how failed requests are retried (default: exponential backoff with
                jitter, honouring ``Retry-After``).
            clock: where time is read and waits sleep (default: the system clock; a
                :class:`~mai_tools.FakeClock` in tests).
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
            job_book: where every submitted job is remembered (:mod:`mai_tools.jobbook`): a file
                path, a ``postgresql://`` URL, a :class:`~mai_tools.jobbook.JobBook`, or
                ``"off"``. Default: ``$MAI_JOB_BOOK``, else ``jobs.sqlite3`` in the user's state
                directory. It is what makes ``idempotency_key=`` work across processes.
            spending_limits: a :class:`~mai_tools.SpendingLimits`: a call that would pass one
                raises :class:`~mai_tools.SpendingLimitError` before anything is sent. Daily
                limits are counted and reserved in the job book (so they need one), atomically
                across every process sharing it.

        Raises:
            ConfigurationError: no API key, a malformed base URL, or a bad option.
            JobBookError: the job book cannot be opened (never a silent fallback).
        """
        if spending_limits is not None and not isinstance(spending_limits, SpendingLimits):
            raise ConfigurationError(
                "spending_limits must be a mai_tools.SpendingLimits; got "
                f"{type(spending_limits).__name__}."
            )
        self._limits = spending_limits
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
            book=open_job_book(job_book),
        )
        if spending_limits is not None and spending_limits.daily and self._core.book is None:
            raise ConfigurationError(
                "Daily spending limits are counted in the job book, and this client has none "
                "(job_book='off' or MAI_JOB_BOOK=off): turn the book on, or keep only "
                "max_images_per_call."
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
    def spending_limits(self) -> SpendingLimits | None:
        """The limits every call of this client is held to (None: none)."""
        return self._limits

    @property
    def job_book(self) -> JobBook | None:
        """The job book this client writes every submit into (None when it is off)."""
        return self._core.book

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

    def _plan(
        self,
        body: JobRequest,
        extra_body: Mapping[str, Any] | None,
        key: str | None,
        scope: JobScope | None,
    ) -> bk.BookCall | None:
        return bk.plan_call(
            self._core.book, self.base_url, body, extra_body, key, scope, self._limits
        )

    def _submit_flow(
        self,
        body: JobRequest,
        webhook_url: str | None,
        timeout: float | None,
        extra_body: Mapping[str, Any] | None,
        idempotency_key: str | None = None,
        job_scope: JobScope | None = None,
    ) -> tuple[Flow[ImageResult], Ticket | None]:
        body = _checked_request(body)
        call = self._plan(body, extra_body, idempotency_key, job_scope)
        ticket = self._ticket(webhook_url)
        url = ticket.url if ticket is not None else webhook_url
        flow = self._core.run_flow(
            body,
            webhook_url=url,
            timeout=timeout,
            push=ticket is not None,
            extra_body=extra_body,
            book_call=call,
        )
        return _traced.traced(flow, call="run", request=body, base_url=self.base_url), ticket

    def _submit_only(
        self,
        body: JobRequest,
        webhook_url: str | None,
        extra_body: Mapping[str, Any] | None,
        idempotency_key: str | None = None,
        job_scope: JobScope | None = None,
    ) -> tuple[Flow[Job], Ticket | None]:
        body = _checked_request(body)
        call = self._plan(body, extra_body, idempotency_key, job_scope)
        ticket = self._ticket(webhook_url)
        url = ticket.url if ticket is not None else webhook_url
        flow = self._core.submit_only_flow(
            body, webhook_url=url, extra_body=extra_body, book_call=call
        )
        return _traced.traced(flow, call="submit", request=body, base_url=self.base_url), ticket

    # ------------------------------------------------------------------ the job book

    def _book_or_none(self) -> JobBook:
        book = self._core.book
        if book is None:  # pragma: no cover - a flow without a book never asks for it
            raise RuntimeError("a flow asked for the job book of a client without one")
        return book

    def _abandon(self, flow: Flow[Any], *, sent: bool) -> None:
        """Let a flow its driver gives up on settle its job-book entry, then close it."""
        book = self._core.book
        try:
            if book is None:
                return
            action = flow.throw(Abandoned(sent))
            while isinstance(action, BookIO):
                try:
                    reply = action.op(book)
                except Exception as exc:
                    action = flow.throw(exc)
                    continue
                action = flow.send(reply)
        except (Abandoned, StopIteration):
            pass  # the flow settled its entry and ended
        except Exception as exc:  # the driver's own error is the one raised
            logger.debug("settling an abandoned flow failed: %s", exc)
        finally:
            flow.close()

    def _note_saved(self, result: ImageResult, paths: list[Path]) -> None:
        book = self._core.book
        if book is None or not paths:
            return
        try:
            book.saved(result.request_id, [str(p) for p in paths])
        except JobBookError as exc:
            logger.warning(
                "job book: could not record the saved files of %s: %s", result.request_id, exc
            )

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
        known = self._core.recent.get(request_id)
        request = known.request if known is not None else None
        traced = _traced.traced(
            flow, call="wait", request=request, base_url=self.base_url, request_id=request_id
        )
        return traced, ticket

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

    def _save_plan(
        self, result: ImageResult, directory: str | os.PathLike[str], name: str | None
    ) -> tuple[ImageResult, str]:
        """(the result, the file-name stem) for :meth:`save`, checked before any download."""
        if not isinstance(result, ImageResult):
            raise InvalidArgumentError(
                f"save() takes the ImageResult that run/generate/edit/wait returned; got "
                f"{type(result).__name__}."
            )
        if not isinstance(directory, str | os.PathLike):
            raise InvalidArgumentError(
                f"directory must be a path (str or os.PathLike); got {type(directory).__name__}."
            )
        return result, result.request_id if name is None else check_file_stem(name)

    @staticmethod
    def _check_unavailable(result: ImageResult, paths: list[Path]) -> None:
        """After the other images are saved: a DownloadError naming each image of ``result``
        that cannot be fetched (the gateway sent an empty URL for it)."""
        if result.unavailable:
            others = f" (saved: {', '.join(str(p) for p in paths)})" if paths else ""
            error = DownloadError(f"{'; '.join(result.unavailable)}; not saved{others}.")
            error.unavailable = tuple(result.unavailable)
            raise error

    @staticmethod
    def _saved(
        result: ImageResult, directory: str | os.PathLike[str], stem: str, paths: list[Path]
    ) -> list[Path]:
        """Write the JSON sidecar of ``metadata=True``: the request and where each image is."""
        data: dict[str, Any] = {
            "request_id": result.request_id,
            "model_id": result.model_id,
            "operation": None if result.request is None else result.request.operation,
            "prompt": result.prompt,
            "request": None
            if result.request is None
            else _short_request(result.request.model_dump(mode="json")),
            "images": [
                {"file": path.name, "url": short_url(url)}
                for path, url in zip(paths, result.image_urls, strict=False)
            ],
            **result.model_dump(mode="json", include={"created_at", "completed_at"}),
        }
        write_sidecar(Path(directory), stem, data)
        return paths
