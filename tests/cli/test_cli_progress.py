"""Progress display: one plain line per status change off a terminal, a live line on one."""

from __future__ import annotations

import io
import re

import pytest
from rich.console import Console

from mai_tools import JobStatus, Status
from mai_tools.cli._errors import Phase, Session
from mai_tools.cli._output import Reporter
from tests.cli.cli_support import FakeSetup, invoke
from tests.support.fakes import RID, ok


def _status(status: str) -> JobStatus:
    return JobStatus.from_body({"request_id": RID, "status": status})


def test_repeated_statuses_print_once(fake: FakeSetup) -> None:
    fake.gateway.polls = [ok("QUEUED"), ok("PROCESSING"), ok("PROCESSING"), ok("PROCESSING")]
    fake.gateway.polls.append(ok("COMPLETED"))
    got = invoke("generate", "scripted", "-o", "out", obj=fake.state)
    assert got.code == 0, got.stderr
    assert len([r for r in fake.gateway.gets if r.url.host == "gateway.pixazo.ai"]) == 5
    seen = [re.fullmatch(rf"{RID}: (\w+) \(\d+\.\d+s\)", line) for line in got.stderr.splitlines()]
    assert [m.group(1) for m in seen if m] == ["QUEUED", "PROCESSING", "COMPLETED"]
    assert len(seen) == 3


def test_unknown_status_is_shown_raw_and_waited_out(fake: FakeSetup) -> None:
    fake.gateway.polls = [ok("WARMING_UP"), ok("COMPLETED")]
    got = invoke("generate", "scripted", "--no-save", obj=fake.state)
    assert got.code == 0, got.stderr
    assert f"{RID}: WARMING_UP (unknown status)" in got.stderr


def _terminal() -> tuple[Console, io.StringIO]:
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=True, width=100, color_system=None)
    return console, buffer


def test_live_display_on_a_terminal() -> None:
    console, buffer = _terminal()
    session = Session()
    with Reporter(session, label="generate", quiet=False, console=console) as reporter:
        assert reporter.live
        reporter(_status("QUEUED"), 0.0)
        assert session.request_id == RID
        assert session.phase is Phase.WAITING
        reporter(_status("COMPLETED"), 2.5)
    text = buffer.getvalue()
    assert "SUBMITTING" in text
    assert re.search(rf"0:00:0\d COMPLETED\s+generate {RID}", text)
    assert not reporter.live  # stopped: later output is not redrawn over


def test_live_line_is_cut_not_wrapped_on_a_narrow_terminal() -> None:
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=True, width=60, color_system=None)
    with Reporter(Session(), label="edit", quiet=False, console=console) as reporter:
        reporter(_status("PROCESSING"), 1.0)
    last = buffer.getvalue().split("\r")[-1]
    assert "PROCESSING edit microsoft-mai" in last
    assert "…\n" in last  # one line, ending in an ellipsis
    assert RID not in last


def test_not_a_terminal_prints_plain_lines(capsys: pytest.CaptureFixture[str]) -> None:
    console = Console(file=io.StringIO(), force_terminal=False)
    with Reporter(Session(), label="wait", quiet=False, console=console) as reporter:
        assert not reporter.live
        reporter(_status("PROCESSING"), 1.25)
    assert capsys.readouterr().err == f"{RID}: PROCESSING (1.2s)\n"


def test_quiet_shows_nothing_but_still_tracks_the_job(capsys: pytest.CaptureFixture[str]) -> None:
    console, buffer = _terminal()
    session = Session()
    with Reporter(session, label="wait", quiet=True, console=console) as reporter:
        reporter(_status(Status.PROCESSING.value), 1.0)
    assert buffer.getvalue() == ""
    assert capsys.readouterr().err == ""
    assert session.request_id == RID
