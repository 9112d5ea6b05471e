"""``mai-image-mcp`` over HTTP under a flood of half-sent requests: its connection guard
(``--max-connections``, ``--max-connections-per-client``, ``--request-read-timeout``) holds the
server process's file descriptors to its caps, and an honest MCP call still succeeds.

The server is the real command in a subprocess (its descriptors are counted in /proc). The
flood comes from other loopback addresses (127.0.0.2 and up: all of 127/8 is this host on
Linux) when a test needs it to be another client. Each test waits for the server to have closed
the flood sockets it must close, never for a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import selectors
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from mai_tools.emulator import EmulatorConfig, RunningEmulator, run_emulator
from mcp_server import Settings, create_server
from mcp_server._http import http_app
from tests.support.fakes import KEY
from tests.support.flood import half_sent_flood

ROOT = Path(__file__).resolve().parents[2]
HALF_SENT = b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
PATIENT = 600.0  # no admitted flood connection may time out while a test counts them

linux_only = pytest.mark.skipif(
    sys.platform != "linux", reason="/proc file descriptors; source addresses 127.0.0.2+"
)


@pytest.fixture(scope="module")
def emu() -> Iterator[RunningEmulator]:
    """Jobs of a second: the honest call's answer streams longer than a short read timeout."""
    with run_emulator(EmulatorConfig(api_keys=(KEY,), min_duration=1.0, max_duration=1.0)) as e:
        yield e


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _command() -> str:
    """The installed ``mai-image-mcp`` next to this Python (the entry point users run)."""
    script = shutil.which("mai-image-mcp", path=os.path.dirname(sys.executable))
    if script is None:
        pytest.skip("the mai-image-mcp console script is not installed next to this Python")
    return script


@contextlib.contextmanager
def _mcp_server(emu: RunningEmulator, *flags: str, **variables: str) -> Iterator[tuple[str, int]]:
    """``mai-image-mcp --transport streamable-http FLAGS`` with ``MAI_MCP_<NAME>`` variables:
    its origin and process id."""
    port = _free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("PIXAZO_", "MAI_MCP_"))},
        **{f"MAI_MCP_{name.upper()}": value for name, value in variables.items()},
        "PIXAZO_API_KEY": KEY,
        "PIXAZO_BASE_URL": emu.base_url,
        "MAI_MCP_PREVIEW": "off",
        "MAI_MCP_MAX_WAIT": "60",
    }
    args = [_command(), "--transport", "streamable-http", "--port", str(port), *flags]
    with subprocess.Popen(args, env=env, stderr=subprocess.PIPE, cwd=ROOT) as proc:
        try:
            _listening(proc, port)
            yield f"http://127.0.0.1:{port}", proc.pid
        finally:
            proc.terminate()
            proc.communicate(timeout=30)


def _listening(proc: subprocess.Popen[bytes], port: int) -> None:
    deadline = time.monotonic() + 60  # only ends a broken test
    while proc.poll() is None:
        with contextlib.suppress(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        assert time.monotonic() < deadline, "the server did not start listening"
        time.sleep(0.05)
    _, stderr = proc.communicate()
    raise AssertionError(f"the server did not start: {stderr.decode()}")


def _port(origin: str) -> int:
    return int(origin.rsplit(":", 1)[1])


def _descriptors(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _until_closed(socks: list[socket.socket], count: int) -> int:
    """Wait until the server has closed ``count`` of ``socks`` (each read gives EOF or a
    reset); the number closed. The deadline only ends a broken test."""
    closed = 0
    with selectors.DefaultSelector() as selector:
        for sock in socks:
            selector.register(sock, selectors.EVENT_READ, sock)
        deadline = time.monotonic() + 120
        while closed < count:
            assert time.monotonic() < deadline, f"only {closed} of {count} were closed"
            for key, _ in selector.select(timeout=0.5):
                sock = key.data
                try:
                    data = sock.recv(1024)
                except ConnectionResetError:
                    data = b""
                assert data == b"", data  # nothing is answered to a half-sent request
                selector.unregister(sock)
                closed += 1
    return closed


async def _honest_call(origin: str) -> str:
    async with (
        httpx2.AsyncClient(timeout=60) as http,
        Client(streamable_http_client(f"{origin}/mcp", http_client=http)) as client,
    ):
        result = await client.call_tool("generate_image", {"prompt": "a lighthouse at dusk"})
    assert not result.is_error, result.content
    assert result.structured_content is not None
    request_id = result.structured_content["request_id"]
    assert isinstance(request_id, str)
    return request_id


@linux_only
def test_a_flood_from_one_client_gets_its_share_and_an_honest_call_succeeds(
    emu: RunningEmulator,
) -> None:
    per_client, flood_size = 10, 120
    with _mcp_server(  # the variables this time
        emu,
        max_connections="40",
        max_connections_per_client=str(per_client),
        request_read_timeout=str(PATIENT),
    ) as (origin, pid):
        before = _descriptors(pid)
        socks = half_sent_flood(_port(origin), ["127.0.0.2"], flood_size, HALF_SENT)
        try:
            # Exactly the per-client cap stays open; every other one is closed on arrival.
            _until_closed(socks, flood_size - per_client)
            assert _descriptors(pid) <= before + per_client + 2
            # The flood's share is still held while an honest client (127.0.0.1) calls.
            asyncio.run(_honest_call(origin))
            assert _descriptors(pid) <= before + per_client + 8  # + the call's own sockets
        finally:
            for sock in socks:
                sock.close()
    assert emu.control.stats().jobs_created >= 1


@linux_only
def test_half_sent_requests_past_the_read_timeout_are_closed_and_answers_are_not(
    emu: RunningEmulator,
) -> None:
    cap, flood_size = 30, 100
    with _mcp_server(emu, *("--max-connections", str(cap), "--request-read-timeout", "0.5")) as (
        origin,
        pid,
    ):
        before = _descriptors(pid)
        sources = [f"127.0.0.{n}" for n in range(2, 6)]
        socks = half_sent_flood(_port(origin), sources, flood_size // len(sources), HALF_SENT)
        try:
            # Past the total cap: closed on arrival; the rest: when their headers are late.
            # (No per-client cap by default: the flood's addresses share the total.)
            assert _until_closed(socks, len(socks)) == flood_size
            assert _descriptors(pid) <= before + 2
            # A call whose answer streams for longer than the read timeout (a 1 s job) is
            # not cut off: the timeout covers the request's arrival only.
            asyncio.run(_honest_call(origin))
        finally:
            for sock in socks:
                sock.close()


def test_the_sdks_session_refusals_are_logged_at_most_10_a_minute(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A session flood past --max-sessions: the SDK warns once per refused request."""
    settings = Settings(api_key=KEY, preview="off")
    http_app(create_server(settings), settings)
    log = logging.getLogger("mcp.server.streamable_http_manager")
    with caplog.at_level(logging.INFO, logger=log.name):
        for _ in range(500):
            log.warning("Refusing to open a new session: %d sessions are already open", 100)
        log.info("another record of the session manager")
    refusals = [r for r in caplog.records if r.getMessage().startswith("Refusing")]
    assert len(refusals) <= 10
    assert "another record of the session manager" in caplog.text
