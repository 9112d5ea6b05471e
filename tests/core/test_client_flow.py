"""Behaviour of generate/edit/submit/get_status/wait, through both clients over a fake gateway."""

from __future__ import annotations

import base64
import email.utils
import json
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pydantic
import pytest

from mai_tools import (
    APIConnectionError,
    APIResponseError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    DownloadError,
    EditRequest,
    GenerateRequest,
    ImageResult,
    InsufficientBalanceError,
    InvalidArgumentError,
    InvalidImageError,
    Job,
    JobFailedError,
    JobStatus,
    JobTimeoutError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    ServerError,
    Status,
    __version__,
    image_to_url,
)
from mai_tools._agent import Done, Running, answer_text, arun, outcome_of, run, structured
from tests.support.fakes import (
    BASE,
    EDIT_RID,
    KEY,
    PNG_1PX,
    RID,
    Harness,
    ok,
    queued,
    status_body,
)

# --------------------------------------------------------------------------- happy paths


def test_generate_sends_the_documented_request(harness: Harness) -> None:
    seen: list[tuple[Status, float]] = []
    result = harness.call(
        "generate",
        "a red fox in fresh snow",
        num_images=2,
        aspect_ratio="16:9",
        output_format="webp",
        on_status=lambda s, e: seen.append((s.status, e)),
    )
    gw = harness.gateway
    post = gw.posts[0]
    assert str(post.url) == f"{BASE}/microsoft-mai-image-2-5/v1/microsoft-mai-image-2-5-request"
    assert post.headers["Ocp-Apim-Subscription-Key"] == KEY
    assert post.headers["Content-Type"] == "application/json"
    assert post.headers["Cache-Control"] == "no-cache"
    assert post.headers["User-Agent"].startswith(f"mai-tools/{__version__}")
    assert "X-Webhook-URL" not in post.headers
    assert gw.body() == {
        "prompt": "a red fox in fresh snow",
        "num_images": 2,
        "aspect_ratio": "16:9",
        "output_format": "webp",
        "sync_mode": False,
    }
    for get in gw.gets:
        assert str(get.url) == f"{BASE}/v2/requests/status/{RID}"
        assert get.headers["Ocp-Apim-Subscription-Key"] == KEY
        assert get.headers["Cache-Control"] == "no-cache"
    assert isinstance(result, ImageResult)
    assert result.request_id == RID
    assert result.status is Status.COMPLETED
    assert result.image_urls == [f"https://cdn.example.com/v1/{RID}/output.png"]
    assert result.media_type == "image/png"
    assert [s for s, _ in seen] == [Status.QUEUED, Status.PROCESSING, Status.COMPLETED]
    elapsed = [e for _, e in seen]
    assert elapsed == sorted(elapsed)
    assert len(gw.posts) == 1


def test_edit_path_becomes_data_uri(harness: Harness, tmp_path: Path) -> None:
    harness.gateway.submits = [queued(EDIT_RID)]
    harness.gateway.polls = [ok("COMPLETED", EDIT_RID)]
    src = tmp_path / "photo.bin"  # the type comes from the bytes, not the name
    src.write_bytes(PNG_1PX)
    result = harness.call("edit", "make it warmer", src, aspect_ratio="3:4")
    post = harness.gateway.posts[0]
    assert post.url.path == "/microsoft-mai-image-2-5-edit/v1/microsoft-mai-image-2-5-edit-request"
    body = harness.gateway.body()
    assert body["image_urls"] == ["data:image/png;base64," + base64.b64encode(PNG_1PX).decode()]
    assert body["aspect_ratio"] == "3:4"
    assert result.request_id == EDIT_RID


@pytest.mark.parametrize(
    "image",
    [
        PNG_1PX,
        "https://example.com/cat.jpg",
        "data:image/png;base64," + base64.b64encode(PNG_1PX).decode(),
        # A wrong declared type is corrected from the bytes.
        "data:application/octet-stream;base64," + base64.b64encode(PNG_1PX).decode(),
    ],
)
def test_edit_accepts_bytes_urls_and_data_uris(harness: Harness, image: Any) -> None:
    harness.call("edit", "add a rainbow", image)
    sent = harness.gateway.body()["image_urls"][0]
    if isinstance(image, str) and image.startswith("http"):
        assert sent == image
    else:
        assert sent.startswith("data:image/png;base64,")


