"""The job book across processes: twins, kill -9 mid-wait and mid-POST, on the emulator.

Each worker is a real Python process running the client with an ``idempotency_key``; the
emulator counts the jobs it makes. Kills are placed by watching the book (no timing guesses).
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from mai_tools.emulator import RunningEmulator
from tests.support.emulators import EmulatorPool
from tests.support.fakes import KEY
from tests.support.waiting import eventually

WORKER = """
import sys
from mai_tools import GenerateRequest, MAIImageClient, JobUnknownError
with MAIImageClient() as client:
    try:
        result = client.run(GenerateRequest(prompt=sys.argv[1]), idempotency_key=sys.argv[2])
    except JobUnknownError as exc:
        print("UNKNOWN", exc, flush=True)
        raise SystemExit(3)
print(result.request_id, flush=True)
"""


@pytest.fixture
def emu(emulators: EmulatorPool) -> RunningEmulator:
    return emulators(api_keys=(KEY,), min_duration=1.5, max_duration=1.5, seed=5)


def _env(emu: RunningEmulator) -> dict[str, str]:
    return {**os.environ, "PIXAZO_API_KEY": KEY, "PIXAZO_BASE_URL": emu.base_url}


def _start(emu: RunningEmulator, prompt: str, key: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", WORKER, prompt, key],
        env=_env(emu),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _states() -> list[tuple[str, str | None]]:
    path = Path(os.environ["MAI_JOB_BOOK"])
    if not path.exists():
        return []
    with sqlite3.connect(path) as db:
        try:
            return list(db.execute("SELECT state, request_id FROM mai_jobs"))
        except sqlite3.OperationalError:  # not created yet
            return []


def _posts(emu: RunningEmulator) -> int:
    return sum(r.method == "POST" for r in emu.control.stats().requests)


def test_two_processes_with_one_key_make_one_job(emu: RunningEmulator) -> None:
    workers = [_start(emu, "twin processes", "same-key") for _ in range(2)]
    outputs = [w.communicate(timeout=60) for w in workers]
    assert [w.returncode for w in workers] == [0, 0], outputs
    ids = {out.strip() for out, _ in outputs}
    assert len(ids) == 1
    assert emu.control.stats().jobs_created == 1


def test_a_process_killed_mid_wait_is_continued_by_the_next(emu: RunningEmulator) -> None:
    first = _start(emu, "killed while waiting", "resume-me")
    eventually(lambda: any(s == "submitted" for s, _ in _states()), "the job is submitted")
    first.send_signal(signal.SIGKILL)
    first.communicate()
    second = _start(emu, "killed while waiting", "resume-me")
    out, err = second.communicate(timeout=60)
    assert second.returncode == 0, err
    assert emu.control.stats().jobs_created == 1
    ((state, request_id),) = _states()
    assert (state, request_id) == ("finished", out.strip())


def test_a_process_killed_mid_post_leaves_an_unknown_job(emu: RunningEmulator) -> None:
    emu.control.set_faults(slow_rate=1.0, slow_seconds=30.0)  # every answer held 30 s
    first = _start(emu, "killed while posting", "ambiguous")
    eventually(lambda: _states() == [("intent", None)], "the intent is written")
    eventually(lambda: _posts(emu) == 1, "the POST is at the gateway")
    first.send_signal(signal.SIGKILL)
    first.communicate()
    emu.control.set_faults(slow_rate=0.0)
    second = _start(emu, "killed while posting", "ambiguous")
    out, _ = second.communicate(timeout=60)
    # The dead owner is seen at once: the job may exist, so it is reported, never re-sent.
    assert second.returncode == 3
    assert "UNKNOWN" in out
    assert "may have been created at" in out
    assert _posts(emu) == 1
    assert _states() == [("unknown", None)]
