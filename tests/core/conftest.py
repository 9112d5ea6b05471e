"""Fixtures for the core client tests: a fake gateway and a sync/async harness."""

from __future__ import annotations

from collections.abc import Iterator

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
