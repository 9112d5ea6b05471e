"""The emulator's ManualClock: time moves only when a test advances it, from any thread, and
every wait on it (a job's end in sync_mode, a callback falling due) wakes exactly then."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from mai_tools._constants import GENERATE_PATH
from mai_tools.emulator import EmulatorConfig, ManualClock, RunningEmulator, run_emulator
from mai_tools.emulator._clock import SystemClock


def test_time_moves_only_when_advanced() -> None:
    clock = ManualClock(start=1_800_000_000.0)
    assert (clock.monotonic(), clock.time()) == (0.0, 1_800_000_000.0)
    clock.advance(2.5)
    assert (clock.monotonic(), clock.time()) == (2.5, 1_800_000_002.5)
    with pytest.raises(ValueError, match="only moves forward"):
        clock.advance(-1)


async def test_sleepers_wake_when_their_time_comes() -> None:
    clock = ManualClock()
    woke: list[str] = []

    async def sleeper(name: str, seconds: float) -> None:
        await clock.sleep(seconds)
        woke.append(name)

    tasks = [asyncio.create_task(sleeper(n, s)) for n, s in (("a", 1), ("b", 2), ("c", 2))]
    await asyncio.sleep(0)  # each task runs to its wait
    assert clock.sleepers == 3
    clock.advance(0.5)
    await asyncio.sleep(0)
    assert woke == []
    clock.advance(0.5)
    await tasks[0]
    assert (woke, clock.sleepers) == (["a"], 2)
    clock.advance(5)
    await asyncio.gather(*tasks)
    assert sorted(woke) == ["a", "b", "c"]
    await clock.sleep(0)  # nothing to wait for: returns without registering
    await clock.sleep(-1)
    assert clock.sleepers == 0


async def test_a_cancelled_sleeper_leaves_the_clock() -> None:
    clock = ManualClock()
    task = asyncio.create_task(clock.sleep(10))
    await asyncio.sleep(0)
    assert clock.sleepers == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert clock.sleepers == 0


def test_another_thread_advances_a_loops_sleepers() -> None:
    # The emulator's loop runs in its own thread; tests advance the clock from theirs.
    clock = ManualClock()
    done = threading.Event()

    def server() -> None:
        asyncio.run(clock.sleep(60))
        done.set()

    thread = threading.Thread(target=server, daemon=True)
    thread.start()
    clock.wait_for_sleepers(1)
    assert not done.is_set()
    clock.advance(60)
    assert done.wait(30)
    thread.join(30)


def test_wait_for_sleepers_gives_up_for_a_broken_test() -> None:
    with pytest.raises(TimeoutError, match="fewer than 1 waits"):
        ManualClock().wait_for_sleepers(1, timeout=0)


async def test_the_system_clock_is_the_real_one() -> None:
    clock = SystemClock()
    assert clock.monotonic() > 0
    assert clock.time() > 1_700_000_000
    await clock.sleep(-1)  # never negative


# A user's conftest and test, run by pytest with only our plugin loaded.
USER_FILES = {
    "conftest.py": """
import pytest
from mai_tools.emulator import ManualClock

@pytest.fixture(scope="session")
def mai_emulator_clock():
    return ManualClock()
""",
    "test_user.py": """
import os, httpx
from mai_tools._constants import GENERATE_PATH

def test_a_job_ends_when_the_test_says(mai_emulator):
    key = {"Ocp-Apim-Subscription-Key": os.environ["PIXAZO_API_KEY"]}
    with httpx.Client(base_url=os.environ["PIXAZO_BASE_URL"], headers=key) as c:
        job = c.post(GENERATE_PATH, json={"prompt": "a lighthouse"}).json()
        assert c.get(job["polling_url"]).json()["status"] == "QUEUED"
        mai_emulator.clock.advance(1)
        assert c.get(job["polling_url"]).json()["status"] == "COMPLETED"
""",
}


def test_the_pytest_plugin_takes_a_manual_clock(tmp_path: Path) -> None:
    for name, text in USER_FILES.items():
        (tmp_path / name).write_text(text)
    command = [sys.executable, "-m", "pytest", "-q", "-p", "mai_tools_emulator"]
    env = {**os.environ, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}
    done = subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert "1 passed" in done.stdout, done.stdout + done.stderr


def _sync_post(pool: ThreadPoolExecutor, emu: RunningEmulator) -> Future[httpx.Response]:
    """A sync_mode submit in another thread: it answers when its job ends."""
    return pool.submit(
        httpx.post,
        f"{emu.base_url}{GENERATE_PATH}",
        json={"prompt": "an inline job", "sync_mode": True},
        headers={"Ocp-Apim-Subscription-Key": emu.api_key},
        timeout=60,
    )


def test_sync_mode_waits_on_the_emulators_clock() -> None:
    clock = ManualClock()
    config = EmulatorConfig(min_duration=30, max_duration=30)
    with ThreadPoolExecutor(1) as pool, run_emulator(config, clock=clock) as emu:
        answer = _sync_post(pool, emu)
        clock.wait_for_sleepers(1)  # the POST waits for its job's end, on the clock
        assert not answer.done()
        clock.advance(30)
        response = answer.result(timeout=60)
    assert response.status_code == 200
    assert response.json()["status"] == "COMPLETED"


def test_leaving_does_not_wait_for_a_clock_nobody_advances() -> None:
    # A sync_mode answer waits for its job's end on the ManualClock; the test leaves without
    # advancing it. The server still stops: its thread is gone when run_emulator returns.
    clock = ManualClock()
    before = set(threading.enumerate())
    config = EmulatorConfig(min_duration=30, max_duration=30)
    with ThreadPoolExecutor(1) as pool, run_emulator(config, clock=clock) as emu:
        answer = _sync_post(pool, emu)
        clock.wait_for_sleepers(1)
        servers = {t for t in set(threading.enumerate()) - before if t.name == "mai-emulator"}
    assert len(servers) == 1
    assert not any(t.is_alive() for t in servers)
    with contextlib.suppress(httpx.HTTPError):  # cut off: an error, or uvicorn's 500
        assert answer.result(timeout=60).status_code != 200
