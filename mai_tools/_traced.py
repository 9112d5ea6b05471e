"""A job's flow inside its spans: the job span, a child span per HTTP request, the metrics.

:func:`traced` wraps a flow (:mod:`mai_tools._flow`) in another flow that yields the same
actions and sees what the driver sends back, so the sync and the async client are traced by
the same code and neither driver knows of it. What is emitted, and why nothing is when no
OpenTelemetry module is loaded, is described in :mod:`mai_tools._telemetry`.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

from . import _telemetry as otel
from ._actions import Abandoned, BookIO, Flow, HTTPRequest, Notify
from ._exceptions import APIStatusError, JobFailedError
from ._models import ImageResult, Job, JobStatus, operation_of
from .jobbook._record import Claim

if TYPE_CHECKING:
    from ._models import JobRequest

T = TypeVar("T")


def traced(
    flow: Flow[T],
    *,
    call: str,
    request: JobRequest | None,
    base_url: str,
    request_id: str | None = None,
) -> Flow[T]:
    """``flow`` inside a job span (``call``: run, submit or wait), or ``flow`` itself when no
    OpenTelemetry module is loaded."""
    if not otel.enabled():
        return flow
    return _traced(flow, _Job(call, request, base_url, request_id))


class _Job:
    """What one traced call knows, and learns while its flow runs."""

    def __init__(
        self, call: str, request: JobRequest | None, base_url: str, request_id: str | None
    ) -> None:
        self.call = call
        self.request_id = request_id
        self.server = urlsplit(base_url).hostname or ""
        self.status: str | None = None
        self.submitted = False
        self.adopted = False
        self.images: int | None = request.num_images if request is not None else None
        operation = request.operation if request is not None else None
        if operation is None and request_id is not None:
            operation = operation_of(request_id)  # a job submitted elsewhere: from its id
        self.operation = operation

    def attributes(self) -> dict[str, Any]:
        """The attributes its span and its metrics share."""
        attrs: dict[str, Any] = {"gen_ai.provider.name": otel.PROVIDER}
        if self.operation is not None:
            attrs["gen_ai.operation.name"] = otel.OPERATION_NAMES[self.operation]
            attrs["gen_ai.request.model"] = otel.MODELS[self.operation]
        attrs["gen_ai.output.type"] = "image"
        return attrs

    def name(self) -> str:
        if self.operation is None:
            return "wait_image"
        return f"{otel.OPERATION_NAMES[self.operation]} {otel.MODELS[self.operation]}"

    def span_attributes(self) -> dict[str, Any]:
        attrs = {**self.attributes(), "mai_tools.call": self.call}
        if self.images:
            attrs["gen_ai.request.choice.count"] = self.images
        if self.server:
            attrs["server.address"] = self.server
        return attrs


_QUIET = {"end_on_exit": False, "record_exception": False, "set_status_on_exception": False}
"""``use_span`` options: the wrapper sets statuses itself, and never records an exception's
text (a gateway's message is not ours to export)."""


def _traced(flow: Flow[T], job: _Job) -> Flow[T]:
    from opentelemetry import trace
    from opentelemetry.trace import SpanKind, StatusCode

    started = time.monotonic()
    span = otel.tracer().start_span(
        job.name(),
        context=otel.parent(job.request_id),
        kind=SpanKind.CLIENT,
        attributes=job.span_attributes(),
    )
    outcome = "unknown"
    error_type: str | None = None
    try:
        with trace.use_span(span, **_QUIET):
            try:
                value = yield from _observed(flow, job, span)
            except BaseException as exc:
                outcome, error_type = _failure(exc)
                job.request_id = getattr(exc, "request_id", None) or job.request_id
                span.set_attribute("error.type", error_type)
                span.set_status(StatusCode.ERROR, error_type)
                raise
        outcome = _success(value, job)
        return value
    finally:
        if job.request_id:
            span.set_attribute("gen_ai.response.id", job.request_id)
            otel.remember(job.request_id, span.get_span_context())
        if job.status:
            span.set_attribute("mai_tools.job.status", job.status)
        span.end()
        _record(job, outcome, error_type, time.monotonic() - started)


def _observed(flow: Flow[T], job: _Job, span: Any) -> Flow[T]:
    """Delegate to ``flow`` as ``yield from`` does, seeing each action and its reply (this
    loop is the generator-delegation idiom the drivers also use, with no I/O in it)."""
    from opentelemetry import trace
    from opentelemetry.trace import SpanKind

    reply: Any = None
    error: BaseException | None = None
    while True:
        try:
            action = flow.send(reply) if error is None else flow.throw(error)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]
        reply, error = None, None
        if isinstance(action, Notify):
            job.request_id = action.status.request_id
            job.status = action.status.status.value
        if not isinstance(action, HTTPRequest):
            try:
                reply = yield action
            except GeneratorExit:
                flow.close()
                raise
            except BaseException as exc:
                error = exc
            if isinstance(action, BookIO) and isinstance(reply, Claim) and not reply.created:
                _adopted(job, span, reply)
            continue
        job.submitted = job.submitted or action.kind == "submit"
        attrs = {"http.request.method": action.method}
        if job.server:
            attrs["server.address"] = job.server
        child = otel.tracer().start_span(
            f"{action.method} {action.kind}", kind=SpanKind.CLIENT, attributes=attrs
        )
        try:
            with trace.use_span(child, **_QUIET):
                reply = yield action
        except GeneratorExit:
            child.end()
            flow.close()
            raise
        except BaseException as exc:
            error = exc
        _http_outcome(child, reply if error is None else error)
        child.end()


