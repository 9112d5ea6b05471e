"""pytest fixtures for testing code that uses MAI Image offline (installed with mai-tools).

``mai_emulator`` gives each test a clean emulator (jobs, counters and faults reset) with fast
jobs (0.2-0.5 s), and points ``PIXAZO_API_KEY`` and ``PIXAZO_BASE_URL`` at it, so code that
builds ``MAIImageClient()`` with no arguments talks to it. It also points ``MAI_JOB_BOOK`` at
a fresh job book for the test, so no test continues a job an earlier one left in the book
(and none writes your real one)::

    def test_my_agent_draws(mai_emulator):
        answer = my_agent("draw a cat")
        assert mai_emulator.control.stats().jobs_created == 1

    def test_my_agent_survives_rate_limits(mai_emulator):
        mai_emulator.control.set_faults(rate_limit_first_submits=2, retry_after=0.1)
        ...

Override the ``mai_emulator_config`` fixture (session-scoped) to change durations or keys,
and ``mai_emulator_clock`` to run the emulator on a :class:`~mai_tools.emulator.ManualClock`
(jobs then end when the test advances it, ``mai_emulator.clock.advance(1)``, not by sleeping).
The server starts once per session, on first use; importing this plugin is cheap.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from mai_tools.emulator import EmulatorClock, EmulatorConfig, RunningEmulator


@pytest.fixture(scope="session")
def mai_emulator_config() -> EmulatorConfig:
    """The emulator's configuration for the session: fast jobs. Override to change it."""
    from mai_tools.emulator import EmulatorConfig

    return EmulatorConfig(min_duration=0.2, max_duration=0.5)


@pytest.fixture(scope="session")
def mai_emulator_clock() -> EmulatorClock | None:
    """The emulator's clock for the session: None is the real one. Override to return a
    ``ManualClock()`` and move the emulator's time from your tests."""
    return None


@pytest.fixture(scope="session")
def mai_emulator_session(
    mai_emulator_config: EmulatorConfig, mai_emulator_clock: EmulatorClock | None
) -> Iterator[RunningEmulator]:
    """One emulator server for the whole session."""
    from mai_tools.emulator import run_emulator

    with run_emulator(mai_emulator_config, clock=mai_emulator_clock) as emu:
        yield emu


@pytest.fixture
def mai_emulator(
    mai_emulator_session: RunningEmulator,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path_factory: pytest.TempPathFactory,
) -> RunningEmulator:
    """A clean emulator for this test; ``PIXAZO_API_KEY``/``PIXAZO_BASE_URL`` point at it,
    and ``MAI_JOB_BOOK`` at a fresh job book."""
    mai_emulator_session.control.reset()
    book = tmp_path_factory.mktemp("mai-job-book") / "jobs.sqlite3"
    monkeypatch.setenv("MAI_JOB_BOOK", str(book))
    monkeypatch.setenv("PIXAZO_API_KEY", mai_emulator_session.api_key)
    monkeypatch.setenv("PIXAZO_BASE_URL", mai_emulator_session.base_url)
    return mai_emulator_session
