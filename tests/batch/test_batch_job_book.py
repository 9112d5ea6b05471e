"""Batch runs and the job book: every job a run submits is in the book (surface "batch"),
with its outcome and saved paths; the journal stays the run's own resumable state."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mai_tools._exceptions import JobBookError
from mai_tools.emulator import RunningEmulator
from mai_tools.jobbook import SQLiteJobBook, open_job_book
from tests.batch.conftest import run_all
from tests.cli.cli_support import invoke
from tests.support.fakes import KEY


async def test_every_submitted_job_is_in_the_book_with_its_paths(
    emu: RunningEmulator, tmp_path: Path
) -> None:
    book = SQLiteJobBook(tmp_path / "book.sqlite3")
    prompts = [f"a batch lighthouse {i}" for i in range(5)]
    outcomes, summary = await run_all(
        emu, [*prompts, "no"], tmp_path / "out", client_options={"job_book": book}
    )
    assert summary.counts == {"COMPLETED": 5, "INVALID": 1}
    records = book.list(limit=None)
    assert sorted(r.prompt or "" for r in records) == sorted(prompts)  # nothing for INVALID
    by_id = {r.request_id: r for r in records}
    for outcome in outcomes:
        if outcome.request_id is None:
            continue
        record = by_id[outcome.request_id]
        assert (record.surface, record.state, record.status) == ("batch", "finished", "COMPLETED")
        assert record.image_urls == list(outcome.image_urls)
        assert record.paths == [str(p) for p in outcome.paths]
    book.close()


async def test_a_rerun_adds_no_job_to_the_book(emu: RunningEmulator, tmp_path: Path) -> None:
    book = SQLiteJobBook(tmp_path / "book.sqlite3")
    items = ["first of two", "second of two"]
    await run_all(emu, items, tmp_path / "out", client_options={"job_book": book})
    await run_all(emu, items, tmp_path / "out", client_options={"job_book": book})
    assert len(book.list(limit=None)) == 2
    assert emu.control.stats().jobs_created == 2
    book.close()


def test_batch_command_job_book_option(emu: RunningEmulator, tmp_path: Path) -> None:
    source = tmp_path / "p.txt"
    source.write_text("one batch prompt\ntwo batch prompt\n")
    book_path = tmp_path / "chosen.sqlite3"
    env = {"PIXAZO_API_KEY": KEY, "PIXAZO_BASE_URL": emu.base_url}
    got = invoke(
        "batch", str(source), "--out", str(tmp_path / "out"), "--job-book", str(book_path),
        "--json", "-q", env=env,
    )  # fmt: skip
    assert got.code == 0, got.stderr
    assert "--job-book" in json.loads(got.stdout)["resume_command"]
    listed = invoke("jobs", "list", "--json", "--surface", "batch", "--job-book", str(book_path))
    jobs = [json.loads(line) for line in listed.stdout.splitlines()]
    assert sorted(j["prompt"] for j in jobs) == ["one batch prompt", "two batch prompt"]
    assert all(len(j["paths"]) == 1 for j in jobs)
    # The default book (MAI_JOB_BOOK of the test) got none of them.
    default = open_job_book()
    assert default is not None
    assert default.list() == []


def test_batch_with_a_bad_job_book_is_a_configuration_error(
    emu: RunningEmulator, tmp_path: Path
) -> None:
    source = tmp_path / "p.txt"
    source.write_text("one batch prompt\n")
    not_a_book = tmp_path / "junk.sqlite3"
    not_a_book.write_bytes(b"not a database at all" * 200)
    env = {"PIXAZO_API_KEY": KEY, "PIXAZO_BASE_URL": emu.base_url}
    got = invoke(
        "batch", str(source), "--out", str(tmp_path / "out"), "--job-book", str(not_a_book),
        env=env,
    )  # fmt: skip
    assert got.code == 3
    (line,) = got.error_lines
    assert f"The job book at {not_a_book} cannot be opened" in line
    assert emu.control.stats().submissions == 0


class _FillsUp(SQLiteJobBook):
    """A book that takes ``room`` new jobs, then refuses to write one (a full disk)."""

    room = 2

    def _execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        if sql.startswith("INSERT INTO mai_jobs "):
            if self.room == 0:
                raise JobBookError(f"The job book at {self.path} failed: database or disk is full.")
            self.room -= 1
        return super()._execute(sql, params)


async def test_a_book_that_fails_stops_submitting_and_sends_nothing_more(
    emu: RunningEmulator, tmp_path: Path
) -> None:
    book = _FillsUp(tmp_path / "book.sqlite3")
    items = [f"prompt number {i}" for i in range(6)]
    _, summary = await run_all(
        emu, items, tmp_path / "out", client_options={"job_book": book}, concurrency=1
    )
    assert emu.control.stats().submissions == 2  # nothing sent without its intent
    assert summary.fatal
    assert summary.counts == {"COMPLETED": 2, "QUEUED": 4}
    assert summary.not_submitted == 4
    assert summary.hold_reason is not None
    assert "database or disk is full" in summary.hold_reason
    assert len(book.list(limit=None)) == 2
    book.room = 10  # the disk has room again: the rerun submits the rest, none twice
    _, again = await run_all(
        emu, items, tmp_path / "out", client_options={"job_book": book}, concurrency=1
    )
    assert again.counts == {"COMPLETED": 6}
    assert emu.control.stats().submissions == 6
    book.close()
