"""Reading gateway answers with a size cap, for both drivers.

A status is a few hundred bytes; a hostile or broken gateway answering 300 MB (or a small gzip
that inflates to gigabytes) must not cost the client that much memory. The drivers stream each
answer and stop at the request's cap; an answer past it comes back with an empty body and the
:data:`~mai_tools._constants.TOO_LARGE_EXTENSION` flag, which the wire layer reports as an
answer it could not read.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx

from ._constants import TOO_LARGE_EXTENSION

# The body is handed over decoded: these headers described the bytes on the wire, not it.
_WIRE_HEADERS = frozenset({"content-encoding", "content-length", "transfer-encoding"})


def _rebuilt(response: httpx.Response, body: bytes, *, too_large: int | None) -> httpx.Response:
    headers = [(k, v) for k, v in response.headers.multi_items() if k.lower() not in _WIRE_HEADERS]
    extensions = dict(response.extensions)
    if too_large is not None:
        extensions[TOO_LARGE_EXTENSION] = too_large
    return httpx.Response(
        response.status_code,
        headers=headers,
        content=body,
        request=response.request,
        extensions=extensions,
    )


def read_capped(response: httpx.Response, chunks: Iterator[bytes], cap: int) -> httpx.Response:
    """The answer with at most ``cap`` bytes of body read (sync)."""
    buffer = bytearray()
    for chunk in chunks:
        buffer += chunk
        if len(buffer) > cap:
            return _rebuilt(response, b"", too_large=cap)
    return _rebuilt(response, bytes(buffer), too_large=None)


async def aread_capped(
    response: httpx.Response, chunks: AsyncIterator[bytes], cap: int
) -> httpx.Response:
    """The answer with at most ``cap`` bytes of body read (async)."""
    buffer = bytearray()
    async for chunk in chunks:
        buffer += chunk
        if len(buffer) > cap:
            return _rebuilt(response, b"", too_large=cap)
    return _rebuilt(response, bytes(buffer), too_large=None)
