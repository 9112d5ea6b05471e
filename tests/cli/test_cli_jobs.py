"""mai-image status and wait: jobs by request id, and resuming after a timeout."""

from __future__ import annotations

import json
import re
from pathlib import Path

from PIL import Image

from mai_tools.cli import ExitCode
from mai_tools.emulator import RunningEmulator
from tests.cli.cli_support import RID_PREFIX, invoke


def _submit(prompt: str = "for later") -> str:
    got = invoke("generate", prompt, "--no-save", "-q", "--json")
    assert got.code == 0, got.stderr
    rid: str = json.loads(got.stdout)["request_id"]
    return rid


def test_status_of_a_finished_job(emu: RunningEmulator) -> None:
    rid = _submit()
    got = invoke("status", rid)
    assert got.code == 0
    lines = got.stdout.splitlines()
    assert lines[:2] == [f"request_id: {rid}", "status: COMPLETED"]
    assert re.fullmatch(r"image 1: http://\S+", lines[2])
    assert got.stderr == ""
    data = json.loads(invoke("status", rid, "--json").stdout)
    assert data["request_id"] == rid
    assert data["status"] == "COMPLETED"
    assert len(data["output"]["media_url"]) == 1


def test_status_of_a_running_job_does_not_wait(slow: RunningEmulator) -> None:
    got = invoke("generate", "takes a minute", "--timeout", "0.2", "-q")
    assert got.code == ExitCode.TIMEOUT
    (rid,) = re.findall(rf"mai-image wait ({RID_PREFIX}\S+)", got.stderr)
    status = invoke("status", rid)
    assert status.code == 0
    assert re.search(r"^status: (QUEUED|PROCESSING)$", status.stdout, re.M)


def test_wait_resumes_a_timed_out_job_and_saves_it(emu: RunningEmulator, tmp_path: Path) -> None:
    got = invoke("generate", "quick but not that quick", "--timeout", "0.1")
    assert got.code == ExitCode.TIMEOUT, got.stderr
    (command,) = re.findall(r"Resume with: (mai-image wait \S+)$", got.stderr, re.M)
    rid = command.split()[-1]
    resumed = invoke(*command.split()[1:], "-o", str(tmp_path), "--json")
    assert resumed.code == 0, resumed.stderr
    data = json.loads(resumed.stdout)
    assert data["request_id"] == rid
    (path,) = data["saved_paths"]
    assert Path(path).name.startswith(rid)
    with Image.open(path) as image:
        assert image.format == "PNG"
    assert emu.control.stats().jobs_created == 1  # resumed, not submitted again
    assert f"{rid}: COMPLETED" in resumed.stderr


def test_wait_for_a_failed_job_is_exit_4(emu: RunningEmulator) -> None:
    got = invoke("generate", "a [fail] job", "-q")
    assert got.code == ExitCode.JOB_FAILED
    (rid,) = re.findall(rf"Job ({RID_PREFIX}\S+) ended FAILED", got.stderr)
    assert invoke("wait", rid).code == ExitCode.JOB_FAILED
    status = invoke("status", rid)
    assert status.code == 0  # status reports; it does not judge
    assert "status: FAILED" in status.stdout
    assert "error: " in status.stdout


def test_unknown_ids_on_the_in_process_emulator_explain_why() -> None:
    got = invoke("wait", f"{RID_PREFIX}from-another-run", "--emulator")
    assert got.code == ExitCode.USAGE
    (line,) = got.error_lines
    assert "HTTP 404" in line
    assert "starts empty" in line
