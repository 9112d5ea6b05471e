"""OpenTelemetry traces and metrics of every job, through the global API only.

This module holds the names, the "is OpenTelemetry loaded" check, the instruments and the
download span (:mod:`mai_tools._download` uses it, so it sits low and imports no model);
:mod:`mai_tools._traced` wraps a job's flow in its spans.

OpenTelemetry's guidance for libraries: depend on ``opentelemetry-api`` (the ``otel`` extra),
emit through the global tracer and meter providers, and leave the SDK, exporters and sampling
to the application. Until the application installs an SDK provider the API is a no-op; there
is no switch of our own.

One more rule keeps a process that never uses OpenTelemetry free of it: these modules import
no ``opentelemetry`` module unless ``opentelemetry.trace`` or ``opentelemetry.metrics`` is
already in ``sys.modules``. A provider can only be installed through those modules, so while
neither is imported every span and instrument would be a no-op: skipping them changes
nothing but the cost (``import mai_tools`` and a whole job import no OpenTelemetry module).
The check runs per job, so a provider installed later is used from the next job on.

What a job emits (names and attributes follow the GenAI semantic conventions):

* one CLIENT span per call of ``run`` / ``submit`` / ``wait`` named ``{operation} {model}``
  (``generate_image mai-image-2.5``): ``gen_ai.operation.name`` (``generate_image`` /
  ``edit_image``: the conventions have no image operation, so these are system-specific
  values), ``gen_ai.provider.name`` (``pixazo``), ``gen_ai.request.model``,
  ``gen_ai.request.choice.count`` (``num_images``), ``gen_ai.output.type`` (``image``),
  ``gen_ai.response.id`` (the request id), ``mai_tools.job.status`` (the last status seen),
  ``error.type`` and an ERROR status when the call fails. A job book adoption (an idempotency
  key or an identical undelivered call that continues an earlier job) is an event
  ``mai_tools.job.adopted``. ``wait`` for a job this process submitted joins its trace.
* a child CLIENT span per HTTP request: ``POST submit``, ``GET status`` (each status read)
  and ``GET download`` (each image download, joined to the job's trace by its request id),
  with ``http.request.method``, ``server.address``, ``http.response.status_code`` and
  ``error.type``. No URL, header or body is recorded: no API key or ``data:`` URI can leak.
* metrics: ``gen_ai.client.operation.duration`` (histogram, seconds) and the counters
  ``mai_tools.images.requested`` / ``.completed`` / ``.failed`` / ``.unknown`` (a job whose
  outcome is not known: timed out, interrupted, a submit that may have arrived).
"""

from __future__ import annotations

import sys
import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any
from urllib.parse import urlsplit

from ._constants import EDIT_MODEL_ID, GENERATE_MODEL_ID

INSTRUMENTATION = "mai_tools"
"""The instrumentation scope of every span and instrument."""
PROVIDER = "pixazo"
"""``gen_ai.provider.name``: the gateway serving MAI Image (not a well-known value)."""
OPERATION_NAMES = {"generate": "generate_image", "edit": "edit_image"}
"""``gen_ai.operation.name`` per operation: system-specific, the conventions have no image one."""
MODELS = {"generate": GENERATE_MODEL_ID, "edit": EDIT_MODEL_ID}
"""``gen_ai.request.model`` per operation (a test checks both tables against ``OPERATIONS``)."""
DURATION_BUCKETS: tuple[float, ...] = (
    *(0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92),
    *(163.84, 327.68),
)
"""The conventions' buckets for ``gen_ai.client.operation.duration``, extended: image jobs
take minutes."""
OUTCOMES = ("requested", "completed", "failed", "unknown")
"""The image counters: ``mai_tools.images.<outcome>``."""
_JOBS = 4096
"""How many jobs' span contexts are kept for later downloads and waits to join."""

_spans: OrderedDict[str, Any] = OrderedDict()
_lock = threading.Lock()
_made: dict[str, Any] = {}


def enabled() -> bool:
    """Whether any OpenTelemetry API is loaded (without it every span would be a no-op)."""
    return "opentelemetry.trace" in sys.modules or "opentelemetry.metrics" in sys.modules


def download(request_id: str, index: int, url: str) -> AbstractContextManager[object]:
    """A ``GET download`` span around one image download, in the job's trace when known."""
    if not enabled():
        return nullcontext()
    return _download(request_id, index, url)


def remember(request_id: str, span_context: Any) -> None:
    """Keep the job span of ``request_id``: its later downloads and waits join its trace."""
    with _lock:
        _spans[request_id] = span_context
        _spans.move_to_end(request_id)
        while len(_spans) > _JOBS:
            _spans.popitem(last=False)


def parent(request_id: str | None) -> Any:
    """A context holding the job span of ``request_id`` (None: the current context)."""
    from opentelemetry import trace

    with _lock:
        span_context = _spans.get(request_id) if request_id else None
    if span_context is None:
        return None
    return trace.set_span_in_context(trace.NonRecordingSpan(span_context))


def tracer() -> Any:
    """The package's tracer (a proxy until a provider is set: it follows the provider)."""
    made = _made.get("tracer")
    if made is None:
        from opentelemetry import trace

        from ._version import __version__

        made = _made["tracer"] = trace.get_tracer(INSTRUMENTATION, __version__)
    return made


def instruments() -> dict[str, Any] | None:
    """The duration histogram and image counters (None: no metrics API loaded)."""
    if "opentelemetry.metrics" not in sys.modules:
        return None
    made: dict[str, Any] | None = _made.get("instruments")
    if made is None:
        made = _made["instruments"] = _instruments()
    return made


def _instruments() -> dict[str, Any]:
    # The meter of the global provider: a proxy until a provider is set, then that one's.
    from opentelemetry import metrics

    from ._version import __version__

    meter = metrics.get_meter(INSTRUMENTATION, __version__)
    made: dict[str, Any] = {
        "duration": meter.create_histogram(
            "gen_ai.client.operation.duration",
            unit="s",
            description="GenAI operation duration",
            explicit_bucket_boundaries_advisory=list(DURATION_BUCKETS),
        )
    }
    for outcome in OUTCOMES:
        made[outcome] = meter.create_counter(
            f"mai_tools.images.{outcome}", unit="{image}", description=f"Images {outcome}"
        )
    return made


@contextmanager
def _download(request_id: str, index: int, url: str) -> Iterator[None]:
    from opentelemetry.trace import SpanKind, StatusCode

    attrs: dict[str, Any] = {"http.request.method": "GET", "mai_tools.image.index": index}
    host = urlsplit(url).hostname if url.startswith(("http://", "https://")) else None
    if host:
        attrs["server.address"] = host
    with tracer().start_as_current_span(
        "GET download",
        context=parent(request_id),
        kind=SpanKind.CLIENT,
        attributes=attrs,
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        try:
            yield
        except BaseException as exc:
            span.set_attribute("error.type", type(exc).__qualname__)
            span.set_status(StatusCode.ERROR, type(exc).__qualname__)
            raise
