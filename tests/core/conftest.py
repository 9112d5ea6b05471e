"""Fixtures for the core client tests: a fake gateway and a sync/async harness."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

import pytest

from mai_tools import FakeClock
from tests.support.fakes import Gateway, Harness


@pytest.fixture
def gateway() -> Gateway:
    return Gateway()


@pytest.fixture(params=["sync", "async"])
def harness(request: pytest.FixtureRequest, gateway: Gateway) -> Iterator[Harness]:
    clock = FakeClock(1000.0)
    gateway.clock = clock
    harness = Harness(mode=request.param, gateway=gateway, clock=clock)
    yield harness
    harness.close()


@pytest.fixture(autouse=True)
def _no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PIXAZO_API_KEY", raising=False)
    monkeypatch.delenv("PIXAZO_BASE_URL", raising=False)


@pytest.fixture
def connects(caplog: pytest.LogCaptureFixture) -> Callable[[], int]:
    """How many TCP connections httpcore has opened so far (its "connect_tcp.complete" log)."""
    caplog.set_level(logging.DEBUG, logger="httpcore.connection")
    return lambda: sum(m.startswith("connect_tcp.complete") for m in caplog.messages)
