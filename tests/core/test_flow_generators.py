"""The flows driven directly: every retry and deadline decision, with no client and no I/O.

A flow yields actions and is sent replies; these tests are the driver. Each case is a script
of replies and the decision the flow must take: retry (and after how long), give up with which
error, or end the wait as still running. The clock is fake: nothing sleeps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mai_tools import (
    APIConnectionError,
    APIResponseError,
    AuthenticationError,
    GenerateRequest,
    ImageResult,
    JobTimeoutError,
    PollPolicy,
    RateLimitError,
    RetryPolicy,
    ServerError,
)
from mai_tools._actions import Flow, HTTPRequest, Notify, Sleep
from mai_tools._config import ClientOptions
from mai_tools._flow import FlowCore
from mai_tools._policies import FakeClock
from tests.support.fakes import BASE, KEY, RID, ok, queued

T = TypeVar("T")
Step = httpx.Response | httpx.TransportError

BODY = GenerateRequest(prompt="a cat in a hat")
RETRY = RetryPolicy(initial_backoff=1.0, max_backoff=8.0, jitter=0.0, max_retry_after=60.0)


@dataclass
class Run:
    """What a flow did: the requests it made, how long it slept, what it reported."""

    requests: list[HTTPRequest] = field(default_factory=list)
    sleeps: list[float] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    result: Any = None
    error: BaseException | None = None


def drive(flow: Flow[T], replies: list[Step], clock: FakeClock) -> Run:
    """Send ``replies`` in order (the last one repeats); sleeping advances the fake clock."""
    run = Run()
    reply: httpx.Response | httpx.TransportError | None = None
    script = list(replies)
    try:
        while True:
            action = flow.send(reply)
            reply = None
            if isinstance(action, HTTPRequest):
                run.requests.append(action)
                reply = script.pop(0) if len(script) > 1 else script[0]
            elif isinstance(action, Sleep):
                run.sleeps.append(action.seconds)
                clock.advance(action.seconds)
            elif isinstance(action, Notify):
                run.notes.append(action.status.status.value)
    except StopIteration as stop:
        run.result = stop.value
    except Exception as exc:  # the flow's decision to give up
        run.error = exc
    return run


def core(clock: FakeClock, **options: Any) -> FlowCore:
    return FlowCore(
        ClientOptions.resolve(KEY, base_url=BASE, **options),
        poll_policy=PollPolicy.fixed(1.0),
        retry_policy=RETRY,
        clock=clock,
    )


def status(code: int, retry_after: str | None = None) -> httpx.Response:
    headers = {"Retry-After": retry_after} if retry_after is not None else {}
    return httpx.Response(code, json={"error": "e", "message": "m"}, headers=headers)


def never_sent() -> httpx.ConnectError:
    return httpx.ConnectError("refused")


def maybe_sent() -> httpx.ReadError:
    return httpx.ReadError("connection reset")


# --------------------------------------------------------------------------- submit


@pytest.mark.parametrize(
    ("replies", "posts", "sleeps", "error"),
    [
        # 429 with Retry-After: wait what the gateway asked, then it works.
        ([status(429, "3"), queued()], 2, [3.0], None),
        # 429 without Retry-After: exponential backoff, up to max_retries (3) retries.
        ([status(429)], 4, [1.0, 2.0, 4.0], RateLimitError),
        # 429 asking for longer than max_retry_after: no retry inside the call.
        ([status(429, "600")], 1, [], RateLimitError),
        # A connection that was never made: nothing reached the gateway, retry.
        ([never_sent(), never_sent(), queued()], 3, [1.0, 2.0], None),
        # A connection that broke after sending: never re-sent (a job may exist).
        ([maybe_sent(), queued()], 1, [], APIConnectionError),
        # A 500 on the POST: the gateway may have made the job; never re-sent.
        ([status(500), queued()], 1, [], ServerError),
        # A 401: only the operator can fix it.
        ([status(401)], 1, [], AuthenticationError),
    ],
)
def test_submit_retries_only_what_certainly_did_nothing(
    replies: list[Step], posts: int, sleeps: list[float], error: type[Exception] | None
) -> None:
    clock = FakeClock()
    run = drive(core(clock).submit_only_flow(BODY, webhook_url=None), replies, clock)
    assert len(run.requests) == posts
    assert run.sleeps == sleeps
    if error is None:
        assert run.error is None
        assert run.result.request_id == RID
    else:
        assert isinstance(run.error, error)


def test_a_submit_that_may_have_arrived_says_so_in_a_typed_flag() -> None:
    clock = FakeClock()
    run = drive(core(clock).submit_only_flow(BODY, webhook_url=None), [maybe_sent()], clock)
    assert isinstance(run.error, APIConnectionError)
    assert run.error.may_have_arrived
    assert "not re-sent" in str(run.error)


def test_submit_retries_stop_at_the_call_deadline() -> None:
    clock = FakeClock()
    flow = core(clock, max_retries=10).run_flow(BODY, webhook_url=None, timeout=5.0)
    run = drive(flow, [status(429)], clock)
    assert isinstance(run.error, RateLimitError)
    assert sum(run.sleeps) < 5.0  # no retry was scheduled past the deadline
    assert run.sleeps == [1.0, 2.0]


def test_every_request_timeout_is_capped_by_the_time_left() -> None:
    clock = FakeClock()
    flow = core(clock, request_timeout=60.0).run_flow(BODY, webhook_url=None, timeout=2.5)
    run = drive(flow, [queued(), ok("PROCESSING")], clock)
    assert isinstance(run.error, JobTimeoutError)
    for request in run.requests:
        assert request.timeout.read is not None
        assert request.timeout.read <= 2.5


def test_a_submit_id_we_cannot_poll_is_a_job_that_may_exist() -> None:
    clock = FakeClock()
    run = drive(core(clock).run_flow(BODY, webhook_url=None, timeout=10), [queued("a/b")], clock)
    assert isinstance(run.error, APIResponseError)
    assert run.error.may_have_arrived
    assert "may run and be charged" in str(run.error)
    assert len(run.requests) == 1  # no status read of a path-breaking id


# --------------------------------------------------------------------------- status reads


@pytest.mark.parametrize(
    ("replies", "gets", "error"),
    [
        ([status(503), ok("PROCESSING")], 2, None),
        ([status(408), ok("PROCESSING")], 2, None),
        ([httpx.ReadTimeout("slow"), ok("PROCESSING")], 2, None),
        ([httpx.Response(200, text="<html>"), ok("PROCESSING")], 2, None),
        ([status(503)], 4, ServerError),  # max_retries=3 retries, then the error
        ([status(429, "600")], 1, RateLimitError),  # longer than max_retry_after
        ([status(404)], 1, Exception),
    ],
)
def test_a_standalone_status_read_retries_up_to_max_retries(
    replies: list[Step], gets: int, error: type[Exception] | None
) -> None:
    clock = FakeClock()
    run = drive(core(clock).status_flow(RID), replies, clock)
    assert len(run.requests) == gets
    if error is None:
        assert run.error is None
        assert run.result.status.value == "PROCESSING"
    else:
        assert isinstance(run.error, error)


@pytest.mark.parametrize(
    "failing",
    [
        status(503),
        status(429, "2"),
        httpx.ConnectError("down"),
        httpx.Response(200, text="not json"),
    ],
)
def test_a_wait_retries_status_failures_until_its_deadline_then_says_still_running(
    failing: Step,
) -> None:
    clock = FakeClock()
    flow = core(clock).run_flow(BODY, webhook_url=None, timeout=20.0)
    run = drive(flow, [queued(), failing], clock)
    assert isinstance(run.error, JobTimeoutError)
    assert run.error.request_id == RID
    assert "last status read failed" in str(run.error)
    assert clock.monotonic() <= 20.0  # the wait ended within its budget
    assert len(run.requests) > 3  # it kept trying while there was time


def test_throttled_status_reads_end_the_wait_as_running_not_as_try_again() -> None:
    # A 429 on a status read asking for longer than max_retry_after: the job still runs. The
    # wait ends as JobTimeoutError (resume with wait), never RateLimitError ("try again"),
    # which would invite a second, paid job.
    clock = FakeClock()
    flow = core(clock).run_flow(BODY, webhook_url=None, timeout=300.0)
    run = drive(flow, [queued(), status(429, "600")], clock)
    assert isinstance(run.error, JobTimeoutError)
    assert isinstance(run.error.__cause__, RateLimitError)
    assert run.error.last_status is not None
    assert run.error.last_status.status.value == "QUEUED"
    assert len([r for r in run.requests if r.method == "POST"]) == 1
    text = str(run.error)
    assert f"resume with wait('{RID}')" in text
    assert "HTTP 429" in text  # what the gateway answered...
    assert "retry later" not in text.lower()  # ...but not the advice given for a 429 alone


def test_a_resumed_wait_polls_at_once_and_reports_the_first_status() -> None:
    clock = FakeClock()
    run = drive(core(clock).resume_flow(RID, None, timeout=10), [ok("COMPLETED")], clock)
    assert run.sleeps == []
    assert run.notes == ["COMPLETED"]
    assert isinstance(run.result, ImageResult)


def test_a_wait_after_submit_reports_queued_first_and_learns_the_duration() -> None:
    clock = FakeClock()
    flow_core = core(clock)
    run = drive(
        flow_core.run_flow(BODY, webhook_url=None, timeout=30),
        [queued(), ok("PROCESSING"), ok("PROCESSING"), ok("COMPLETED")],
        clock,
    )
    assert run.notes == ["QUEUED", "PROCESSING", "COMPLETED"]
    assert flow_core.durations.count("generate") == 1


# --------------------------------------------------------------------------- bounded arithmetic


@given(attempt=st.integers(min_value=1, max_value=10**6), retry_after=st.none() | st.floats(0, 1e6))
def test_backoff_never_overflows_and_stays_within_its_cap(
    attempt: int, retry_after: float | None
) -> None:
    policy = RetryPolicy()
    delay = policy.backoff(attempt, retry_after)
    assert math.isfinite(delay)
    assert 0 <= delay <= max(policy.max_backoff * (1 + policy.jitter), retry_after or 0)


@given(
    elapsed=st.floats(0, 10_000),
    last_gap=st.none() | st.floats(0, 10_000),
    low=st.floats(0, 10_000),
    width=st.floats(0, 10_000),
)
def test_no_learned_schedule_sleeps_longer_than_max_interval(
    elapsed: float, last_gap: float | None, low: float, width: float
) -> None:
    policy = PollPolicy()
    delay = policy.next_delay(elapsed=elapsed, last_gap=last_gap, window=(low, low + width))
    assert 0 <= delay <= policy.max_interval
