"""A batch line left running says how long it was waited for, and what the gateway answered
without its advice (no "retry later": the job runs, a rerun keeps waiting)."""

from __future__ import annotations

from pathlib import Path

import httpx

from mai_tools import AsyncMAIImageClient, JobTimeoutError, PollPolicy
from mai_tools.batch import BatchRun, LineStatus
from tests.support.fakes import BASE, FAST_RETRY, KEY, RID, Gateway, queued


async def test_a_throttled_status_read_leaves_the_line_running_without_retry_advice(
    tmp_path: Path,
) -> None:
    gateway = Gateway(
        submits=[queued()], polls=[httpx.Response(429, headers={"Retry-After": "3600"})]
    )
    async with (
        AsyncMAIImageClient(
            KEY,
            base_url=BASE,
            poll_policy=PollPolicy.immediate(),
            retry_policy=FAST_RETRY,
            http_client=httpx.AsyncClient(transport=httpx.MockTransport(gateway.handler)),
        ) as client,
        BatchRun(
            client, [{"id": "one", "prompt": "a lighthouse"}], tmp_path, job_timeout=300
        ) as run,
    ):
        (line,) = [o async for o in run]
    assert line.request_id == RID
    assert line.status is not LineStatus.COMPLETED
    error = str(line.error)
    assert "Slow down" not in error
    assert "retry later" not in error.lower()
    assert "HTTP 429" in error
    assert "after 300s" not in error
    assert "of the 300s allowed" in error
    assert error.endswith("rerun to keep waiting")


def test_a_line_s_wait_is_told_against_its_whole_job_timeout() -> None:
    # A batch line waits out what its submit left of the job timeout: the text names the job
    # timeout and the time since the submit, however long the submit took (the remaining
    # 299.9993 s must not read "299.999s allowed"; a busy machine made that test flaky).
    left = 300 - 0.0007
    exc = JobTimeoutError(
        request_id=RID, polling_url=None, last_status=None, timeout=left, waited=2.0
    )
    assert exc.waited_text(before=0.0007, allowed=300) == "2s of the 300s allowed"
    assert exc.waited_text() == "2s of the 300s allowed"  # rounded like the time waited
    late = JobTimeoutError(
        request_id=RID, polling_url=None, last_status=None, timeout=240.0, waited=240.0
    )
    assert late.waited_text(before=60.0, allowed=300) == "300s"  # the whole allowance