@pytest.mark.parametrize(
    ("image", "message"),
    [
        ("/no/such/file.png", "No such image file"),
        ("~no-such-user-here/cat.png", "No such image file"),
        (b"hello, not an image", "not a PNG, JPEG, WEBP or GIF"),
        ("ftp://example.com/a.png", "Unsupported image URL scheme 'ftp'"),
        ("file:///etc/passwd", "Unsupported image URL scheme 'file'"),
        ("data:text/plain;base64,aGVsbG8=", "not an image type"),
        ("data:image/png,rawtext", "base64"),
        ("", "empty string"),
        (b"", "empty"),
    ],
)
def test_bad_images_fail_before_sending(harness: Harness, image: Any, message: str) -> None:
    with pytest.raises(InvalidImageError, match=message):
        harness.call("edit", "add a rainbow", image)
    assert harness.gateway.requests == []


def test_oversized_image_refused(harness: Harness, tmp_path: Path) -> None:
    harness.client_kwargs["max_input_image_bytes"] = 1000
    big = tmp_path / "big.png"
    big.write_bytes(PNG_1PX + b"\0" * 2000)
    with pytest.raises(InvalidImageError, match="over the 1000 bytes limit"):
        harness.call("edit", "shrink", big)
    with pytest.raises(InvalidImageError, match="limit"):
        harness.call("edit", "shrink", big.read_bytes())
    assert harness.gateway.requests == []


def test_directory_is_not_an_image(harness: Harness, tmp_path: Path) -> None:
    with pytest.raises(InvalidImageError, match="not a regular file"):
        harness.call("edit", "shrink", tmp_path)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"prompt": "hi"}, "prompt"),
        ({"prompt": "   \n\t  "}, "prompt"),
        ({"prompt": "x" * 5001}, "prompt"),
        ({"num_images": 0}, "num_images"),
        ({"num_images": 5}, "num_images"),
        ({"aspect_ratio": "7:3"}, "aspect_ratio"),
        ({"output_format": "gif"}, "output_format"),
    ],
)
def test_invalid_generate_arguments_send_nothing(
    harness: Harness, kwargs: dict[str, Any], field: str
) -> None:
    args = {"prompt": "a valid prompt", **kwargs}
    prompt = args.pop("prompt")
    with pytest.raises(InvalidArgumentError) as info:
        harness.call("generate", prompt, **args)
    assert field in str(info.value)
    assert isinstance(info.value, ValueError)
    # One exception family: pydantic's field-by-field detail is kept, and its error the cause.
    assert [e["loc"] for e in info.value.errors()] == [(field,)]
    assert isinstance(info.value.__cause__, pydantic.ValidationError)
    assert harness.gateway.requests == []


@pytest.mark.parametrize("ratio", ["21:9", "5:4", "4:5"])
def test_generate_only_ratios_refused_for_edit(harness: Harness, ratio: str) -> None:
    with pytest.raises(InvalidArgumentError, match="aspect_ratio"):
        harness.call("edit", "a valid prompt", PNG_1PX, aspect_ratio=ratio)
    assert harness.gateway.requests == []
    harness.call("generate", "a valid prompt", aspect_ratio=ratio)


def test_prompt_limits_are_inclusive(harness: Harness) -> None:
    harness.call("generate", "abc")
    harness.call("generate", "y" * 5000)
    assert len(harness.gateway.posts) == 2


# --------------------------------------------------------------------------- sync mode, webhook


def test_sync_mode_uses_inline_result_without_polling(harness: Harness) -> None:
    uri = "data:image/png;base64," + base64.b64encode(PNG_1PX).decode()
    harness.gateway.submits = [httpx.Response(200, json=status_body("COMPLETED", urls=[uri]))]
    seen: list[Status] = []
    result = harness.call(
        "generate", "inline please", sync_mode=True, on_status=lambda s, e: seen.append(s.status)
    )
    assert harness.gateway.body()["sync_mode"] is True
    assert harness.gateway.gets == []
    assert result.image_urls == [uri]
    assert result.has_data_uris
    assert seen == [Status.COMPLETED]
    assert "base64," not in repr(result) or len(repr(result)) < 600


