"""The async client's transport: its requests spread over a few small connection pools.

httpcore's async pool does bookkeeping for every connection it holds each time a request
starts or ends, so one pool serving ``max_concurrent_requests`` requests at once spends more
CPU on it than on the requests (see ``benchmarks/RESULTS.md``). A few small pools hold the
same connections between them at a fraction of that cost. Built from httpx's public API only:
each pool is an ``httpx.AsyncHTTPTransport``, unbounded (see ``pool_limits``), and a request
goes to the pool with the fewest requests in flight (the first such, so that low concurrency
stays on one pool and one connection).

httpx honours the environment's proxies only for a client built without ``transport=``, so
:func:`spread_transport` returns None when the environment names a proxy: that client is then
a plain httpx client, routed by httpx itself.
"""

from __future__ import annotations

import ssl
import urllib.request
from collections.abc import AsyncIterator, Sequence

import httpx

from ._config import pool_limits

REQUESTS_PER_POOL = 2  # the client's slots / this = the pools; measured in benchmarks/RESULTS.md


class _CountedBody(httpx.AsyncByteStream):
    """A response body that tells its pool's count when it is closed (once)."""

    def __init__(self, body: httpx.AsyncByteStream, spread: SpreadTransport, index: int) -> None:
        self._body = body
        self._spread = spread
        self._index = index
        self._open = True

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._body:
            yield chunk

    async def aclose(self) -> None:
        try:
            await self._body.aclose()
        finally:
            if self._open:
                self._open = False
                self._spread.in_flight[self._index] -= 1


class SpreadTransport(httpx.AsyncBaseTransport):
    """Hand each request to the pool with the fewest requests in flight (the first on a tie)."""

    def __init__(self, pools: Sequence[httpx.AsyncBaseTransport]) -> None:
        if not pools:
            raise ValueError("SpreadTransport needs at least one pool")
        self.pools = list(pools)
        self.in_flight = [0] * len(self.pools)  # requests sent whose body is not closed yet

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        index = self.in_flight.index(min(self.in_flight))
        self.in_flight[index] += 1
        try:
            response = await self.pools[index].handle_async_request(request)
        except BaseException:
            self.in_flight[index] -= 1
            raise
        stream = response.stream
        if not isinstance(stream, httpx.AsyncByteStream):  # pragma: no cover - never async
            self.in_flight[index] -= 1
            raise TypeError(f"pool {index} answered with a sync body: {type(stream).__name__}")
        response.stream = _CountedBody(stream, self, index)
        return response

    async def aclose(self) -> None:
        for pool in self.pools:
            await pool.aclose()


def environment_names_a_proxy() -> bool:
    """Whether httpx would route some URL through a proxy (it reads the same stdlib function)."""
    proxies = urllib.request.getproxies()
    return any(proxies.get(scheme) for scheme in ("http", "https", "all"))


def spread_transport(slots: int, verify: ssl.SSLContext) -> SpreadTransport | None:
    """Enough unbounded pools for ``slots`` requests at once, or None if proxies apply."""
    if environment_names_a_proxy():
        return None
    count = max(1, -(-slots // REQUESTS_PER_POOL))
    return SpreadTransport(
        [httpx.AsyncHTTPTransport(verify=verify, limits=pool_limits()) for _ in range(count)]
    )
