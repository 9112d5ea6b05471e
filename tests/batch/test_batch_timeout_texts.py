"""A batch line left running says how long it was waited for, and what the gateway answered
without its advice (no "retry later": the job runs, a rerun keeps waiting)."""

from __future__ import annotations

from pathlib import Path

import httpx

from mai_tools import AsyncMAIImageClient, PollPolicy
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