def test_sync_mode_falls_back_to_polling(harness: Harness) -> None:
    result = harness.call("generate", "inline please", sync_mode=True)
    assert len(harness.gateway.gets) >= 1
    assert result.status is Status.COMPLETED


def test_sync_mode_failure_raises(harness: Harness) -> None:
    harness.gateway.submits = [httpx.Response(200, json=status_body("FAILED", error="nsfw"))]
    with pytest.raises(JobFailedError, match="nsfw"):
        harness.call("generate", "inline please", sync_mode=True)


def test_webhook_header(harness: Harness) -> None:
    harness.call("generate", "hook me", webhook_url="https://example.com/hook")
    assert harness.gateway.posts[0].headers["X-Webhook-URL"] == "https://example.com/hook"
    assert len(harness.gateway.gets) >= 1  # waiting still polls


@pytest.mark.parametrize("url", ["ftp://x/y", "not a url", "https://ok.example/\r\nX-Evil: 1"])
def test_bad_webhook_refused(harness: Harness, url: str) -> None:
    with pytest.raises(InvalidArgumentError, match="webhook_url"):
        harness.call("generate", "hook me", webhook_url=url)
    assert harness.gateway.requests == []


# --------------------------------------------------------------------------- key stays home


def test_same_origin_polling_url_is_used(harness: Harness) -> None:
    url = f"{BASE}:443/v2/requests/status/{RID}?token=1"
    harness.gateway.submits = [queued(polling_url=url)]
    harness.call("generate", "a cat")
    assert harness.gateway.gets
    for request in harness.gateway.gets:
        assert request.url.path == f"/v2/requests/status/{RID}"
        assert request.url.query == b"token=1"  # the gateway's own URL, not a rebuilt one


@pytest.mark.parametrize(
    "foreign",
    [
        "https://evil.example.com/v2/requests/status/x",
        "http://gateway.pixazo.ai/v2/requests/status/x",  # other scheme
        "https://gateway.pixazo.ai:8443/v2/requests/status/x",  # other port
        "https://[gateway.pixazo.ai/v2/requests/status/x",  # malformed
    ],
)
def test_foreign_polling_url_never_gets_the_key(
    harness: Harness, foreign: str, caplog: pytest.LogCaptureFixture
) -> None:
    harness.gateway.submits = [queued(polling_url=foreign)]
    harness.call("generate", "a cat")
    for request in harness.gateway.gets:
        assert str(request.url) == f"{BASE}/v2/requests/status/{RID}"
    assert sum("another origin" in r.message for r in caplog.records) == 1


def test_a_relative_polling_url_is_resolved_against_base_url(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    harness.gateway.submits = [queued(polling_url=f"/v2/requests/status/{RID}?token=2")]
    harness.call("generate", "a cat")
    for request in harness.gateway.gets:
        assert str(request.url) == f"{BASE}/v2/requests/status/{RID}?token=2"
    assert not [r for r in caplog.records if "another origin" in r.message]


def test_a_status_for_another_job_is_not_adopted(harness: Harness) -> None:
    harness.gateway.polls = [ok("COMPLETED", "microsoft-mai-image-2-5_someone-else")]
    with pytest.raises(APIResponseError, match="another job") as info:
        harness.call("get_status", RID)
    assert info.value.request_id == RID


def test_redirects_are_not_followed(harness: Harness) -> None:
    harness.gateway.polls = [
        httpx.Response(302, headers={"Location": "https://evil.example.com/steal"})
    ]
    with pytest.raises(Exception, match="redirect") as info:
        harness.call("get_status", RID)
    assert "evil.example.com" not in {r.url.host for r in harness.gateway.requests}
    assert KEY not in str(info.value)


def test_request_id_is_path_safe(harness: Harness) -> None:
    for bad in ["../../admin", "a/b", "", "x y", "id?x=1"]:
        with pytest.raises(InvalidArgumentError, match="request id"):
            harness.call("get_status", bad)
        with pytest.raises(InvalidArgumentError, match="request id"):
            harness.call("wait", bad)
    assert harness.gateway.requests == []


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("code", "cls"),
    [
        (400, BadRequestError),
        (401, AuthenticationError),
        (402, InsufficientBalanceError),
        (403, PermissionDeniedError),
        (404, NotFoundError),
        (500, ServerError),
        (503, ServerError),
    ],
)
def test_submit_status_errors_are_typed_and_not_retried(
    harness: Harness, code: int, cls: type[Exception]
) -> None:
    harness.gateway.submits = [
        httpx.Response(code, json={"error": "Some Error", "message": f"detail {code}"})
    ]
    with pytest.raises(cls) as info:
        harness.call("generate", "a cat")
    err = info.value
    assert getattr(err, "status_code", None) == code
    assert getattr(err, "error", None) == "Some Error"
    assert getattr(err, "message", None) == f"detail {code}"
    assert f"detail {code}" in str(err)
    assert len(harness.gateway.posts) == 1


