"""The clients' connection pools: httpx's public API, bounded by the clients' own slots.

The async client spreads its requests over a few small unbounded pools (``_spread_pools``:
one big pool costs CPU per connection it holds on every request); the tests at the end check
that spread with stand-in pools.

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
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from mai_tools import AsyncMAIImageClient, GenerateRequest, MAIImageClient
from mai_tools._config import pool_limits, ssl_context
from mai_tools._spread_pools import SpreadTransport, spread_transport
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


class _Body(httpx.AsyncByteStream):
    """A body read from the wire, as a real pool's (``content=`` would be read at once)."""

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield b"ok"


class _Pool(httpx.AsyncBaseTransport):
    """A stand-in pool: answers at once, counts what it was asked, knows if it was closed."""

    def __init__(self) -> None:
        self.requests = 0
        self.closed = False

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.requests += 1
        return httpx.Response(200, stream=_Body())

    async def aclose(self) -> None:
        self.closed = True


async def test_the_spread_transport_uses_every_pool_and_closes_them_all() -> None:
    pools = [_Pool() for _ in range(3)]
    spread = SpreadTransport(pools)
    async with httpx.AsyncClient(transport=spread, base_url="http://pools.test") as http:
        for _ in range(2):  # one after another: the first pool, with one connection
            await http.get("/")
        assert [p.requests for p in pools] == [2, 0, 0]
        async with contextlib.AsyncExitStack() as open_bodies:  # six at once: two a pool
            for _ in range(6):
                await open_bodies.enter_async_context(http.stream("GET", "/"))
            assert [p.requests for p in pools] == [4, 2, 2]
            assert spread.in_flight == [2, 2, 2]
        assert spread.in_flight == [0, 0, 0]
        assert not any(p.closed for p in pools)
    assert all(p.closed for p in pools)


async def test_a_request_its_pool_refuses_is_not_counted_as_in_flight() -> None:
    class Refusing(_Pool):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            raise httpx.ConnectError("refused", request=request)

    spread = SpreadTransport([Refusing(), _Pool()])
    async with httpx.AsyncClient(transport=spread) as http:
        with pytest.raises(httpx.ConnectError):
            await http.get("http://pools.test/")
    assert spread.in_flight == [0, 0]


async def test_a_request_cancelled_while_its_body_closes_is_not_counted_as_in_flight() -> None:
    # The cancellation the regression test above makes: the pool may lose that connection
    # (unbounded, it opens another), but the spread must not go on counting the request.
    closing = asyncio.Event()

    class ClosingSlowly(_Body):
        async def aclose(self) -> None:
            closing.set()
            await asyncio.Event().wait()  # until cancelled

    class SlowToClosePool(_Pool):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            return httpx.Response(200, stream=ClosingSlowly())

    spread = SpreadTransport([SlowToClosePool(), _Pool()])
    async with httpx.AsyncClient(transport=spread) as http:
        task = asyncio.create_task(http.get("http://pools.test/"))
        await closing.wait()
        assert spread.in_flight == [1, 0]
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert spread.in_flight == [0, 0]


def test_the_async_client_gets_a_pool_for_each_two_slots(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for scheme in ("http", "https", "all"):
        monkeypatch.delenv(f"{scheme}_proxy", raising=False)
        monkeypatch.delenv(f"{scheme.upper()}_PROXY", raising=False)
    spread = spread_transport(32, ssl_context())
    assert spread is not None
    assert len(spread.pools) == 16
    assert all(isinstance(pool, httpx.AsyncHTTPTransport) for pool in spread.pools)
    # each built with pool_limits() (unbounded: see the regression test above)
    assert spread_transport(1, ssl_context()) is not None


def test_with_a_proxy_in_the_environment_httpx_routes_a_plain_client(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # httpx ignores the environment's proxies when given transport=: no spread then.
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    assert spread_transport(32, ssl_context()) is None
