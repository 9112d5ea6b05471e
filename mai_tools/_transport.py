"""The async client's default transport: many small connection pools instead of one big one.

httpcore's pool walks every connection it holds (an expiry check that asks the socket, and an
idle count that is quadratic in the pool size) each time a request starts or ends. With 32
kept-alive connections that bookkeeping costs more than the request itself: on loopback one
pool of 32 serves ~1,000 requests/s, sixteen pools of 2 serve ~2,200 (see
``benchmarks/RESULTS.md``). The client already caps requests in flight, so spreading them over
small pools changes no behaviour, only the cost.

Passing a transport makes httpx skip the proxies of the environment, so the client mounts one
spread transport per proxy route itself, exactly as httpx does for its default transport
(``HTTP_PROXY``, ``HTTPS_PROXY``, ``ALL_PROXY``, ``NO_PROXY``): see :func:`spread_client`.
"""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import AsyncIterator, Iterator

import httpcore
import httpx

# httpx's own reading of the environment (urllib's getproxies plus NO_PROXY patterns), the one
# httpx.AsyncClient uses to build its mounts: reused so both clients route exactly alike.
from httpx._utils import get_environment_proxies

from ._exceptions import ConfigurationError

CONNECTIONS_PER_POOL = 2
_PROXY_VARS = "HTTP_PROXY, HTTPS_PROXY or ALL_PROXY"


@contextlib.contextmanager
def proxy_settings_checked() -> Iterator[None]:
    """Turn httpx's complaints about the environment's proxy settings into ConfigurationError.

    The proxy URL is not repeated: it may hold a password.
    """
    try:
        yield
    except ImportError as exc:  # socks5:// without the socksio package
        raise ConfigurationError(
            f"{_PROXY_VARS} names a SOCKS proxy: install socksio (pip install 'httpx[socks]') "
            "or use an http:// proxy."
        ) from exc
    except (ValueError, httpx.InvalidURL) as exc:
        raise ConfigurationError(
            f"{_PROXY_VARS} in the environment is not a usable proxy URL (http://, https:// or "
            "socks5://host:port); fix or unset it."
        ) from exc


def proxy_routes() -> dict[str, httpx.Proxy | None]:
    """URL pattern -> proxy (None: connect directly, a ``NO_PROXY`` entry), from the environment."""
    with proxy_settings_checked():
        return {
            pattern: None if url is None else httpx.Proxy(url)
            for pattern, url in get_environment_proxies().items()
        }


class _ReleasingStream(httpx.AsyncByteStream):
    """A response body that gives its pool's slot back when closed (once)."""

    def __init__(self, stream: httpx.AsyncByteStream, release: list[int], index: int) -> None:
        self._stream = stream
        self._in_flight = release
        self._index = index
        self._open = True

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._stream:
            yield chunk

    async def aclose(self) -> None:
        try:
            await self._stream.aclose()
        finally:
            if self._open:
                self._open = False
                self._in_flight[self._index] -= 1


class SpreadTransport(httpx.AsyncBaseTransport):
    """Route each request to the first small pool with a free connection.

    Requests beyond ``max_connections`` still work: they wait in the least busy pool.
    Low concurrency stays on the first pool, so few connections (and TLS handshakes) are made.
    """

    def __init__(
        self,
        *,
        max_connections: int,
        keepalive_expiry: float,
        verify: ssl.SSLContext | bool = True,
        per_pool: int = CONNECTIONS_PER_POOL,
        proxy: httpx.Proxy | None = None,
    ) -> None:
        if max_connections < 1 or per_pool < 1:
            raise ValueError("max_connections and per_pool must be at least 1")
        full, rest = divmod(max_connections, per_pool)
        self.proxy = proxy
        self.capacity = [per_pool] * full + ([rest] if rest else [])
        self.pools = [
            httpx.AsyncHTTPTransport(
                verify=verify,
                proxy=proxy,
                limits=httpx.Limits(
                    max_connections=size,
                    max_keepalive_connections=size,
                    keepalive_expiry=keepalive_expiry,
                ),
            )
            for size in self.capacity
        ]
        self.in_flight = [0] * len(self.pools)

    def _pick(self) -> int:
        for index, busy in enumerate(self.in_flight):
            if busy < self.capacity[index]:
                return index
        return min(range(len(self.in_flight)), key=self.in_flight.__getitem__)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        index = self._pick()
        self.in_flight[index] += 1
        try:
            response = await self.pools[index].handle_async_request(request)
        except BaseException:
            self.in_flight[index] -= 1
            raise
        if isinstance(response.stream, httpx.AsyncByteStream):
            response.stream = _ReleasingStream(response.stream, self.in_flight, index)
        else:  # pragma: no cover - httpx's async transport always streams asynchronously
            self.in_flight[index] -= 1
        return response

    def connections(self) -> list[httpcore.AsyncConnectionInterface]:
        """Every connection the pools hold now (for tests and benchmarks)."""
        return [c for pool in self.pools for c in pool._pool.connections]

    async def aclose(self) -> None:
        for pool in self.pools:
            await pool.aclose()


def spread_client(
    *,
    timeout: httpx.Timeout,
    max_connections: int,
    keepalive_expiry: float,
    verify: ssl.SSLContext,
) -> httpx.AsyncClient:
    """An ``httpx.AsyncClient`` on spread transports that honours the environment's proxies.

    Mirrors ``httpx.AsyncClient.__init__``: the default transport goes direct, each proxy route
    of :func:`proxy_routes` gets its own spread transport through that proxy, and a ``NO_PROXY``
    pattern maps to None (httpx then uses the default, direct transport).
    """

    def spread(proxy: httpx.Proxy | None) -> SpreadTransport:
        with proxy_settings_checked():
            return SpreadTransport(
                max_connections=max_connections,
                keepalive_expiry=keepalive_expiry,
                verify=verify,
                proxy=proxy,
            )

    mounts: dict[str, httpx.AsyncBaseTransport | None] = {
        pattern: None if proxy is None else spread(proxy)
        for pattern, proxy in proxy_routes().items()
    }
    return httpx.AsyncClient(
        timeout=timeout,
        transport=spread(None),
        mounts=mounts,
        follow_redirects=False,
        verify=verify,
    )