def test_balance_error_matches_spec_body(harness: Harness) -> None:
    harness.gateway.submits = [
        httpx.Response(
            402,
            json={
                "error": "Insufficient Balance",
                "message": "Your wallet does not have enough balance.",
            },
        )
    ]
    with pytest.raises(InsufficientBalanceError, match="Top up"):
        harness.call("generate", "a cat")


def test_error_text_never_contains_the_key(harness: Harness) -> None:
    harness.gateway.submits = [
        httpx.Response(401, json={"error": f"bad key {KEY}", "message": f"key {KEY} unknown"})
    ]
    with pytest.raises(AuthenticationError) as info:
        harness.call("generate", "a cat")
    assert KEY not in str(info.value)
    assert KEY not in repr(info.value)
    assert KEY not in (info.value.error or "")


@pytest.mark.parametrize(("status", "text"), [("FAILED", "content policy"), ("ERROR", "gpu lost")])
def test_failed_jobs_raise_job_failed(harness: Harness, status: str, text: str) -> None:
    harness.gateway.polls = [ok("PROCESSING"), ok(status, error=text)]
    with pytest.raises(JobFailedError) as info:
        harness.call("generate", "a cat")
    assert info.value.request_id == RID
    assert info.value.status is Status(status)
    assert text in str(info.value)
    assert info.value.error == text


def test_unknown_status_keeps_waiting(harness: Harness, caplog: pytest.LogCaptureFixture) -> None:
    harness.gateway.polls = [ok("WARMING_UP"), ok("PROCESSING"), ok("COMPLETED")]
    seen: list[JobStatus] = []
    result = harness.call("generate", "a cat", on_status=lambda s, e: seen.append(s))
    assert result.status is Status.COMPLETED
    assert any("WARMING_UP" in r.getMessage() for r in caplog.records)
    unknown = [s for s in seen if s.status is Status.UNKNOWN]
    assert unknown
    assert unknown[0].raw_status == "WARMING_UP"


def test_completed_without_output_is_an_error(harness: Harness) -> None:
    harness.gateway.polls = [httpx.Response(200, json={"request_id": RID, "status": "COMPLETED"})]
    with pytest.raises(Exception, match="without output"):
        harness.call("generate", "a cat")


# --------------------------------------------------------------------------- retries


def test_status_reads_survive_transient_failures(harness: Harness) -> None:
    harness.gateway.polls = [
        httpx.Response(
            502, text="<html><body>Bad Gateway</body></html>", headers={"Content-Type": "text/html"}
        ),
        httpx.Response(500, json={"error": "Internal", "message": "oops"}),
        httpx.ConnectError("refused"),
        httpx.ReadTimeout("slow"),
        httpx.RemoteProtocolError("Server disconnected without sending a response."),
        httpx.Response(200, text="<html>maintenance</html>", headers={"Content-Type": "text/html"}),
        httpx.Response(200, json=["not", "an", "object"]),
        httpx.Response(408, text=""),
        ok("PROCESSING"),
        ok("COMPLETED"),
    ]
    result = harness.call("generate", "a cat")
    assert result.status is Status.COMPLETED
    assert len(harness.gateway.posts) == 1


