"""``mai-image batch`` as a real process: ``kill -9`` at random moments, and SIGINT.

The emulator runs in this test process and outlives every batch process, so its counters
tell how many jobs each prompt got: a prompt with two jobs would have been paid twice.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mai_tools import AsyncMAIImageClient
from mai_tools._constants import DEFAULT_MAX_CONCURRENT_REQUESTS
from mai_tools.batch import BatchCounts, BatchRun
from mai_tools.emulator import RunningEmulator
from tests.batch.conftest import jobs_per_prompt
from tests.support.fakes import KEY

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

_MAIN = "from mai_tools.cli import main; main()"


def _command(source: Path, out: Path, *extra: str, concurrency: int = 16) -> list[str]:
    return [
        sys.executable,
        "-c",
        _MAIN,
        "batch",
        str(source),
        "--out",
        str(out),
        "-c",
        str(concurrency),
        *extra,
    ]


def _env(emu: RunningEmulator) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIXAZO_")}
    return {**env, "PIXAZO_API_KEY": KEY, "PIXAZO_BASE_URL": emu.base_url}


def _manifest(out: Path) -> list[dict[str, object]]:
    return [json.loads(x) for x in (out / "manifest.jsonl").read_text().splitlines()]


def _posts(emu: RunningEmulator) -> int:
    """POSTs that reached the emulator (counted on arrival, before any answer)."""
    return sum(1 for r in emu.control.stats().requests if r.method == "POST")


def _wait_for_submissions(emu: RunningEmulator, target: int, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 60
    while emu.control.stats().submissions < target and proc.poll() is None:
        assert time.monotonic() < deadline, "the batch made no progress"
        time.sleep(0.005)


def test_kill_9_at_random_moments_then_rerun_pays_no_prompt_twice(
    emu: RunningEmulator, tmp_path: Path
) -> None:
    prompts = [f"kill test prompt {i}" for i in range(120)]
    source = tmp_path / "prompts.txt"
    source.write_text("\n".join(prompts) + "\n")
    out = tmp_path / "out"
    rng = random.Random(20261201)
    kills = 0
    for _ in range(4):
        before = emu.control.stats().submissions
        if before >= len(prompts):
            break
        proc = subprocess.Popen(
            _command(source, out, "-q"),
            env=_env(emu),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            _wait_for_submissions(emu, before + rng.randint(1, 30), proc)
            time.sleep(rng.uniform(0, 0.15))  # sometimes mid-POST, mid-poll or mid-download
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                kills += 1
            proc.wait(30)
        finally:
            proc.kill()
            proc.communicate()
    assert kills >= 2

    final = subprocess.run(
        _command(source, out), env=_env(emu), capture_output=True, text=True, timeout=120
    )
    assert final.returncode in (0, 6), final.stderr  # 6: some lines are UNKNOWN
    unknown = {
        prompts[int(str(d["id"]).removeprefix("line-")) - 1]
        for d in _manifest(out)
        if d["status"] == "UNKNOWN"
    }
    if unknown:
        assert final.returncode == 6
        assert "--resubmit-unknown" in final.stdout
        again = subprocess.run(
            _command(source, out, "--resubmit-unknown"),
            env=_env(emu),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert again.returncode == 0, again.stderr

    lines = _manifest(out)
    assert len(lines) == len(prompts)
    assert {d["status"] for d in lines} == {"COMPLETED"}
    for data in lines:
        paths = data["paths"]
        assert isinstance(paths, list)
        assert len(paths) == 1
        assert (out / str(paths[0])).is_file()
    per_prompt = jobs_per_prompt(emu)
    assert set(per_prompt) == set(prompts)
    twice = {p for p, n in per_prompt.items() if n > 1}
    assert twice <= unknown  # only lines reported UNKNOWN may have been sent twice
    assert max(per_prompt.values()) <= 2


def test_kill_9_at_concurrency_128_leaves_unknown_only_the_posts_then_on_the_wire(
    emu: RunningEmulator, tmp_path: Path
) -> None:
    # 128 lines at once through the CLI's client (32 request slots), every answer late: when
    # the process dies, most lines are still waiting for a slot. Only a line whose POST was
    # admitted (at most one per slot) may come back UNKNOWN; before this was fixed, 113 of 128
    # did while 17 POSTs had reached the gateway.
    slots = DEFAULT_MAX_CONCURRENT_REQUESTS
    emu.control.set_faults(slow_rate=1.0, slow_seconds=0.3)
    prompts = [f"wire test prompt {i}" for i in range(160)]  # more lines than workers
    source = tmp_path / "prompts.txt"
    source.write_text("\n".join(prompts) + "\n")
    out = tmp_path / "out"
    proc = subprocess.Popen(
        _command(source, out, "-q", concurrency=128),
        env=_env(emu),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # Killed while saturated: more POSTs than slots have arrived, so every worker has been
        # waiting for a slot, and the answers are late, so many POSTs are on the wire.
        deadline = time.monotonic() + 60
        while _posts(emu) < 2 * slots + 8 and proc.poll() is None:
            assert time.monotonic() < deadline, "the batch made no progress"
            time.sleep(0.005)
        assert proc.poll() is None, proc.communicate()[1]
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        proc.kill()
        proc.communicate()
    posts = _posts(emu)
    counts = asyncio.run(_journal_counts(emu, prompts, out))
    answered = counts.running + counts.downloading + counts.completed + counts.failed
    assert counts.unknown <= slots, (counts, posts)
    # Each UNKNOWN line's POST had reached the gateway unanswered, or was still on its way.
    assert counts.unknown <= posts - answered + slots, (counts, posts)

    emu.control.set_faults(slow_rate=0.0)
    rerun = subprocess.run(
        _command(source, out, concurrency=128),
        env=_env(emu),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert rerun.returncode in (0, 6), rerun.stderr  # 6: some lines are UNKNOWN
    unknown = {
        prompts[int(str(d["id"]).removeprefix("line-")) - 1]
        for d in _manifest(out)
        if d["status"] == "UNKNOWN"
    }
    assert len(unknown) == counts.unknown
    per_prompt = jobs_per_prompt(emu)
    assert max(per_prompt.values()) == 1  # nothing that may have been received was resent
    assert set(per_prompt) >= set(prompts) - unknown


async def _journal_counts(emu: RunningEmulator, prompts: list[str], out: Path) -> BatchCounts:
    """Where the lines of ``out``'s journal stand, as the next run finds them (sends nothing)."""
    async with AsyncMAIImageClient(KEY, base_url=emu.base_url) as client:
        run = BatchRun(client, prompts, out)
        run.open()
        try:
            return run.counts()
        finally:
            run.close()


