"""The OpenTelemetry SDK with in-memory exporters, installed once per test process.

The global providers can be set only once per process, so they are set on first use and every
test reads only what it made: the span exporter records only inside :func:`otel` (other tests
of the process run with a recording SDK but keep nothing), and the metric reader reports
deltas, drained before each test.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import pytest
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import Counter, Histogram, MeterProvider
from opentelemetry.sdk.metrics.export import AggregationTemporality, InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from mai_tools import FakeClock
from tests.support.fakes import Gateway, Harness


class _Switched(InMemorySpanExporter):
    """Keeps spans only while a test of this directory runs."""

    recording = False

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if not self.recording:
            return SpanExportResult.SUCCESS
        return super().export(spans)


@dataclass
class Otel:
    exporter: _Switched
    reader: InMemoryMetricReader

    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def span(self, name: str) -> ReadableSpan:
        found = [s for s in self.spans() if s.name == name]
        assert len(found) == 1, [s.name for s in self.spans()]
        return found[0]

    def collect(self) -> dict[str, list[Any]]:
        """The data points of every metric since the last collection, by metric name."""
        data = self.reader.get_metrics_data()
        found: dict[str, list[Any]] = {}
        for resource in data.resource_metrics if data else ():
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    found.setdefault(metric.name, []).extend(metric.data.data_points)
        return found


_installed: list[Otel] = []


def _install() -> Otel:
    if not _installed:
        exporter = _Switched()
        tracer_provider = TracerProvider()
        tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
        trace.set_tracer_provider(tracer_provider)
        delta = AggregationTemporality.DELTA
        reader = InMemoryMetricReader(preferred_temporality={Counter: delta, Histogram: delta})
        metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
        _installed.append(Otel(exporter, reader))
    return _installed[0]


@pytest.fixture
def otel() -> Iterator[Otel]:
    installed = _install()
    installed.reader.get_metrics_data()  # drain what earlier tests recorded
    installed.exporter.clear()
    installed.exporter.recording = True
    try:
        yield installed
    finally:
        installed.exporter.recording = False
        installed.exporter.clear()


@pytest.fixture(params=["sync", "async"])
def harness(request: pytest.FixtureRequest) -> Iterator[Harness]:
    clock = FakeClock(1000.0)
    gateway = Gateway()
    gateway.clock = clock
    harness = Harness(mode=request.param, gateway=gateway, clock=clock)
    yield harness
    harness.close()
