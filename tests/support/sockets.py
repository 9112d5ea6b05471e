"""A loopback port that only listens: a test asserts nobody connected to it (a URL that must
never be fetched, e.g. by view_image's SSRF guard)."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator


class QuietPort:
    """A listening loopback socket; :meth:`untouched` says whether nobody connected."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self.port: int = sock.getsockname()[1]

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def untouched(self) -> bool:
        try:
            connection, _ = self._sock.accept()
        except BlockingIOError:
            return True
        connection.close()
        return False


@contextlib.contextmanager
def quiet_port() -> Iterator[QuietPort]:
    sock = socket.socket()
    try:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        sock.setblocking(False)
        yield QuietPort(sock)
    finally:
        sock.close()