@pytest.mark.parametrize("as_date", [False, True])
def test_retry_after_is_honoured_on_polls(harness: Harness, as_date: bool) -> None:
    if as_date:
        when = datetime.now(UTC) + timedelta(seconds=30)
        value = email.utils.format_datetime(when, usegmt=True)
    else:
        value = "7"
    harness.gateway.polls = [
        httpx.Response(429, headers={"Retry-After": value}, json={"error": "Too Many Requests"}),
        ok("COMPLETED"),
    ]
    harness.call("generate", "a cat")
    gets = [
        t
        for t, r in zip(harness.gateway.request_times, harness.gateway.requests, strict=True)
        if r.method == "GET"
    ]
    gap = gets[1] - gets[0]
    assert gap >= (25 if as_date else 7)


def test_submit_retried_on_429_then_succeeds(harness: Harness) -> None:
    harness.gateway.submits = [
        httpx.Response(429, headers={"Retry-After": "2"}, json={"error": "Too Many Requests"}),
        httpx.Response(429, headers={"Retry-After": "3"}, json={"error": "Too Many Requests"}),
        queued(),
    ]
    harness.call("generate", "a cat")
    times = [
        t
        for t, r in zip(harness.gateway.request_times, harness.gateway.requests, strict=True)
        if r.method == "POST"
    ]
    assert len(times) == 3
    assert times[1] - times[0] >= 2
    assert times[2] - times[1] >= 3


def test_submit_429_exhausted_raises_rate_limit(harness: Harness) -> None:
    harness.gateway.submits = [
        httpx.Response(429, headers={"Retry-After": "1"}, json={"error": "Too Many Requests"})
    ]
    with pytest.raises(RateLimitError) as info:
        harness.call("generate", "a cat")
    assert info.value.retry_after == 1
    assert len(harness.gateway.posts) == 4  # 1 + max_retries (3)


def test_submit_retried_when_never_connected(harness: Harness) -> None:
    harness.gateway.submits = [httpx.ConnectError("refused"), httpx.ConnectTimeout("t"), queued()]
    harness.call("generate", "a cat")
    assert len(harness.gateway.posts) == 3


@pytest.mark.parametrize(
    ("exc", "cls"),
    [
        (httpx.ReadTimeout("timed out"), APITimeoutError),
        (httpx.RemoteProtocolError("Server disconnected"), APIConnectionError),
        (httpx.ReadError("reset"), APIConnectionError),
        (httpx.WriteTimeout("w"), APITimeoutError),
    ],
)
def test_submit_not_retried_once_it_may_have_arrived(
    harness: Harness, exc: Exception, cls: type[Exception]
) -> None:
    harness.gateway.submits = [exc, queued()]
    with pytest.raises(cls, match="may have received it"):
        harness.call("generate", "a cat")
    assert len(harness.gateway.posts) == 1


@pytest.mark.parametrize("code", [500, 502, 503])
def test_submit_5xx_not_retried(harness: Harness, code: int) -> None:
    harness.gateway.submits = [httpx.Response(code, text="<html>oops</html>"), queued()]
    with pytest.raises(ServerError):
        harness.call("generate", "a cat")
    assert len(harness.gateway.posts) == 1


def test_submit_connect_errors_exhausted(harness: Harness) -> None:
    harness.gateway.submits = [httpx.ConnectError("refused")]
    with pytest.raises(APIConnectionError, match="ConnectError"):
        harness.call("generate", "a cat")
    assert len(harness.gateway.posts) == 4


def test_non_json_submit_answer(harness: Harness) -> None:
    harness.gateway.submits = [httpx.Response(202, text="<html>hi</html>")]
    with pytest.raises(Exception, match="expected JSON"):
        harness.call("generate", "a cat")


