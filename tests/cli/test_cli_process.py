"""The installed ``mai-image`` console script in real processes: the README's first command,
a real SIGINT, the ``emulator`` subcommand, and a startup that stays light."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from mai_tools.emulator import DEFAULT_EMULATOR_KEY, RunningEmulator
from tests.cli.cli_support import KEY, RID_PREFIX, check_hygiene, console_script, invoke


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIXAZO_")}
    env.update(extra)
    return env


def test_readme_first_command_works_offline_with_no_key(tmp_path: Path) -> None:
    proc = subprocess.run(
        [console_script(), "generate", "a lighthouse on a cliff at dawn, watercolor", "--emulator"],
        cwd=tmp_path,
        env=_clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    check_hygiene(proc.stdout, proc.stderr)
    (saved,) = (tmp_path / "mai-images").iterdir()
    with Image.open(saved) as image:
        image.load()
        assert image.format == "PNG"
    printed = re.findall(r"^  saved: (\S+)$", proc.stdout, re.M)
    assert printed == [str(Path("mai-images") / saved.name)]
    assert re.search(rf"^{RID_PREFIX}\S+: COMPLETED \(", proc.stderr, re.M)


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM])
def test_sigint_or_sigterm_while_waiting_prints_the_resume_command(
    slow_server: RunningEmulator, tmp_path: Path, stop: signal.Signals
) -> None:
    slow_server.control.reset()
    env = _clean_env(PIXAZO_API_KEY=KEY, PIXAZO_BASE_URL=slow_server.base_url)
    proc = subprocess.Popen(
        [console_script(), "generate", "wait for me"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        while slow_server.control.stats().status_requests == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        proc.send_signal(stop)
        out, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert not list(tmp_path.rglob("*.part"))
    check_hygiene(out, err)
    (line,) = [x for x in err.splitlines() if x.startswith("error:")]
    (job,) = slow_server.control.stats().outcomes  # the one job the process submitted
    assert line.endswith(f"Resume with: mai-image wait {job}")


def test_emulator_subcommand_serves_until_ctrl_c(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [
            console_script(),
            "emulator",
            "--port",
            "0",
            "--min-duration",
            "0",
            "--max-duration",
            "0.1",
        ],
        env=_clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        match = re.search(r"listening on (http://127\.0\.0\.1:\d+)", first)
        assert match, first
        env = {"PIXAZO_BASE_URL": match.group(1), "PIXAZO_API_KEY": DEFAULT_EMULATOR_KEY}
        got = invoke("generate", "served elsewhere", "-o", str(tmp_path), env=env)
        assert got.code == 0, got.stderr
        assert len(list(tmp_path.iterdir())) == 1
        # Jobs outlive a command here (unlike --emulator): status finds it from a new run.
        rid = got.stdout.splitlines()[0].removeprefix("request_id: ")
        assert "status: COMPLETED" in invoke("status", rid, env=env).stdout
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert "emulator stopped" in err
    assert f"{match.group(1)}/openapi.json" in err
    assert "error:" not in err


def test_startup_imports_no_server_or_adapter_stack() -> None:
    code = (
        "import sys, mai_tools.cli; "
        "print(sorted(m for m in ('uvicorn', 'starlette', 'PIL', 'langchain_core', 'mcp', "
        "'mai_tools.emulator') if m in sys.modules))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert proc.stdout.strip() == "[]"
