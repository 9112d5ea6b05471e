"""The client's traces and metrics against the GenAI semantic conventions (in-memory SDK).

Every scenario runs through the sync and the async client over the scripted gateway.
"""

from __future__ import annotations

import base64
from pathlib import Path

import httpx
import pytest
from opentelemetry.trace import SpanKind, StatusCode

from mai_tools import BadRequestError, GenerateRequest, JobFailedError, JobTimeoutError
from mai_tools._models import OPERATIONS
from mai_tools._telemetry import MODELS, OPERATION_NAMES
from tests.support.fakes import KEY, PNG_1PX, RID, Harness, ok, queued
from tests.telemetry.conftest import Otel

JOB = "generate_image microsoft-mai-image-2-5"
URLS = [f"https://cdn.example.com/v1/{RID}/{n}.png" for n in (1, 2)]


def test_the_tables_name_every_operation() -> None:
    assert set(OPERATION_NAMES) == set(MODELS) == set(OPERATIONS)
    for name, cls in OPERATIONS.items():
        assert MODELS[name] == cls.model_id


def test_one_trace_per_job_with_a_child_span_per_request(
    harness: Harness, otel: Otel, tmp_path: Path
) -> None:
    gw = harness.gateway
    gw.polls = [ok("PROCESSING"), ok("COMPLETED", output={"media_url": URLS})]
    gw.downloads = {url: httpx.Response(200, content=PNG_1PX) for url in URLS}
    result = harness.call("generate", "a red fox", num_images=2)
    harness.call("save", result, tmp_path)

    job = otel.span(JOB)
    assert job.kind is SpanKind.CLIENT
    assert dict(job.attributes or {}) == {
        "gen_ai.operation.name": "generate_image",
        "gen_ai.provider.name": "pixazo",
        "gen_ai.request.model": "microsoft-mai-image-2-5",
        "gen_ai.request.choice.count": 2,
        "gen_ai.output.type": "image",
        "gen_ai.response.id": RID,
        "server.address": "gateway.pixazo.ai",
        "mai_tools.call": "run",
        "mai_tools.job.status": "COMPLETED",
    }
    assert job.status.status_code is StatusCode.UNSET
    spans = otel.spans()
    assert {s.context.trace_id for s in spans} == {job.context.trace_id}
    children = [s for s in spans if s is not job]
    assert all(s.parent is not None and s.parent.span_id == job.context.span_id for s in children)
    names = [s.name for s in children]
    assert names.count("POST submit") == 1
    assert names.count("GET status") == len(gw.gets) - 2  # the downloads are GETs too
    assert names.count("GET download") == 2
    post = otel.span("POST submit")
    assert post.kind is SpanKind.CLIENT
    assert dict(post.attributes or {}) == {
        "http.request.method": "POST",
        "server.address": "gateway.pixazo.ai",
        "http.response.status_code": 202,
    }
    downloads = [s for s in children if s.name == "GET download"]
    assert {(s.attributes or {}).get("server.address") for s in downloads} == {"cdn.example.com"}


def test_a_failed_job_has_an_error_status_and_counts_as_failed(
    harness: Harness, otel: Otel
) -> None:
    harness.gateway.polls = [ok("FAILED", error="content policy")]
    with pytest.raises(JobFailedError):
        harness.call("generate", "a red fox", num_images=3)
    job = otel.span(JOB)
    assert job.status.status_code is StatusCode.ERROR
    assert (job.attributes or {})["error.type"] == "JobFailedError"
    assert (job.attributes or {})["mai_tools.job.status"] == "FAILED"
    points = otel.collect()
    assert [p.value for p in points["mai_tools.images.requested"]] == [3]
    assert [p.value for p in points["mai_tools.images.failed"]] == [3]
    assert "mai_tools.images.completed" not in points


def test_a_job_not_finished_in_time_counts_as_unknown(harness: Harness, otel: Otel) -> None:
    harness.gateway.polls = [ok("PROCESSING")]
    with pytest.raises(JobTimeoutError):
        harness.call("generate", "a red fox", num_images=2, timeout=30)
    job = otel.span(JOB)
    assert (job.attributes or {})["error.type"] == "JobTimeoutError"
    assert (job.attributes or {})["gen_ai.response.id"] == RID
    points = otel.collect()
    assert [p.value for p in points["mai_tools.images.unknown"]] == [2]
    (duration,) = points["gen_ai.client.operation.duration"]
    assert dict(duration.attributes)["error.type"] == "JobTimeoutError"