def test_get_status_retries_are_bounded(harness: Harness) -> None:
    harness.gateway.polls = [httpx.Response(503, text="down")]
    with pytest.raises(ServerError):
        harness.call("get_status", RID)
    assert len(harness.gateway.gets) == 4


def test_get_status_is_typed(harness: Harness) -> None:
    harness.gateway.polls = [
        ok(
            "COMPLETED",
            created_at="2026-03-31T10:00:00.000Z",
            completed_at="2026-03-31T10:00:15.000Z",
            brand_new_field={"x": 1},
        )
    ]
    status = harness.call("get_status", RID)
    assert isinstance(status, JobStatus)
    assert status.status is Status.COMPLETED
    assert status.completed_at is not None
    assert status.created_at is not None
    assert (status.completed_at - status.created_at).total_seconds() == 15
    assert status.image_urls == [f"https://cdn.example.com/v1/{RID}/output.png"]


def test_get_status_404(harness: Harness) -> None:
    harness.gateway.polls = [httpx.Response(404, json={"error": "Not Found", "message": "nope"})]
    with pytest.raises(NotFoundError) as info:
        harness.call("get_status", RID)
    assert info.value.request_id == RID
    assert len(harness.gateway.gets) == 1


# --------------------------------------------------------------------------- deadlines


def test_wait_always_ends(harness: Harness) -> None:
    harness.gateway.polls = [ok("PROCESSING")]
    start = harness.clock.monotonic()
    with pytest.raises(JobTimeoutError) as info:
        harness.call("generate", "a cat", timeout=30)
    spent = harness.clock.monotonic() - start
    assert 29.9 <= spent <= 30.1
    err = info.value
    assert err.request_id == RID
    assert err.polling_url == f"{BASE}/v2/requests/status/{RID}"
    assert err.last_status is not None
    assert err.last_status.status is Status.PROCESSING
    assert "wait(" in str(err)
    # The job finishes later: wait() resumes it.
    harness.gateway.polls = [ok("COMPLETED")]
    assert harness.call("wait", RID).status is Status.COMPLETED


def test_default_wait_timeout_applies(harness: Harness) -> None:
    harness.client_kwargs["wait_timeout"] = 12
    harness.gateway.polls = [ok("QUEUED")]
    start = harness.clock.monotonic()
    with pytest.raises(JobTimeoutError):
        harness.call("generate", "a cat")
    assert harness.clock.monotonic() - start <= 12.1


def test_outage_during_wait_ends_at_deadline(harness: Harness) -> None:
    harness.gateway.polls = [httpx.ConnectError("down")]
    start = harness.clock.monotonic()
    with pytest.raises(JobTimeoutError, match="last status read failed") as info:
        harness.call("generate", "a cat", timeout=20)
    assert harness.clock.monotonic() - start <= 20.1
    assert isinstance(info.value.__cause__, APIConnectionError)


def test_huge_retry_after_ends_with_timeout(harness: Harness) -> None:
    harness.gateway.polls = [httpx.Response(429, headers={"Retry-After": "3600"})]
    with pytest.raises((JobTimeoutError, RateLimitError)):
        harness.call("generate", "a cat", timeout=10)
    assert harness.clock.monotonic() - 1000.0 <= 10.1


@pytest.mark.parametrize("bad", [0, -1, float("nan")])
def test_bad_timeout_refused(harness: Harness, bad: float) -> None:
    with pytest.raises(InvalidArgumentError, match="timeout"):
        harness.call("generate", "a cat", timeout=bad)
    assert harness.gateway.requests == []


# --------------------------------------------------------------------------- submit / wait split


def test_submit_then_wait_by_job_and_by_id(harness: Harness) -> None:
    request = GenerateRequest(prompt="a cat")
    job = harness.call("submit", request)
    assert isinstance(job, Job)
    assert job.request_id == RID
    assert job.status is Status.QUEUED
    assert job.polling_url == f"{BASE}/v2/requests/status/{RID}"
    assert harness.gateway.gets == []
    result = harness.call("wait", job)
    assert result.request_id == RID
    assert result.request == request  # this client submitted it: the result says what it was
    harness.gateway.polls = [ok("COMPLETED")]
    assert harness.call("wait", RID).request == request


