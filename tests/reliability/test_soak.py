"""Soak: 500 jobs through one async client while the emulator injects mixed faults.

Every call must end, within its deadline, in a result or a documented error; no job may be
created twice; FAILED/ERROR jobs surface as JobFailedError; Retry-After is honoured; no request
carrying the key leaves for another origin; a cancelled wait stops polling and leaks nothing.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from mai_tools import (
    APIConnectionError,
    APIStatusError,
    AsyncMAIImageClient,
    GenerateRequest,
    ImageResult,
    JobFailedError,
    JobTimeoutError,
    PollPolicy,
    RateLimitError,
    RetryPolicy,
    ServerError,
)
from mai_tools.emulator import (
    EmulatorConfig,
    Faults,
    RemoteEmulator,
    run_emulator,
    spawn_emulator,
)
from tests.support.fakes import KEY

# A slow or busy machine must not fail the soak: it gets a generous test timeout, and the
# emulator runs in its own process so it does not compete with the client for the GIL.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

JOB_TIMEOUT = 45.0
POLL = PollPolicy(first_delay=0.1, min_interval=0.05, cold_max_interval=0.4, min_samples=5)
RETRY = RetryPolicy(initial_backoff=0.05, max_backoff=0.5, jitter=0.25)
FAULTS = Faults(
    rate_limit_first_submits=25,
    rate_limit_poll_rate=0.05,
    retry_after=0.3,
    error_500_rate=0.05,
    error_502_rate=0.05,
    drop_rate=0.05,
    slow_rate=0.03,
    slow_seconds=0.4,
    fail_rate=0.04,
    error_rate=0.04,
    submit_error_rate=0.03,
    foreign_polling_url=True,
)
EXPECTED = (JobFailedError, ServerError, RateLimitError, JobTimeoutError, APIConnectionError)


@pytest.fixture(scope="module")
def emu() -> Iterator[RemoteEmulator]:
    with spawn_emulator(
        api_key=KEY, min_duration=0.3, max_duration=1.2, seed=2026, faults=FAULTS
    ) as remote:
        yield remote


class _Wire:
    """Every request the client sends: host and whether it carried the key."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bool]] = []

    async def hook(self, request: httpx.Request) -> None:
        self.sent.append(
            (request.url.netloc.decode(), "ocp-apim-subscription-key" in request.headers)
        )


async def _run_batch(
    client: AsyncMAIImageClient, count: int, prefix: str
) -> list[tuple[ImageResult | BaseException, float]]:
    async def one(i: int) -> tuple[ImageResult | BaseException, float]:
        start = time.monotonic()
        try:
            result: ImageResult | BaseException = await client.generate(
                f"{prefix} soak job {i}", timeout=JOB_TIMEOUT
            )
        except Exception as exc:
            result = exc
        return result, time.monotonic() - start

    return await asyncio.gather(*(one(i) for i in range(count)))


async def test_soak_500_jobs_with_mixed_faults(emu: RemoteEmulator) -> None:
    emu.reset()
    emu.set_faults(FAULTS)
    wire = _Wire()
    http = httpx.AsyncClient(event_hooks={"request": [wire.hook]})
    async with AsyncMAIImageClient(
        KEY, base_url=emu.base_url, http_client=http, poll_policy=POLL, retry_policy=RETRY
    ) as client:
        outcomes = await _run_batch(client, 250, "seconds")
        emu.set_faults(
            FAULTS, retry_after=1.0, retry_after_as_date=True, rate_limit_first_submits=0
        )
        outcomes += await _run_batch(client, 250, "http-date")
    await http.aclose()

    stats = emu.stats()
    results = [o for o, _ in outcomes if isinstance(o, ImageResult)]
    errors = [o for o, _ in outcomes if not isinstance(o, ImageResult)]
    # 1. Every call ended in a result or a documented, typed error, within its deadline.
    unexpected = [e for e in errors if not isinstance(e, EXPECTED)]
    assert not unexpected, unexpected[:3]
    assert max(elapsed for _, elapsed in outcomes) <= JOB_TIMEOUT + 5
    assert len(results) >= 400, f"only {len(results)} of 500 succeeded: {errors[:5]}"
    # 2. No job created twice: each created job belongs to exactly one call.
    reached = [r.request_id for r in results] + [
        e.request_id for e in errors if isinstance(e, JobFailedError | JobTimeoutError)
    ]
    assert len(reached) == len(set(reached))
    assert stats.jobs_created == len(reached)
    submit_failures = [e for e in errors if isinstance(e, APIStatusError)]
    assert all(e.request_id is None for e in submit_failures)  # refused before any job existed
    # 3. FAILED/ERROR jobs surface as JobFailedError, and only those.
    failed_ids = {e.request_id for e in errors if isinstance(e, JobFailedError)}
    ended_badly = {rid for rid, outcome in stats.outcomes.items() if outcome != "COMPLETED"}
    assert failed_ids == ended_badly
    assert failed_ids  # the fault mix did produce some
    # 4. Retry-After honoured: after each 429 (sent in seconds) on a status read, the next
    #    read of that job came no sooner than asked.
    checked = 0
    for limit in stats.rate_limited:
        if limit.as_date or not limit.path.startswith("/v2/"):
            continue
        later = [r.at for r in stats.requests if r.path == limit.path and r.at > limit.at]
        if later:
            assert min(later) - limit.at >= limit.retry_after * 0.95
            checked += 1
    assert checked > 0
    assert any(limit.as_date for limit in stats.rate_limited)
    # 5. The key went only to base_url (the emulator offered a foreign polling_url every time).
    origin = emu.base_url.removeprefix("http://")
    assert all(host == origin for host, keyed in wire.sent if keyed)
    assert {r.host for r in stats.requests} == {origin}


async def test_cancelled_waits_stop_polling_and_leak_nothing() -> None:
    # That no connection is lost to these cancellations (httpcore can lose one when a cancel
    # lands while a response is closed) is tests/core/test_connection_pool.py's regression test.
    before = set(asyncio.all_tasks())
    with run_emulator(EmulatorConfig(api_keys=(KEY,), min_duration=60, max_duration=60)) as slow:
        client = AsyncMAIImageClient(KEY, base_url=slow.base_url, poll_policy=POLL)
        try:
            tasks = [asyncio.create_task(client.generate(f"cancel me {i}")) for i in range(20)]
            await asyncio.sleep(1.0)
            assert slow.control.stats().jobs_created == 20
            for task in tasks:
                task.cancel()
            results: list[Any] = await asyncio.gather(*tasks, return_exceptions=True)
            assert all(isinstance(r, asyncio.CancelledError) for r in results)
            polls = slow.control.stats().status_requests
            await asyncio.sleep(1.0)
            assert slow.control.stats().status_requests == polls  # nobody polls any more
            job = await client.submit(GenerateRequest(prompt="the client still works"))
            assert job.request_id
        finally:
            await client.aclose()
    assert set(asyncio.all_tasks()) == before
