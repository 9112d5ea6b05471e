"""Floods of half-sent requests, for the servers' connection guards (the webhook receiver's
own server, ``mai-image-mcp`` over HTTP)."""

from __future__ import annotations

import contextlib
import socket


def half_sent_flood(
    port: int, sources: list[str], per_source: int, head: bytes
) -> list[socket.socket]:
    """``per_source`` connections to ``127.0.0.1:port`` from each loopback address of
    ``sources`` (all of 127/8 is this host on Linux), each sending ``head`` (a request whose
    headers never end) and nothing more. The caller closes them."""
    socks: list[socket.socket] = []
    for source in sources:
        for _ in range(per_source):
            sock = socket.socket()
            socks.append(sock)
            sock.bind((source, 0))
            sock.connect(("127.0.0.1", port))
            with contextlib.suppress(OSError):  # closed by the server: what is tested
                sock.sendall(head)
    return socks