def test_a_job_submitted_elsewhere_is_read_at_once(harness: Harness) -> None:
    harness.gateway.polls = [ok("COMPLETED")]
    before = harness.clock.monotonic()
    result = harness.call("wait", RID)
    assert result.status is Status.COMPLETED
    assert result.request is None
    assert harness.clock.monotonic() == before  # a job of unknown age may be long done


def test_a_job_this_client_submitted_is_waited_for_by_its_age(harness: Harness) -> None:
    # Submitted, then waited for later: the first read follows the schedule from submission
    # (a job 0 s old is not done yet), not "at once" as for a job of unknown age.
    harness.call("submit", GenerateRequest(prompt="a cat"))
    harness.gateway.polls = [ok("COMPLETED")]
    before = harness.clock.monotonic()
    harness.call("wait", RID)
    assert harness.clock.monotonic() > before


def test_submit_edit(harness: Harness) -> None:
    harness.gateway.submits = [queued(EDIT_RID)]
    request = EditRequest(
        prompt="make it blue", image_urls=[image_to_url(PNG_1PX)], output_format="jpeg"
    )
    job = harness.call("submit", request)
    assert job.request_id == EDIT_RID
    assert harness.gateway.body()["output_format"] == "jpeg"


@pytest.mark.parametrize("method", ["submit_generate", "submit_edit"])
def test_the_old_submit_methods_still_work_with_a_deprecation_warning(
    harness: Harness, method: str
) -> None:
    args: tuple[object, ...] = ("a cat",) if method == "submit_generate" else ("blue", PNG_1PX)
    with pytest.deprecated_call(match=r"use submit\("):
        job = harness.call(method, *args)  # type: ignore[call-overload]
    assert job.request_id == RID


def test_on_status_may_be_async_for_async_client(harness: Harness) -> None:
    if harness.mode != "async":
        pytest.skip("async callbacks are for the async client")
    seen: list[Status] = []

    async def cb(status: JobStatus, elapsed: float) -> None:
        seen.append(status.status)

    harness.call("generate", "a cat", on_status=cb)
    assert seen == [Status.QUEUED, Status.PROCESSING, Status.COMPLETED]


# --------------------------------------------------------------------------- logging and secrets


