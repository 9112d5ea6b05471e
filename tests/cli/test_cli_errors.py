"""Exit codes for each class of failure, each as one clear line on stderr, never the key."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from mai_tools import MAIImageClient
from mai_tools._config import Secret
from mai_tools.cli import CliState, ExitCode
from mai_tools.cli._errors import Session
from mai_tools.emulator import RunningEmulator
from tests.cli.cli_support import (
    FORBIDDEN_KEY,
    KEY,
    POOR_KEY,
    RID_PREFIX,
    WRONG_KEY,
    FakeSetup,
    Outcome,
    fake_setup,
    invoke,
)
from tests.support.fakes import RID, FullDisk, Gateway, ok, status_body


def _one_error_line(got: Outcome) -> str:
    (line,) = got.error_lines
    return line


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["generate", "hi"], ExitCode.USAGE, "prompt"),
        (["generate", "   x  "], ExitCode.USAGE, "besides leading and trailing whitespace"),
        (["edit", "/no/such.png", "a cat"], ExitCode.USAGE, "No such image file"),
        (["status", "../../etc/passwd"], ExitCode.USAGE, "Invalid request id"),
        (["wait", "bad id"], ExitCode.USAGE, "Invalid request id"),
        (["status", f"{RID_PREFIX}unknown"], ExitCode.USAGE, "HTTP 404"),
        (["generate", "a [fail] cat"], ExitCode.JOB_FAILED, "ended FAILED"),
        (["generate", "an [error] cat"], ExitCode.JOB_FAILED, "ended ERROR"),
    ],
)
def test_input_and_job_failures(
    emu: RunningEmulator, args: list[str], code: ExitCode, message: str
) -> None:
    got = invoke(*args)
    assert got.code == code
    assert message in _one_error_line(got)


@pytest.mark.parametrize(
    "args",
    [
        ["generate", "a cat", "-n", "5"],
        ["generate", "a cat", "-a", "7:1"],
        ["edit", "x.png", "a cat", "-a", "21:9"],  # generate-only ratio
        ["generate", "a cat", "--timeout", "0"],
        ["generate"],
        ["frobnicate"],
    ],
)
def test_usage_errors_exit_2(emu: RunningEmulator, args: list[str]) -> None:
    got = invoke(*args)
    assert got.code == 2
    assert "Usage: mai-image" in got.stderr
    assert emu.control.stats().submissions == 0


def test_wrong_key_is_exit_3_and_never_printed(emu: RunningEmulator) -> None:
    got = invoke("generate", "a cat", env={"PIXAZO_API_KEY": WRONG_KEY})
    assert got.code == ExitCode.CONFIG
    assert "HTTP 401" in _one_error_line(got)
    assert "PIXAZO_API_KEY" in got.stderr
    got = invoke("status", f"{RID_PREFIX}x", "--api-key", WRONG_KEY)
    assert got.code == ExitCode.CONFIG  # invoke() checked the canary key is not in the output


def test_no_balance_is_exit_3(emu: RunningEmulator) -> None:
    emu.control.set_faults(insufficient_balance_keys=(POOR_KEY,))
    got = invoke("generate", "a cat", env={"PIXAZO_API_KEY": POOR_KEY})
    assert got.code == ExitCode.CONFIG
    assert "HTTP 402" in _one_error_line(got)
    assert emu.control.stats().jobs_created == 0


def test_no_permission_is_exit_3(emu: RunningEmulator) -> None:
    emu.control.set_faults(forbidden_keys=(FORBIDDEN_KEY,))
    got = invoke("generate", "a cat", env={"PIXAZO_API_KEY": FORBIDDEN_KEY})
    assert got.code == ExitCode.CONFIG
    assert "HTTP 403" in _one_error_line(got)


@pytest.mark.parametrize("blank", [None, "", "   "])
def test_no_key_explains_both_ways_out(blank: str | None) -> None:
    got = invoke("generate", "a cat", env={"PIXAZO_API_KEY": blank})
    assert got.code == ExitCode.CONFIG
    line = _one_error_line(got)
    assert "Set PIXAZO_API_KEY" in line
    assert "add --emulator" in line


def test_bad_base_url_is_exit_3() -> None:
    env = {"PIXAZO_API_KEY": KEY}
    got = invoke("status", f"{RID_PREFIX}x", "--base-url", "ftp://gateway", env=env)
    assert got.code == ExitCode.CONFIG
    assert "base_url must be an http(s) URL" in _one_error_line(got)


def test_gateway_error_is_exit_6(emu: RunningEmulator) -> None:
    emu.control.set_faults(submit_error_rate=1.0)
    got = invoke("generate", "a cat")
    assert got.code == ExitCode.GATEWAY
    assert "HTTP 500" in _one_error_line(got)
    assert emu.control.stats().submissions == 1  # a submit answered 500 is never retried


def test_unreachable_gateway_is_exit_6(fake: FakeSetup) -> None:
    fake.gateway.submits = [httpx.ConnectError("connection refused")]
    got = invoke("generate", "a cat", obj=fake.state)
    assert got.code == ExitCode.GATEWAY
    assert "ConnectError" in _one_error_line(got)


def test_timeout_is_exit_5_and_prints_the_resume_command(slow: RunningEmulator) -> None:
    got = invoke("generate", "slow", "--timeout", "0.3")
    assert got.code == ExitCode.TIMEOUT
    line = _one_error_line(got)
    match = re.search(rf"Resume with: mai-image wait ({RID_PREFIX}\S+)$", line)
    assert match, line
    # The time actually waited: 0.3 s and whatever the last read took on a busy machine.
    assert re.search(r"timed out after \d+(\.\d)?s waiting for job", line), line
    assert slow.control.job(match.group(1)) is not None  # the id is the real job


def test_save_failure_is_exit_7_and_says_not_to_resubmit(
    emu: RunningEmulator, tmp_path: Path
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    got = invoke("generate", "a cat", "-o", str(blocker / "sub"))
    assert got.code == ExitCode.SAVE_FAILED
    line = _one_error_line(got)
    assert "Cannot create directory" in line
    assert re.search(rf"save it again with: mai-image wait {RID_PREFIX}\S+$", line)


def test_an_empty_image_url_is_exit_7_and_says_what_happened(
    fake: FakeSetup, tmp_path: Path
) -> None:
    served = status_body("COMPLETED")  # the URL the fake CDN serves, then an empty one
    served["output"]["media_url"].append("")
    fake.gateway.polls = [httpx.Response(200, json=served)]
    got = invoke("generate", "a cat", "-o", str(tmp_path), obj=fake.state)
    assert got.code == ExitCode.SAVE_FAILED
    line = _one_error_line(got)
    assert f"job {RID} finished" in line
    assert f"image 2 of {RID} cannot be fetched: the gateway sent an empty URL" in line
    assert "mai-image wait" not in line  # waiting again cannot fetch it
    assert len(list(tmp_path.iterdir())) == 1  # the good image is saved


def test_a_full_disk_while_saving_is_exit_7_too(
    emu: RunningEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(os, "fdopen", FullDisk)
    got = invoke("generate", "a cat", "-o", str(tmp_path))
    assert got.code == ExitCode.SAVE_FAILED
    line = _one_error_line(got)
    assert "File too large" in line
    assert re.search(rf"save it again with: mai-image wait {RID_PREFIX}\S+$", line)


def test_internal_error_is_exit_1_without_traceback_or_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIXAZO_API_KEY", KEY)

    def explode(request: httpx.Request) -> httpx.Response:
        raise RuntimeError(f"unexpected {request.headers.get('X-API-Key', KEY)}")

    setup = fake_setup(Gateway(), explode)
    try:
        got = invoke("generate", "a cat", obj=setup.state)
    finally:
        setup.http.close()
    assert got.code == ExitCode.INTERNAL
    line = _one_error_line(got)
    assert "internal error (RuntimeError: unexpected ***)" in line


def test_the_session_scrubs_the_key_with_the_library_secret() -> None:
    session = Session(secret=Secret(KEY))
    assert session.scrub(f"refused {KEY}, twice: {KEY}") == "refused ***, twice: ***"
    assert KEY not in repr(session)  # the session holds the Secret, whose repr hides the key
    assert Session().scrub(f"no key known: {KEY}") == f"no key known: {KEY}"


def test_ctrl_c_while_waiting_prints_the_resume_command(
    emu: RunningEmulator, fake_clock_interrupting: CliState
) -> None:
    got = invoke("generate", "to be interrupted", obj=fake_clock_interrupting)
    assert got.code == 130
    line = _one_error_line(got)
    match = re.search(
        rf"job ({RID_PREFIX}\S+) keeps running.*Resume with: mai-image wait \1$", line
    )
    assert match, line
    # The job really is still there, and the printed command finishes it.
    resumed = invoke("wait", match.group(1), "--no-save", "-q")
    assert resumed.code == 0
    assert resumed.stdout.startswith(f"request_id: {match.group(1)}")


def test_ctrl_c_with_the_in_process_emulator_says_the_job_is_gone(
    fake_clock_interrupting: CliState,
) -> None:
    got = invoke("generate", "to be interrupted", "--emulator", obj=fake_clock_interrupting)
    assert got.code == ExitCode.INTERRUPTED
    assert "stopped with this command" in _one_error_line(got)
    assert "mai-image wait" not in got.stderr


def test_ctrl_c_while_submitting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIXAZO_API_KEY", KEY)

    def interrupt(request: httpx.Request) -> httpx.Response:
        raise KeyboardInterrupt

    setup = fake_setup(Gateway(), interrupt)
    try:
        got = invoke("generate", "a cat", obj=setup.state)
    finally:
        setup.http.close()
    assert got.code == ExitCode.INTERRUPTED
    assert "interrupted while submitting" in _one_error_line(got)


def test_ctrl_c_while_saving(fake: FakeSetup) -> None:
    fake.gateway.polls = [ok("COMPLETED")]
    inner = fake.gateway.handler

    def interrupt_downloads(request: httpx.Request) -> httpx.Response:
        if request.url.host == "cdn.example.com":
            raise KeyboardInterrupt
        return inner(request)

    setup = fake_setup(fake.gateway, interrupt_downloads)
    try:
        got = invoke("generate", "a cat", "-o", "out", obj=setup.state)
    finally:
        setup.http.close()
    assert got.code == ExitCode.INTERRUPTED
    assert _one_error_line(got).endswith(
        f"interrupted while saving; job {RID} finished. Save it again with: mai-image wait {RID}"
    )


class _InterruptingClock:
    """The real clock, except that the first sleep between polls is a Ctrl-C."""

    def monotonic(self) -> float:
        import time

        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        raise KeyboardInterrupt

    async def asleep(self, seconds: float) -> None:  # pragma: no cover - sync client only
        raise KeyboardInterrupt


@pytest.fixture
def fake_clock_interrupting() -> CliState:
    def factory(**kwargs: Any) -> MAIImageClient:
        return MAIImageClient(clock=_InterruptingClock(), **kwargs)

    return CliState(client_factory=factory)


def test_help_documents_every_exit_code() -> None:
    got = invoke("--help")
    assert got.code == 0
    documented = {int(n) for n in re.findall(r"^ +(\d+) {2,}\w", got.stdout, re.M)}
    assert documented == {int(code) for code in ExitCode}
    for command in ("generate", "edit", "status", "wait"):
        text = " ".join(invoke(command, "--help").stdout.split())
        for code in ExitCode:
            if code not in (ExitCode.OK, ExitCode.INTERNAL):
                assert re.search(rf"\b{int(code)} [a-zA-Z]", text), (command, code)


def test_a_throttled_status_read_gives_the_time_waited_and_no_retry_advice(
    fake: FakeSetup,
) -> None:
    # The job runs: the gateway's 429 on a status read is what it answered, not a reason to
    # "retry later" (a new submit would pay twice); and the wait ended long before 300 s.
    fake.gateway.polls = [httpx.Response(429, headers={"Retry-After": "3600"})]
    got = invoke("generate", "a cat", "--timeout", "300", obj=fake.state)
    assert got.code == ExitCode.TIMEOUT
    line = _one_error_line(got)
    assert "Slow down" not in line
    assert "retry later" not in line.lower()
    assert "HTTP 429" in line
    assert "after 300s" not in line
    assert re.search(r"timed out after \d+(\.\d)?s of the 300s allowed", line), line
    assert f"Resume with: mai-image wait {RID}" in line
