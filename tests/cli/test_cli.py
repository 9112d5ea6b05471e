"""The mai-image command line against the emulator: output, files, exit codes, no key leaks."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image

from mai_tools.cli import (
    EXIT_BAD_INPUT,
    EXIT_CONFIG,
    EXIT_GATEWAY,
    EXIT_INTERRUPTED,
    EXIT_JOB_FAILED,
    EXIT_TIMEOUT,
    cli,
)
from mai_tools.emulator import EmulatorConfig, RunningEmulator, run_emulator
from tests.support.fakes import KEY


@pytest.fixture(scope="module")
def server() -> Iterator[RunningEmulator]:
    with run_emulator(
        EmulatorConfig(api_keys=(KEY, "sk-canary-poor"), min_duration=0.2, max_duration=0.4)
    ) as emu:
        yield emu


@pytest.fixture
def emu(server: RunningEmulator, monkeypatch: pytest.MonkeyPatch) -> RunningEmulator:
    server.control.reset()
    monkeypatch.setenv("PIXAZO_API_KEY", KEY)
    monkeypatch.setenv("PIXAZO_BASE_URL", server.base_url)
    return server


def _run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)
    assert KEY not in result.stdout
    assert KEY not in result.stderr
    assert "Traceback" not in result.stderr
    return result.exit_code, result.stdout, result.stderr


def test_generate_saves_images(emu: RunningEmulator, tmp_path: Path) -> None:
    code, out, err = _run(
        "generate", "a green tractor", "-n", "2", "-a", "4:3", "-o", str(tmp_path)
    )
    assert code == 0, err
    files = sorted(tmp_path.iterdir())
    assert len(files) == 2
    for f in files:
        with Image.open(f) as image:
            assert image.size == (1024, 768)
        assert f"saved: {f}" in out
    assert "image 1: http://" in out
    assert "COMPLETED" in err  # plain progress lines when not a terminal
    assert emu.control.stats().jobs_created == 1


def test_json_output(emu: RunningEmulator, tmp_path: Path) -> None:
    code, out, _ = _run(
        "generate", "json please", "--json", "-q", "-f", "webp", "-o", str(tmp_path)
    )
    assert code == 0
    data = json.loads(out)
    assert data["status"] == "COMPLETED"
    assert data["media_type"] == "image/webp"
    assert len(data["saved_paths"]) == 1
    assert Path(data["saved_paths"][0]).exists()


def test_sync_json_never_prints_base64(emu: RunningEmulator, tmp_path: Path) -> None:
    code, out, _ = _run("generate", "inline", "--sync", "--json", "-q", "-o", str(tmp_path))
    assert code == 0
    assert len(out) < 2000
    assert json.loads(out)["image_urls"][0].startswith("data:image/png;base64,...")


def test_no_save(emu: RunningEmulator, tmp_path: Path) -> None:
    code, out, _ = _run("generate", "urls only", "--no-save", "-o", str(tmp_path / "x"))
    assert code == 0
    assert "saved:" not in out
    assert not (tmp_path / "x").exists()


def test_edit_from_path(emu: RunningEmulator, tmp_path: Path) -> None:
    src = tmp_path / "in.png"
    Image.new("RGB", (200, 100), (9, 9, 9)).save(src)
    code, _out, err = _run("edit", str(src), "make it bright", "-o", str(tmp_path / "out"))
    assert code == 0, err
    (saved,) = (tmp_path / "out").iterdir()
    with Image.open(saved) as image:
        assert image.size == (1024, 512)


def test_status_and_wait(emu: RunningEmulator, tmp_path: Path) -> None:
    code, out, _ = _run("generate", "for later", "--no-save", "-q", "--json")
    rid = json.loads(out)["request_id"]
    code, out, _ = _run("status", rid)
    assert code == 0
    assert out.startswith(f"{rid}: COMPLETED")
    code, out, _ = _run("status", rid, "--json")
    assert json.loads(out)["status"] == "COMPLETED"
    code, out, _ = _run("wait", rid, "-o", str(tmp_path))
    assert code == 0
    assert len(list(tmp_path.iterdir())) == 1


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["generate", "hi"], EXIT_BAD_INPUT, "prompt"),
        (["generate", "a cat", "-a", "7:1"], EXIT_BAD_INPUT, "aspect-ratio"),
        (["edit", "/no/such.png", "a cat"], EXIT_BAD_INPUT, "No such image file"),
        (["edit", "x.png", "a cat", "-a", "21:9"], EXIT_BAD_INPUT, "aspect-ratio"),
        (["status", "../../etc"], EXIT_BAD_INPUT, "request id"),
        (["generate", "a [fail] cat"], EXIT_JOB_FAILED, "FAILED"),
        (["generate", "an [error] cat"], EXIT_JOB_FAILED, "ERROR"),
        (["status", "microsoft-mai-image-2-5_unknown"], EXIT_GATEWAY, "404"),
    ],
)
def test_exit_codes(emu: RunningEmulator, args: list[str], code: int, message: str) -> None:
    got, _, err = _run(*args)
    assert got == code
    assert message in err
    # One error line (click's usage errors add its standard two-line "Usage/Try" header).
    assert len([line for line in err.splitlines() if line.startswith(("error:", "Error:"))]) == 1


def test_auth_and_balance_exit_3(emu: RunningEmulator) -> None:
    code, _, err = _run("generate", "a cat", env={"PIXAZO_API_KEY": "sk-canary-wrong"})
    assert code == EXIT_CONFIG
    assert "401" in err
    assert "sk-canary-wrong" not in err
    emu.control.set_faults(insufficient_balance_keys=("sk-canary-poor",))
    code, _, err = _run("generate", "a cat", env={"PIXAZO_API_KEY": "sk-canary-poor"})
    assert code == EXIT_CONFIG
    assert "402" in err


def test_no_key_explains_both_options(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PIXAZO_API_KEY", raising=False)
    code, _, err = _run("generate", "a cat")
    assert code == EXIT_CONFIG
    assert "PIXAZO_API_KEY" in err
    assert "--emulator" in err


def test_timeout_prints_resume_command(emu: RunningEmulator) -> None:
    with run_emulator(EmulatorConfig(api_keys=(KEY,), min_duration=2, max_duration=2)) as slow:
        code, _, err = _run(
            "generate", "slow", "--timeout", "0.3", env={"PIXAZO_BASE_URL": slow.base_url}
        )
    assert code == EXIT_TIMEOUT
    assert "mai-image wait microsoft-mai-image-2-5_" in err


def test_ctrl_c_prints_resume_command(
    emu: RunningEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mai_tools import MAIImageClient

    def interrupted(self: MAIImageClient, *args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(MAIImageClient, "wait", interrupted)
    code, _, err = _run("generate", "to be interrupted")
    assert code == EXIT_INTERRUPTED
    assert "mai-image wait microsoft-mai-image-2-5_" in err


def test_emulator_flag_needs_no_key(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("PIXAZO_API_KEY", raising=False)
    code, _out, err = _run("generate", "offline demo", "--emulator", "-o", str(tmp_path))
    assert code == 0, err
    assert len(list(tmp_path.iterdir())) == 1
    assert "emulator" in err


def _console_script() -> str:
    script = shutil.which("mai-image", path=os.path.dirname(sys.executable))
    if script is None:
        pytest.skip("the mai-image console script is not installed next to this Python")
    return script


def test_installed_console_script(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIXAZO_")}
    proc = subprocess.run(
        [_console_script(), "generate", "a lighthouse at dawn", "--emulator"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    (saved,) = (tmp_path / "mai-images").iterdir()
    with Image.open(saved) as image:
        assert image.format == "PNG"


def test_sigint_in_a_real_process(tmp_path: Path) -> None:
    with run_emulator(EmulatorConfig(api_keys=(KEY,), min_duration=30, max_duration=30)) as slow:
        env = {**os.environ, "PIXAZO_API_KEY": KEY, "PIXAZO_BASE_URL": slow.base_url}
        proc = subprocess.Popen(
            [_console_script(), "generate", "wait for me"],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 20
        while slow.control.stats().status_requests == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=20)
    assert proc.returncode == EXIT_INTERRUPTED
    assert "mai-image wait microsoft-mai-image-2-5_" in err
    assert KEY not in err
    assert "Traceback" not in err


def test_emulator_subcommand_help() -> None:
    code, out, _ = _run("emulator", "--help")
    assert code == 0
    assert "--port" in out
    assert "--fail-rate" in out
