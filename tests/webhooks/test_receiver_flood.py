"""The receiver's own server under a flood of half-sent requests without a token: the caps
hold (open connections in all and per client, request read time, log lines), and the
process's own jobs still finish: pushed when the flood leaves room, else by polling.

The flood comes from other loopback addresses (127.0.0.2 and up: all of 127/8 is this host on
Linux), so the emulator's callbacks (from 127.0.0.1) are a different client. Each test waits
for the receiver's own counters to account for every flood socket, never for a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import sys
import time
from collections.abc import Iterator

import pytest

from mai_tools import (
    AsyncMAIImageClient,
    ConfigurationError,
    ImageResult,
    MAIImageClient,
    PollPolicy,
    WebhookReceiver,
)
from mai_tools._constants import WEBHOOK_MAX_CONNECTIONS, WEBHOOK_MAX_PER_CLIENT, WEBHOOK_PATH
from mai_tools._server_guard import RateLimit
from mai_tools.emulator import EmulatorConfig, RunningEmulator, run_emulator
from tests.support.fakes import KEY
from tests.support.flood import half_sent_flood

linux_only = pytest.mark.skipif(
    sys.platform != "linux", reason="source addresses 127.0.0.2+ are local on Linux only"
)
# A callback that never comes costs one second before the fallback read, not five.
QUICK_FALLBACK = PollPolicy(push_cold_delay=1.0, push_margin=0.5)
# No admitted flood connection may time out while a test counts them, however slow the machine.
PATIENT = 600.0
HALF_SENT = f"POST {WEBHOOK_PATH}/{'A' * 43} HTTP/1.1\r\nHost: hooks\r\n".encode()


@pytest.fixture(scope="module")
def emu() -> Iterator[RunningEmulator]:
    config = EmulatorConfig(api_keys=(KEY,), min_duration=0.2, max_duration=0.3, seed=11)
    with run_emulator(config) as emulator:
        yield emulator


def _flood(port: int, sources: list[str], per_source: int) -> list[socket.socket]:
    """Connections that send half a request (no token, headers never finished)."""
    return half_sent_flood(port, sources, per_source, HALF_SENT)


def _settled(receiver: WebhookReceiver, total: int, timeout: float = 120) -> dict[str, int]:
    """The receiver's counters once it has admitted or turned away all ``total`` sockets
    (the timeout only ends a broken test)."""
    deadline = time.monotonic() + timeout
    while True:
        stats = receiver.stats()
        if stats["connections"] + stats["connections_turned_away"] >= total:
            return stats
        assert time.monotonic() < deadline, f"the receiver saw fewer than {total}: {stats}"
        time.sleep(0.02)


def _close(socks: list[socket.socket]) -> None:
    for sock in socks:
        sock.close()


async def _agenerate(emu: RunningEmulator, receiver: WebhookReceiver, prompt: str) -> object:
    async with AsyncMAIImageClient(
        KEY, base_url=emu.base_url, webhooks=receiver, poll_policy=QUICK_FALLBACK
    ) as client:
        return await client.generate(prompt)


def _generate_both_ways(emu: RunningEmulator, receiver: WebhookReceiver) -> None:
    with MAIImageClient(
        KEY, base_url=emu.base_url, webhooks=receiver, poll_policy=QUICK_FALLBACK
    ) as client:
        assert isinstance(client.generate("during a flood, sync"), ImageResult)
    assert isinstance(asyncio.run(_agenerate(emu, receiver, "during a flood, async")), ImageResult)


@linux_only
def test_one_client_gets_its_share_and_the_callbacks_still_come(emu: RunningEmulator) -> None:
    emu.control.reset()
    flood_size = WEBHOOK_MAX_PER_CLIENT + 40
    with WebhookReceiver(read_timeout=PATIENT) as receiver:
        socks = _flood(receiver._bound_port or 0, ["127.0.0.2"], flood_size)
        try:
            stats = _settled(receiver, flood_size)
            assert stats["connections"] == WEBHOOK_MAX_PER_CLIENT
            assert stats["connections_turned_away"] == flood_size - WEBHOOK_MAX_PER_CLIENT
            _generate_both_ways(emu, receiver)
            # The emulator (another client) gets through: both callbacks arrive, before their
            # wait ended (accepted) or after a fallback read ended it on a slow machine.
            deadline = time.monotonic() + 120  # only ends a broken test
            while (got := receiver.stats())["accepted"] + got["ignored"] < 2:
                assert time.monotonic() < deadline, got
                time.sleep(0.02)
            assert got["connections_peak"] <= WEBHOOK_MAX_PER_CLIENT + 1
        finally:
            _close(socks)


@linux_only
def test_a_flood_from_many_clients_is_capped_and_jobs_finish_by_polling(
    emu: RunningEmulator,
) -> None:
    emu.control.reset()
    sources = [f"127.0.0.{n}" for n in range(2, 8)]
    per_source = WEBHOOK_MAX_CONNECTIONS // len(sources) + 8  # under the per-client cap
    assert per_source < WEBHOOK_MAX_PER_CLIENT
    flood_size = per_source * len(sources)
    assert flood_size > WEBHOOK_MAX_CONNECTIONS
    with WebhookReceiver(read_timeout=PATIENT) as receiver:
        socks = _flood(receiver._bound_port or 0, sources, per_source)
        try:
            stats = _settled(receiver, flood_size)
            assert stats["connections"] == WEBHOOK_MAX_CONNECTIONS
            assert stats["connections_turned_away"] == flood_size - WEBHOOK_MAX_CONNECTIONS
            assert stats["connections_peak"] == WEBHOOK_MAX_CONNECTIONS
            # The process's own requests are untouched; the callbacks are turned away like
            # the flood, and both waits end with a fallback status read.
            _generate_both_ways(emu, receiver)
            after = receiver.stats()
            assert after["connections_peak"] == WEBHOOK_MAX_CONNECTIONS
            assert after["accepted"] == 0
        finally:
            _close(socks)


def test_a_request_too_slow_to_arrive_is_cut_off() -> None:
    with WebhookReceiver(read_timeout=0.2) as receiver:
        with socket.create_connection(("127.0.0.1", receiver._bound_port or 0)) as slow:
            slow.sendall(HALF_SENT)
            slow.settimeout(60)  # only ends a broken test
            with contextlib.suppress(ConnectionResetError):
                assert slow.recv(1024) == b""  # closed by the receiver, nothing answered
        stats = _settled(receiver, 0)
        assert stats["connections_too_slow"] == 1
        deadline = time.monotonic() + 60  # only ends a broken test
        while receiver.stats()["connections"]:  # the server's side of the close
            assert time.monotonic() < deadline
            time.sleep(0.01)


def test_the_limits_are_checked_at_construction() -> None:
    for kwargs in (
        {"max_connections": 0},
        {"max_connections_per_client": True},
        {"read_timeout": 0},
        {"read_timeout": float("inf")},
    ):
        with pytest.raises(ConfigurationError):
            WebhookReceiver(**kwargs)


def test_the_servers_log_lines_are_rate_limited() -> None:
    now = [0.0]
    limit = RateLimit(burst=10, period=60.0, clock=lambda: now[0])
    log = logging.getLogger("tests.rate_limited")

    def passed(count: int) -> list[logging.LogRecord]:
        out = []
        for _ in range(count):
            record = log.makeRecord(log.name, logging.WARNING, "f", 1, "turned away", (), None)
            if limit.filter(record):
                out.append(record)
        return out

    assert len(passed(1_000)) == 10
    now[0] = 59.0
    assert passed(5) == []
    now[0] = 60.0
    first, *rest = passed(1_000)
    assert "995 more like it were not logged" in first.getMessage()
    assert len(rest) == 9
