"""``mai-image jobs list|export --principal NAME``: one principal's jobs of a book a team
server writes into; every row carries its principal, and the table shows a PRINCIPAL column
once someone other than the local user is listed."""

from __future__ import annotations

import csv
import io
import json

import pytest

from mai_tools.jobbook import JobRecord, open_job_book
from mai_tools.jobbook._record import new_id
from tests.cli.cli_support import invoke


def _add(principal: str, prompt: str) -> None:
    book = open_job_book()  # the test's own book (the suite sets MAI_JOB_BOOK)
    assert book is not None
    record = JobRecord(
        id=new_id(),
        principal=principal,
        surface="mcp",
        operation="generate",
        fingerprint=new_id(),
        fields={"prompt": prompt},
        prompt=prompt,
    )
    assert book.claim(record).created
    book.submitted(record.id, f"rid-{prompt}", None, "QUEUED")


@pytest.fixture
def team_book() -> None:
    _add("alice", "alice-one")
    _add("bob", "bob-one")
    _add("alice", "alice-two")


@pytest.mark.usefixtures("team_book")
def test_list_and_export_one_principal() -> None:
    listed = invoke("jobs", "list", "--json", "--principal", "alice")
    assert listed.code == 0, listed.stderr
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    assert [(r["principal"], r["prompt"]) for r in rows] == [
        ("alice", "alice-two"),
        ("alice", "alice-one"),
    ]
    jsonl = invoke("jobs", "export", "--principal", "bob")
    assert [json.loads(line)["prompt"] for line in jsonl.stdout.splitlines()] == ["bob-one"]
    every = invoke("jobs", "export", "--format", "csv")
    table = list(csv.DictReader(io.StringIO(every.stdout)))
    assert [(r["principal"], r["prompt"]) for r in table] == [
        ("alice", "alice-two"),
        ("bob", "bob-one"),
        ("alice", "alice-one"),
    ]
    nobody = invoke("jobs", "list", "--principal", "carol")
    assert nobody.code == 0
    assert nobody.stderr.strip() == "no jobs in the job book match"


@pytest.mark.usefixtures("team_book")
def test_the_table_names_principals_when_not_only_local() -> None:
    got = invoke("jobs", "list")
    header, *rows = got.stdout.splitlines()
    assert header.split()[:4] == ["CREATED", "(UTC)", "PRINCIPAL", "SURFACE"]
    assert [row.split()[2] for row in rows] == ["alice", "bob", "alice"]


def test_a_local_book_s_table_is_unchanged() -> None:
    _add("local", "mine")
    header = invoke("jobs", "list").stdout.splitlines()[0]
    assert "PRINCIPAL" not in header
