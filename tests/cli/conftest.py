"""Fixtures for the mai-image tests: one fast emulator for the session, reset per test."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from mai_tools.emulator import RunningEmulator
from tests.cli.cli_support import FORBIDDEN_KEY, KEY, POOR_KEY, FakeSetup, fake_setup
from tests.support.emulators import EmulatorPool
from tests.support.fakes import BASE, PNG_1PX, RID, Gateway

CDN_URL = f"https://cdn.example.com/v1/{RID}/output.png"  # what the fake's COMPLETED points at


CLI_CONFIG = {"api_keys": (KEY, POOR_KEY, FORBIDDEN_KEY), "min_duration": 0.2, "max_duration": 0.4}
SLOW_CONFIG = {"api_keys": (KEY,), "min_duration": 60, "max_duration": 60}


@pytest.fixture
def cli_server(emulators: EmulatorPool) -> RunningEmulator:
    return emulators(**CLI_CONFIG)


@pytest.fixture
def slow_server(emulators: EmulatorPool) -> RunningEmulator:
    """Jobs that take a minute: for timeouts and interruptions."""
    return emulators(**SLOW_CONFIG)


@pytest.fixture
def emu(cli_server: RunningEmulator, monkeypatch: pytest.MonkeyPatch) -> RunningEmulator:
    """The session emulator, reset, with PIXAZO_API_KEY/PIXAZO_BASE_URL pointing at it."""
    monkeypatch.setenv("PIXAZO_API_KEY", KEY)
    monkeypatch.setenv("PIXAZO_BASE_URL", cli_server.base_url)
    return cli_server


@pytest.fixture
def slow(slow_server: RunningEmulator, monkeypatch: pytest.MonkeyPatch) -> RunningEmulator:
    monkeypatch.setenv("PIXAZO_API_KEY", KEY)
    monkeypatch.setenv("PIXAZO_BASE_URL", slow_server.base_url)
    return slow_server


@pytest.fixture(autouse=True)
def _isolated(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    # The default --out is ./mai-images: never let a test write into the repository.
    monkeypatch.chdir(tmp_path_factory.mktemp("cwd"))
    # A test that forgets to point at an emulator fails fast on a closed loopback port
    # instead of reaching for the real gateway.
    monkeypatch.setenv("PIXAZO_BASE_URL", "http://127.0.0.1:9")
    monkeypatch.delenv("PIXAZO_API_KEY", raising=False)


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeSetup]:
    """The CLI over the scripted fake gateway of ``tests.support.fakes`` and a fake clock."""
    monkeypatch.setenv("PIXAZO_API_KEY", KEY)
    monkeypatch.setenv("PIXAZO_BASE_URL", BASE)
    gateway = Gateway()
    gateway.downloads[CDN_URL] = httpx.Response(
        200, content=PNG_1PX, headers={"content-type": "image/png"}
    )
    setup = fake_setup(gateway)
    yield setup
    setup.http.close()
