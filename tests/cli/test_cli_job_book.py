"""mai-image and the job book: ``jobs list|show|wait|export``, ``--idempotency-key`` on
generate/edit, ``--job-book`` and ``MAI_JOB_BOOK``."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from mai_tools.cli import ExitCode
from mai_tools.cli._jobs import CSV_FIELDS
from mai_tools.emulator import RunningEmulator
from mai_tools.jobbook import JobRecord, forget_open_books, open_job_book
from mai_tools.jobbook._record import new_id
from tests.cli.cli_support import RID_PREFIX, check_hygiene, console_script, invoke


def _generate(prompt: str, *args: str) -> dict[str, object]:
    got = invoke("generate", prompt, "-q", "--json", *args)
    assert got.code == 0, got.stderr
    data: dict[str, object] = json.loads(got.stdout)
    return data


def _listed(*args: str) -> list[dict[str, object]]:
    got = invoke("jobs", "list", "--json", *args)
    assert got.code == 0, got.stderr
    return [json.loads(line) for line in got.stdout.splitlines()]


def _add(book_path: str, created: float, **columns: object) -> None:
    """A row written straight into the book (a job of another surface, or of long ago)."""
    book = open_job_book(book_path)
    assert book is not None
    record = JobRecord(
        id=new_id(),
        principal="local",
        surface=str(columns.pop("surface", "client")),
        operation="generate",
        fingerprint=new_id(),
        fields={"prompt": "old"},
        prompt=str(columns.pop("prompt", "an old job")),
    )
    book.claim(record)
    for name, value in {"created": created, **columns}.items():  # names: this test's own
        book._execute(f"UPDATE mai_jobs SET {name} = ? WHERE id = ?", (value, record.id))  # noqa: S608


def test_cli_jobs_are_in_the_book_and_listed_newest_first(
    emu: RunningEmulator, tmp_path: Path
) -> None:
    first = _generate("the first lighthouse", "-o", str(tmp_path))
    second = _generate("the second lighthouse", "--no-save")
    listed = _listed()
    assert [job["request_id"] for job in listed] == [second["request_id"], first["request_id"]]
    newest, oldest = listed
    assert newest["surface"] == "cli"
    assert (newest["state"], newest["status"]) == ("finished", "COMPLETED")
    assert oldest["prompt"] == "the first lighthouse"
    assert oldest["paths"] == first["saved_paths"]
    assert oldest["image_urls"]
    assert str(oldest["request_id"]).startswith(RID_PREFIX)
    table = invoke("jobs", "list")
    assert table.code == 0
    header, *rows = table.stdout.splitlines()
    assert header.split() == ["CREATED", "(UTC)", "SURFACE", "STATUS", "REQUEST", "ID", "PROMPT"]
    assert len(rows) == 2
    assert f"cli      COMPLETED  {second['request_id']}  the second lighthouse" in rows[0]


def test_list_filters(emu: RunningEmulator) -> None:
    book = os.environ["MAI_JOB_BOOK"]
    _generate("made just now", "--no-save")
    _add(book, 1_000_000.0, surface="batch", prompt="from 1970", status="FAILED", state="finished")
    assert [j["prompt"] for j in _listed("--surface", "batch")] == ["from 1970"]
    assert [j["prompt"] for j in _listed("--status", "failed")] == ["from 1970"]
    assert [j["prompt"] for j in _listed("--since", "2h")] == ["made just now"]
    assert [j["prompt"] for j in _listed("--since", "1970-02-01")] == ["made just now"]
    assert [j["prompt"] for j in _listed("--since", "1970-01-12T13:46:40+00:00")] == [
        "made just now",
        "from 1970",
    ]
    assert [j["prompt"] for j in _listed("--state", "finished", "--limit", "1")] == [
        "made just now"
    ]
    assert _listed("--surface", "mcp") == []
    none = invoke("jobs", "list", "--surface", "mcp")
    assert (none.code, none.stdout) == (0, "")
    assert "no jobs in the job book match" in none.stderr
    bad = invoke("jobs", "list", "--since", "yesterday")
    assert bad.code == ExitCode.USAGE
    assert "neither an age (30m, 2h, 3d, 1w) nor an ISO date" in bad.stderr


def test_show_one_job_and_an_unknown_request_id(emu: RunningEmulator, tmp_path: Path) -> None:
    made = _generate("show me", "-o", str(tmp_path), "--idempotency-key", "show-1")
    rid = str(made["request_id"])
    got = invoke("jobs", "show", rid)
    assert got.code == 0, got.stderr
    lines = got.stdout.splitlines()
    assert lines[:5] == [
        f"request_id: {rid}",
        "state: finished",
        "status: COMPLETED",
        "operation: generate",
        "surface: cli",
    ]
    assert "idempotency_key: show-1" in lines
    assert re.search(r"^created: \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC$", got.stdout, re.M)
    assert f"saved: {made['saved_paths'][0]}" in lines  # type: ignore[index]
    data = json.loads(invoke("jobs", "show", rid, "--json").stdout)
    assert data["request_id"] == rid
    assert data["request"]["prompt"] == "show me"
    missing = invoke("jobs", "show", RID_PREFIX + "not-in-the-book")
    assert missing.code == ExitCode.USAGE
    assert missing.stdout == ""
    (line,) = missing.error_lines
    assert f"No job with request id '{RID_PREFIX}not-in-the-book' in the job book at " in line


def test_wait_saves_a_job_of_the_book_and_records_the_paths(
    emu: RunningEmulator, tmp_path: Path
) -> None:
    made = _generate("wait for me later", "--no-save")
    rid = str(made["request_id"])
    got = invoke("jobs", "wait", rid, "-o", str(tmp_path), "--json", "-q")
    assert got.code == 0, got.stderr
    (path,) = json.loads(got.stdout)["saved_paths"]
    assert Path(path).is_file()
    (job,) = _listed()
    assert job["paths"] == [path]
    assert emu.control.stats().jobs_created == 1
    missing = invoke("jobs", "wait", RID_PREFIX + "nope", "-q")
    assert missing.code == ExitCode.USAGE
    assert "No job with request id" in missing.stderr


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_export(emu: RunningEmulator, tmp_path: Path, fmt: str) -> None:
    _generate("exported one", "--no-save")
    _generate("exported two", "--no-save")
    to_stdout = invoke("jobs", "export", "--format", fmt)
    assert to_stdout.code == 0, to_stdout.stderr
    target = tmp_path / f"jobs.{fmt}"
    to_file = invoke("jobs", "export", "--format", fmt, "--output", str(target))
    assert to_file.code == 0
    assert "2 job(s) written to" in to_file.stderr
    assert target.read_text(encoding="utf-8") == to_stdout.stdout
    if fmt == "jsonl":
        rows = [json.loads(line) for line in to_stdout.stdout.splitlines()]
        assert [r["prompt"] for r in rows] == ["exported two", "exported one"]
        assert tuple(rows[0]) == CSV_FIELDS
    else:
        rows = list(csv.DictReader(io.StringIO(to_stdout.stdout)))
        assert [r["prompt"] for r in rows] == ["exported two", "exported one"]
        assert tuple(rows[0]) == CSV_FIELDS
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", rows[0]["created"])
        assert json.loads(rows[0]["request"])["prompt"] == "exported two"


def test_the_export_columns_are_the_records_fields() -> None:
    record = JobRecord(
        id="x", principal="p", surface="cli", operation="generate", fingerprint="f", fields={},
        prompt=None,
    )  # fmt: skip
    assert tuple(record.to_dict()) == CSV_FIELDS


def test_the_same_idempotency_key_continues_the_same_job(emu: RunningEmulator) -> None:
    first = _generate("keyed lighthouse", "--no-save", "--idempotency-key", "step-7")
    again = _generate("keyed lighthouse", "--no-save", "--idempotency-key", "step-7")
    assert again["request_id"] == first["request_id"]
    assert emu.control.stats().jobs_created == 1
    (job,) = _listed()
    assert job["idempotency_key"] == "step-7"


def test_an_idempotency_key_reused_with_other_arguments_is_refused(
    emu: RunningEmulator,
) -> None:
    _generate("keyed lighthouse", "--no-save", "--idempotency-key", "step-8")
    got = invoke("generate", "another prompt", "--no-save", "--idempotency-key", "step-8")
    assert got.code == ExitCode.USAGE
    (line,) = got.error_lines
    assert "idempotency_key 'step-8' was used at " in line
    assert "prompt was 'keyed lighthouse' there and is 'another prompt' here" in line
    assert "Nothing was sent." in line
    assert emu.control.stats().jobs_created == 1


def test_a_key_whose_earlier_submit_may_have_arrived_exits_8(emu: RunningEmulator) -> None:
    # An earlier process wrote the intent and stopped before the request id was recorded.
    book = open_job_book(os.environ["MAI_JOB_BOOK"])
    assert book is not None
    first = invoke("generate", "lost answer", "--no-save", "-q", "--idempotency-key", "lost")
    assert first.code == 0
    book._execute("UPDATE mai_jobs SET state = 'unknown', request_id = NULL")
    got = invoke("generate", "lost answer", "--no-save", "--idempotency-key", "lost")
    assert got.code == ExitCode.JOB_UNKNOWN
    assert int(ExitCode.JOB_UNKNOWN) == 8
    (line,) = got.error_lines
    assert "idempotency key 'lost' may have been created at " in line
    assert "give --idempotency-key a new value" in line
    assert emu.control.stats().jobs_created == 1


def test_edit_jobs_are_cli_jobs_with_a_key(emu: RunningEmulator, tmp_path: Path) -> None:
    from PIL import Image

    source = tmp_path / "in.png"
    Image.new("RGB", (8, 8), "red").save(source)
    args = ("edit", str(source), "make it blue", "--no-save", "-q", "--idempotency-key", "e1")
    got = invoke(*args)
    assert got.code == 0, got.stderr
    again = invoke(*args)
    assert again.code == 0
    assert emu.control.stats().jobs_created == 1
    (job,) = _listed()
    assert (job["surface"], job["operation"], job["idempotency_key"]) == ("cli", "edit", "e1")


def test_job_book_option_and_off(emu: RunningEmulator, tmp_path: Path) -> None:
    other = tmp_path / "other.sqlite3"
    _generate("into the other book", "--no-save", "--job-book", str(other))
    assert _listed() == []
    (job,) = _listed("--job-book", str(other))
    assert job["prompt"] == "into the other book"
    off = invoke("jobs", "list", "--job-book", "off")
    assert off.code == ExitCode.CONFIG
    assert "The job book is off (--job-book=off)" in off.stderr
    env_off = invoke("jobs", "show", "x", env={"MAI_JOB_BOOK": "off"})
    assert env_off.code == ExitCode.CONFIG
    assert "(MAI_JOB_BOOK=off)" in env_off.stderr
    # With the book off, generate still works; a key is refused (it could not be remembered).
    plain = invoke("generate", "no book at all", "--no-save", "-q", "--job-book", "off")
    assert plain.code == 0
    keyed = invoke(
        "generate", "no book", "--no-save", "--job-book", "off", "--idempotency-key", "k"
    )
    assert keyed.code == ExitCode.USAGE
    assert "idempotency_key= needs a job book" in keyed.stderr


def test_a_bad_job_book_is_a_configuration_error(emu: RunningEmulator, tmp_path: Path) -> None:
    not_a_book = tmp_path / "notes.txt"
    not_a_book.write_text("these are my notes, not a database\n" * 100)
    for args in (
        ("jobs", "list", "--job-book", str(not_a_book)),
        ("generate", "a prompt", "--no-save", "--job-book", str(not_a_book)),
        ("jobs", "list", "--job-book", "mysql://host/db"),
    ):
        got = invoke(*args)
        assert got.code == ExitCode.CONFIG, args
        (line,) = got.error_lines
        assert "job book" in line
    assert emu.control.stats().submissions == 0


def test_env_names_the_book(emu: RunningEmulator, tmp_path: Path) -> None:
    book = tmp_path / "env-book.sqlite3"
    got = invoke("generate", "env book", "--no-save", "-q", env={"MAI_JOB_BOOK": str(book)})
    assert got.code == 0
    forget_open_books()
    (job,) = _listed("--job-book", str(book))
    assert job["prompt"] == "env book"


def test_jobs_in_real_processes(emu: RunningEmulator, tmp_path: Path) -> None:
    """The console script: a generate in one process is listed and shown by the next ones."""
    env = {**os.environ, "PIXAZO_API_KEY": os.environ["PIXAZO_API_KEY"]}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [console_script(), *args],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        check_hygiene(proc.stdout, proc.stderr)
        return proc

    made = run("generate", "a process lighthouse", "-q", "--json", "--idempotency-key", "p1")
    assert made.returncode == 0, made.stderr
    rid = json.loads(made.stdout)["request_id"]
    listed = run("jobs", "list", "--json")
    assert [json.loads(x)["request_id"] for x in listed.stdout.splitlines()] == [rid]
    shown = run("jobs", "show", rid)
    assert shown.returncode == 0
    assert f"request_id: {rid}" in shown.stdout
    missing = run("jobs", "show", "nope")
    assert missing.returncode == ExitCode.USAGE
    assert missing.stderr.startswith("error: No job with request id 'nope'")


def test_a_job_without_a_request_id_is_shown_by_its_book_id(emu: RunningEmulator) -> None:
    book_path = os.environ["MAI_JOB_BOOK"]
    _add(book_path, 2_000_000_000.0, prompt="answer lost", state="unknown", error="lost")
    (job,) = _listed()
    assert (job["request_id"], job["state"]) == (None, "unknown")
    table = invoke("jobs", "list", "--state", "unknown")
    assert re.search(r"  unknown  +-  +answer lost$", table.stdout, re.M)
    shown = invoke("jobs", "show", str(job["id"]))
    assert shown.code == 0
    assert "state: unknown" in shown.stdout
    waited = invoke("jobs", "wait", str(job["id"]), "-q")
    assert waited.code == ExitCode.JOB_UNKNOWN
    assert "has no request id (state unknown)" in waited.stderr
    assert "--idempotency-key" not in waited.stderr
    assert emu.control.stats().submissions == 0