def test_a_refused_submit_requests_no_image(harness: Harness, otel: Otel) -> None:
    harness.gateway.submits = [httpx.Response(400, json={"error": "bad prompt"})]
    with pytest.raises(BadRequestError):
        harness.call("generate", "a red fox")
    assert (otel.span(JOB).attributes or {})["error.type"] == "400"
    assert (otel.span("POST submit").attributes or {})["http.response.status_code"] == 400
    points = otel.collect()
    assert not any(name.startswith("mai_tools.images.") for name in points)


def test_a_refused_status_read_marks_its_span(harness: Harness, otel: Otel) -> None:
    harness.gateway.polls = [httpx.Response(503, json={"error": "busy"}), ok("COMPLETED")]
    harness.call("generate", "a red fox")
    reads = [s for s in otel.spans() if s.name == "GET status"]
    assert reads[0].status.status_code is StatusCode.ERROR
    assert (reads[0].attributes or {})["error.type"] == "503"
    assert otel.span(JOB).status.status_code is StatusCode.UNSET


def test_metrics_follow_the_conventions(harness: Harness, otel: Otel) -> None:
    harness.call("generate", "a red fox", num_images=2)
    points = otel.collect()
    (duration,) = points["gen_ai.client.operation.duration"]
    assert duration.count == 1
    assert dict(duration.attributes) == {
        "gen_ai.operation.name": "generate_image",
        "gen_ai.provider.name": "pixazo",
        "gen_ai.request.model": "microsoft-mai-image-2-5",
        "gen_ai.output.type": "image",
    }
    assert [p.value for p in points["mai_tools.images.requested"]] == [2]
    assert [p.value for p in points["mai_tools.images.completed"]] == [2]


def test_wait_joins_the_trace_of_its_submit(harness: Harness, otel: Otel) -> None:
    job = harness.call("submit", GenerateRequest(prompt="a red fox"))
    harness.call("wait", job)
    submit, wait = (s for s in otel.spans() if s.name == JOB)
    assert (submit.attributes or {})["mai_tools.call"] == "submit"
    assert (wait.attributes or {})["mai_tools.call"] == "wait"
    assert wait.context.trace_id == submit.context.trace_id
    assert wait.parent is not None
    assert wait.parent.span_id == submit.context.span_id


def test_an_adopted_job_is_an_event(harness: Harness, otel: Otel) -> None:
    request = GenerateRequest(prompt="a lighthouse")
    harness.call("run", request, idempotency_key="step-1")
    harness.call("run", request, idempotency_key="step-1")
    first, again = (s for s in otel.spans() if s.name == JOB)
    assert "mai_tools.job.adopted" not in (first.attributes or {})
    assert (again.attributes or {})["mai_tools.job.adopted"] is True
    assert [e.name for e in again.events] == ["mai_tools.job.adopted"]
    assert (again.attributes or {})["gen_ai.response.id"] == RID
    assert len(harness.gateway.posts) == 1


def test_no_key_or_data_uri_in_any_span(harness: Harness, otel: Otel, tmp_path: Path) -> None:
    data_uri = "data:image/png;base64," + base64.b64encode(PNG_1PX).decode()
    harness.gateway.submits = [queued()]
    harness.gateway.polls = [ok("COMPLETED", output={"media_url": [data_uri]})]
    result = harness.call("edit", "warmer", data_uri)
    harness.call("save", result, tmp_path)
    harness.gateway.polls = [httpx.Response(401, json={"error": f"bad key {KEY}"})]
    with pytest.raises(Exception):  # noqa: B017, PT011 - any refusal: only the spans matter
        harness.call("generate", "a red fox")
    texts = []
    for span in otel.spans():
        texts += [span.name, str(span.status.description)]
        texts += [f"{k}={v!r}" for k, v in (span.attributes or {}).items()]
        for event in span.events:
            texts += [event.name, *(f"{k}={v!r}" for k, v in (event.attributes or {}).items())]
    assert len(otel.spans()) >= 4
    assert not [t for t in texts if KEY in t or "data:" in t or "base64" in t]
