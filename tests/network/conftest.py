"""Fixtures for the network tests: a clean proxy environment, the emulator, the test servers."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from mai_tools.emulator import EmulatorConfig, RunningEmulator, run_emulator
from tests.network.servers import ForwardProxy, HostileHost, forward_proxy, hostile_host
from tests.support.fakes import KEY

PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")


@pytest.fixture(autouse=True)
def _no_proxy_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts with no proxy configured (either spelling), whatever the machine has."""
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


@pytest.fixture(scope="module")
def emulator() -> Iterator[RunningEmulator]:
    with run_emulator(EmulatorConfig(api_keys=(KEY,), min_duration=0, max_duration=0)) as emu:
        yield emu


@pytest.fixture
def emu(emulator: RunningEmulator) -> RunningEmulator:
    emulator.control.reset()
    return emulator


@pytest.fixture
def proxy() -> Iterator[ForwardProxy]:
    with forward_proxy() as running:
        yield running


@pytest.fixture
def media() -> Iterator[HostileHost]:
    with hostile_host() as host:
        yield host
