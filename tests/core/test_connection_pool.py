"""The clients' connection pools: plain httpx clients, bounded by the clients' own slots.

The regression kept here: httpcore 1.0.9 leaves a connection ACTIVE for good (never reused,
closed only with its client) when a cancellation lands while a response is being closed. Under
CPU load a plain ``task.cancel()`` of waiting calls does that now and then
(``benchmarks/cancel_under_load.py``); here it is made certain by cancelling from httpx's public
``trace`` extension at ``http11.response_closed.started``. In a pool bounded to the client's
slots each such connection takes a slot for good, until no request can start; the clients
therefore leave the pool unbounded and bound requests with their own slots (``pool_limits``).
Connections opened are counted from httpcore's documented debug log (the ``connects`` fixture),
not from its internals.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from mai_tools import AsyncMAIImageClient, GenerateRequest, MAIImageClient
from mai_tools._config import pool_limits
from mai_tools.emulator import RunningEmulator
from tests.support.emulators import EmulatorPool
from tests.support.fakes import KEY

SLOTS = 2
LEAKED = 2 * SLOTS  # more than a pool bounded to the slots could survive


@pytest.fixture
def emulator(emulators: EmulatorPool) -> RunningEmulator:
    return emulators(api_keys=(KEY,), min_duration=0, max_duration=0)


async def _cancel_while_closing(http: httpx.AsyncClient, url: str) -> None:
    """One request whose task is cancelled as its response is being closed."""

    async def cut(event: str, info: dict[str, Any]) -> None:
        if event == "http11.response_closed.started":
            task = asyncio.current_task()
            assert task is not None
            task.cancel()
            await asyncio.sleep(0)

    async def exchange() -> None:
        async with http.stream("GET", url, extensions={"trace": cut}) as response:
            await response.aread()

    task = asyncio.create_task(exchange())
    with pytest.raises(asyncio.CancelledError):
        await task


def test_both_clients_pools_are_unbounded_and_keep_connections_across_poll_gaps() -> None:
    limits = pool_limits()
    assert (limits.max_connections, limits.max_keepalive_connections) == (None, None)
    assert limits.keepalive_expiry is not None
    assert limits.keepalive_expiry >= 60


async def test_connections_lost_to_cancelled_closes_take_no_slot(
    emulator: RunningEmulator, connects: Callable[[], int]
) -> None:
    async with AsyncMAIImageClient(
        KEY, base_url=emulator.base_url, max_concurrent_requests=SLOTS, max_retries=0
    ) as client:
        request_id = (await client.submit(GenerateRequest(prompt="a job to read"))).request_id
        assert connects() == 1
        for _ in range(LEAKED):
            await _cancel_while_closing(client._http, f"{emulator.base_url}/openapi.json")
        # The first reused the submit's connection; each later one needed a new connection,
        # because the one before it was lost. If this fails, httpcore no longer loses them.
        assert connects() == LEAKED
        statuses = await asyncio.gather(*(client.get_status(request_id) for _ in range(2 * SLOTS)))
    assert {s.status for s in statuses} == {"COMPLETED"}


def test_a_pool_bounded_to_the_slots_would_be_used_up(emulator: RunningEmulator) -> None:
    # What the test above guards against, on a plain httpx client bounded as the async
    # client's pool used to be: after SLOTS lost connections no request gets one.
    async def run() -> None:
        limits = httpx.Limits(max_connections=SLOTS)
        async with httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(30, pool=0)) as http:
            for _ in range(SLOTS):
                await _cancel_while_closing(http, f"{emulator.base_url}/openapi.json")
            with pytest.raises(httpx.PoolTimeout):
                await http.get(f"{emulator.base_url}/openapi.json")

    asyncio.run(run())


async def test_sequential_async_calls_reuse_one_connection(
    emulator: RunningEmulator, connects: Callable[[], int]
) -> None:
    async with AsyncMAIImageClient(KEY, base_url=emulator.base_url) as client:
        for i in range(5):
            await client.generate(f"one after another {i}")
    assert connects() == 1


def test_sequential_sync_calls_reuse_one_connection(
    emulator: RunningEmulator, connects: Callable[[], int]
) -> None:
    with MAIImageClient(KEY, base_url=emulator.base_url) as client:
        for i in range(5):
            client.generate(f"one after another {i}")
    assert connects() == 1