def test_sigint_records_everything_and_prints_the_resume_command(
    emu: RunningEmulator, tmp_path: Path
) -> None:
    prompts = [f"sigint prompt {i}" for i in range(60)]
    source = tmp_path / "p.txt"
    source.write_text("\n".join(prompts) + "\n")
    out = tmp_path / "out"
    proc = subprocess.Popen(
        _command(source, out),
        env=_env(emu),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_for_submissions(emu, 10, proc)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 130, stderr
    assert "error: interrupted (SIGINT)" in stderr
    assert f"resume with: mai-image batch {source} --out {out} --concurrency 16" in stdout
    assert "Traceback" not in stderr
    states = {d["status"] for d in _manifest(out)}
    assert "UNKNOWN" not in states  # requests in flight were finished and recorded
    rerun = subprocess.run(
        _command(source, out), env=_env(emu), capture_output=True, text=True, timeout=60
    )
    assert rerun.returncode == 0, rerun.stderr
    assert set(jobs_per_prompt(emu).values()) == {1}
    assert sum(jobs_per_prompt(emu).values()) == 60


@pytest.mark.skipif(os.name != "posix" or os.geteuid() != 0, reason="mounting a tmpfs needs root")
def test_a_full_disk_stops_the_run_and_the_rerun_resumes(
    emu: RunningEmulator, tmp_path: Path
) -> None:
    mount = tmp_path / "small"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=160k", "tmpfs", str(mount)])
    if made.returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        prompts = [f"disk full prompt {i}" for i in range(40)]
        source = tmp_path / "p.txt"
        source.write_text("\n".join(prompts) + "\n")
        (mount / "ballast").write_bytes(b"\0" * 40_000)
        full = subprocess.run(
            _command(source, mount / "out"),
            env=_env(emu),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert full.returncode == 7, full.stderr
        assert "Traceback" not in full.stderr
        assert "full" in (full.stdout + full.stderr).lower()
        (mount / "ballast").unlink()
        subprocess.run(["mount", "-o", "remount,size=4m", str(mount)], check=True)
        rerun = subprocess.run(
            _command(source, mount / "out", "--resubmit-unknown"),
            env=_env(emu),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert rerun.returncode == 0, rerun.stderr + rerun.stdout
        assert all(n <= 2 for n in jobs_per_prompt(emu).values())
    finally:
        subprocess.run(["umount", "-l", str(mount)])