def test_key_never_logged(harness: Harness, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    for name in ("httpx", "httpcore", "mai_tools"):
        logging.getLogger(name).setLevel(logging.DEBUG)
    harness.gateway.polls = [httpx.Response(503, text="x"), ok("COMPLETED")]
    harness.call("generate", "a cat")
    harness.gateway.submits = [httpx.Response(401, json={"error": KEY})]
    with pytest.raises(AuthenticationError) as info:
        harness.call("generate", "a cat")
    assert caplog.records
    for record in caplog.records:
        assert KEY not in record.getMessage()
    assert KEY not in str(info.value)
    client = harness.sync_client if harness.mode == "sync" else harness.async_client
    assert KEY not in repr(client)
    assert KEY not in repr(vars(client))


def test_result_json_roundtrip(harness: Harness) -> None:
    result = harness.call("generate", "a cat")
    data = json.loads(result.model_dump_json())
    assert ImageResult.model_validate(data).model_dump() == result.model_dump()


def test_a_wait_ended_early_says_the_time_waited_not_the_timeout(harness: Harness) -> None:
    # A status read answered 429 "wait an hour": the wait ends at once, as still running.
    harness.gateway.polls = [httpx.Response(429, headers={"Retry-After": "3600"})]
    start = harness.clock.monotonic()
    with pytest.raises(JobTimeoutError) as info:
        harness.call("generate", "a cat", timeout=300)
    waited = harness.clock.monotonic() - start
    error = info.value
    assert error.timeout == 300
    assert error.waited == pytest.approx(waited, abs=0.05)
    assert waited < 30
    assert "after 300s" not in str(error)
    assert f"after {round(waited, 1):g}s of the 300s allowed" in str(error)
    assert "retry later" not in str(error).lower()
    running = outcome_of(error)
    assert isinstance(running, Running)
    assert running.waited == error.waited
    assert "after 300s" not in answer_text(running)


@pytest.mark.parametrize("request_id", ["has spaces/and slashes", "x" * 300, "-leading-dash"])
def test_sync_mode_keeps_the_inline_image_when_the_request_id_cannot_be_polled(
    harness: Harness, request_id: str, tmp_path: Path
) -> None:
    # The image is in the answer: nothing needs to be polled, so an id we could not poll with
    # is no reason to raise (and lose a charged image).
    uri = "data:image/png;base64," + base64.b64encode(PNG_1PX).decode()
    body = status_body("COMPLETED", request_id, urls=[uri])
    harness.gateway.submits = [httpx.Response(200, json=body)]
    result = harness.call("generate", "inline please", sync_mode=True)
    assert result.request_id == request_id
    assert result.image_urls == [uri]
    assert harness.gateway.gets == []
    (path,) = harness.call("save", result, tmp_path)
    assert path.parent == tmp_path
    assert path.read_bytes() == PNG_1PX


def test_a_queued_answer_whose_request_id_cannot_be_polled_is_still_refused(
    harness: Harness,
) -> None:
    harness.gateway.submits = [httpx.Response(202, json={"request_id": "a b", "status": "QUEUED"})]
    with pytest.raises(APIResponseError, match="cannot be used to poll") as info:
        harness.call("generate", "a cat")
    assert info.value.may_have_arrived


# --------------------------------------------------------------------------- empty media URLs


def test_an_empty_media_url_is_not_an_image_url(harness: Harness, tmp_path: Path) -> None:
    harness.gateway.polls = [ok("COMPLETED", urls=[""])]
    result = harness.call("generate", "a cat")
    assert result.image_urls == []
    assert result.request_id == RID
    assert result.unavailable == [
        f"image 1 of {RID} cannot be fetched: the gateway sent an empty URL"
    ]
    with pytest.raises(DownloadError, match=r"image 1 of .* cannot be fetched.*not saved"):
        harness.call("save", result, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_an_empty_media_url_beside_a_good_one_saves_the_good_one(
    harness: Harness, tmp_path: Path
) -> None:
    good = "https://cdn.example.com/v1/good.png"
    harness.gateway.downloads[good] = httpx.Response(
        200, content=PNG_1PX, headers={"content-type": "image/png"}
    )
    harness.gateway.polls = [ok("COMPLETED", urls=["", good, "  "])]
    result = harness.call("generate", "a cat")
    assert result.image_urls == [good]
    assert [u.split(":")[0] for u in result.unavailable] == [
        f"image 1 of {RID} cannot be fetched",
        f"image 3 of {RID} cannot be fetched",
    ]
    with pytest.raises(DownloadError, match=r"image 1 .*image 3 .*not saved \(saved: ") as info:
        harness.call("save", result, tmp_path)
    (saved,) = tmp_path.iterdir()
    assert str(saved) in str(info.value)
    assert saved.read_bytes() == PNG_1PX


def test_the_agent_answer_names_the_job_and_why_its_image_cannot_be_fetched(
    harness: Harness,
) -> None:
    harness.gateway.polls = [ok("COMPLETED", urls=[""])]
    if harness.mode == "sync":
        outcome = run(harness.sync_client, lambda c: c.generate("a cat"))
    else:
        outcome = harness.loop.run_until_complete(
            arun(harness.async_client, lambda c: c.generate("a cat"))
        )
    assert isinstance(outcome, Done)
    assert outcome.result.image_urls == []
    text = answer_text(outcome)
    assert f"request_id: {RID}" in text
    assert "cannot be fetched: the gateway sent an empty URL" in text
    assert structured(outcome).save_error == outcome.save_error
    assert "try again" not in text.lower()


def test_a_flood_of_empty_media_urls_is_read_quickly_and_reported_briefly() -> None:
    body = status_body("COMPLETED", urls=[""] * 200_000)
    status = JobStatus.from_body(body)  # linear: this took minutes when each was looked up
    assert status.image_urls == []
    assert len(status.unavailable) == 5
    assert status.unavailable[-1] == "and 199996 more empty URLs"