def _adopted(job: _Job, span: Any, claim: Claim) -> None:
    """The job book gave this call an earlier job (an idempotency key, an identical call)."""
    job.adopted = True
    job.request_id = claim.record.request_id or job.request_id
    span.set_attribute("mai_tools.job.adopted", True)
    span.add_event("mai_tools.job.adopted", {"mai_tools.job.stale": claim.stale})


def _http_outcome(span: Any, reply: object) -> None:
    from opentelemetry.trace import StatusCode

    code = getattr(reply, "status_code", None)
    if isinstance(code, int):
        span.set_attribute("http.response.status_code", code)
        if code >= 400:
            span.set_attribute("error.type", str(code))
            span.set_status(StatusCode.ERROR)
    elif isinstance(reply, BaseException):
        span.set_attribute("error.type", type(reply).__qualname__)
        span.set_status(StatusCode.ERROR)


def _success(value: object, job: _Job) -> str:
    if isinstance(value, ImageResult):
        job.request_id = value.request_id
        job.status = "COMPLETED"
        job.images = job.images or len(value.image_urls)
        return "completed"
    if isinstance(value, Job | JobStatus):
        job.request_id = value.request_id
        job.status = value.status.value
    return "submitted"


def _failure(exc: BaseException) -> tuple[str, str]:
    """(outcome, ``error.type``) of a call that raised ``exc``."""
    if isinstance(exc, JobFailedError):
        return "failed", type(exc).__qualname__
    if isinstance(exc, APIStatusError):  # refused: no job was created
        return "refused", str(exc.status_code)
    if isinstance(exc, Abandoned | GeneratorExit):  # the driver gave up: cancelled, Ctrl-C
        return "unknown", "cancelled"
    return "unknown", type(exc).__qualname__


def _record(job: _Job, outcome: str, error_type: str | None, seconds: float) -> None:
    """The metrics of one call: images by outcome, and how long a job's call took."""
    instruments = otel.instruments()
    if instruments is None:
        return
    attrs = job.attributes()
    if job.submitted and job.images and outcome != "refused":
        instruments["requested"].add(job.images, attrs)
    counted = job.submitted or job.adopted or job.call == "wait"  # else no job was made
    if outcome in otel.OUTCOMES and counted and job.images:
        instruments[outcome].add(job.images, attrs)
    if job.call != "submit" or error_type is not None:
        duration = attrs if error_type is None else {**attrs, "error.type": error_type}
        instruments["duration"].record(seconds, duration)
