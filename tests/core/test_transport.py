"""The async client's default transport: small pools, slots released on every path."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest

from mai_tools import AsyncMAIImageClient
from mai_tools._transport import SpreadTransport
from mai_tools.emulator import RunningEmulator
from tests.support.emulators import EmulatorPool
from tests.support.fakes import KEY

ADMIN = {"Ocp-Apim-Subscription-Key": KEY}  # the emulator's admin endpoints take its key


@pytest.fixture
def emulator(emulators: EmulatorPool) -> RunningEmulator:
    return emulators(api_keys=(KEY,), min_duration=0, max_duration=0)


@pytest.fixture
async def spread() -> AsyncIterator[SpreadTransport]:
    transport = SpreadTransport(max_connections=7, keepalive_expiry=60, per_pool=2)
    yield transport
    await transport.aclose()


def test_pools_cover_the_requested_connections() -> None:
    transport = SpreadTransport(max_connections=7, keepalive_expiry=60, per_pool=2)
    assert len(transport.pools) == 4
    assert transport.in_flight == [0, 0, 0, 0]
    assert transport.capacity == [2, 2, 2, 1]
    assert len(SpreadTransport(max_connections=1, keepalive_expiry=60).pools) == 1
    with pytest.raises(ValueError, match="at least 1"):
        SpreadTransport(max_connections=0, keepalive_expiry=60)


async def test_sequential_requests_stay_on_one_connection(
    emulator: RunningEmulator, spread: SpreadTransport
) -> None:
    async with httpx.AsyncClient(
        transport=spread, base_url=emulator.base_url, headers=ADMIN
    ) as http:
        for _ in range(5):
            response = await http.get("/_emulator/stats")
            assert response.status_code == 200
        assert spread.in_flight == [0, 0, 0, 0]
        assert len(spread.pools[0]._pool.connections) == 1
        assert all(not pool._pool.connections for pool in spread.pools[1:])


async def test_concurrent_requests_spread_and_release(
    emulator: RunningEmulator, spread: SpreadTransport
) -> None:
    async with httpx.AsyncClient(
        transport=spread, base_url=emulator.base_url, headers=ADMIN
    ) as http:
        async with (
            http.stream("GET", "/_emulator/stats") as first,
            http.stream("GET", "/_emulator/stats") as second,
            http.stream("GET", "/_emulator/stats") as third,
        ):
            assert spread.in_flight == [2, 1, 0, 0]
            for response in (first, second, third):
                await response.aread()
        assert spread.in_flight == [0, 0, 0, 0]
        responses = await asyncio.gather(*(http.get("/_emulator/stats") for _ in range(20)))
        assert all(r.status_code == 200 for r in responses)
        assert 2 <= len(spread.connections()) <= 7
    assert spread.in_flight == [0, 0, 0, 0]
    assert spread.connections() == []  # closed with the client


async def test_a_failed_request_gives_its_slot_back(spread: SpreadTransport) -> None:
    async with httpx.AsyncClient(transport=spread) as http:
        with pytest.raises(httpx.ConnectError):
            await http.get("http://127.0.0.1:9/unreachable")
    assert spread.in_flight == [0, 0, 0, 0]


async def test_the_client_uses_it_and_leaves_nothing_in_flight(emulator: RunningEmulator) -> None:
    async with AsyncMAIImageClient(
        KEY, base_url=emulator.base_url, max_concurrent_requests=6
    ) as client:
        transport = client._http._transport
        assert isinstance(transport, SpreadTransport)
        assert len(transport.pools) == 3
        results = await asyncio.gather(*(client.generate(f"spread {i}") for i in range(12)))
        assert all(r.image_urls for r in results)
        assert transport.in_flight == [0, 0, 0]
        assert 1 <= len(transport.connections()) <= 6
