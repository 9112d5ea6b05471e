"""Fixtures for the batch tests: one fast in-process emulator (tiny images), reset per test."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pytest

from mai_tools import AsyncMAIImageClient, PollPolicy, RetryPolicy
from mai_tools.batch import BatchEvent, BatchRun, BatchSummary, InvalidLine, LineOutcome
from mai_tools.batch._input import BatchItem
from mai_tools.emulator import RunningEmulator
from tests.support.emulators import EmulatorPool
from tests.support.fakes import KEY

FAST_POLL = PollPolicy(first_delay=0.05, min_interval=0.05, cold_max_interval=0.2)
FAST_RETRY = RetryPolicy(initial_backoff=0.02, max_backoff=0.1, jitter=0.0)


@pytest.fixture
def emu(emulators: EmulatorPool) -> RunningEmulator:
    return emulators(api_keys=(KEY,), min_duration=0.1, max_duration=0.3, long_side=32)


def client(emu: RunningEmulator, **kwargs: Any) -> AsyncMAIImageClient:
    kwargs.setdefault("retry_policy", FAST_RETRY)
    kwargs.setdefault("poll_policy", FAST_POLL)
    return AsyncMAIImageClient(KEY, base_url=emu.base_url, **kwargs)


Items = Iterable[BatchItem | InvalidLine | Mapping[str, object] | str]


async def run_all(
    emu: RunningEmulator,
    items: Items,
    out: Path,
    *,
    client_options: dict[str, Any] | None = None,
    events: list[BatchEvent] | None = None,
    **options: Any,
) -> tuple[list[LineOutcome], BatchSummary]:
    """Run a batch to its end; every outcome and the summary."""
    options.setdefault("retry_policy", FAST_RETRY)
    if events is not None:
        options.setdefault("on_event", events.append)
    async with (
        client(emu, **(client_options or {})) as c,
        BatchRun(c, list(items), out, **options) as run,
    ):
        outcomes = [o async for o in run]
        return outcomes, run.summary()


def jobs_per_prompt(emu: RunningEmulator) -> Counter[str]:
    """How many jobs the emulator created for each prompt (a second one is a double charge)."""
    found: Counter[str] = Counter()
    for request_id in emu.control.stats().outcomes:
        job = emu.control.job(request_id)
        assert job is not None
        found[job.prompt] += 1
    return found
