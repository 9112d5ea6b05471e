"""The audit log (``--audit-log``): one JSON line per change of a job's state, written through
the job book's observers by a real MCP server; appends from several processes stay whole
lines; no key, token, JWT or data URI ever lands in the file; prompts only when opted in; a
path that cannot be opened stops the server at start."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import json
import os
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx2
import pytest
from click.testing import CliRunner
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.types import CallToolResult
from PIL import Image

from mai_tools import GenerateRequest, MAIImageClient
from mai_tools._exceptions import ConfigurationError
from mai_tools.emulator import RunningEmulator
from mai_tools.jobbook import AuditLog
from mai_tools.jobbook._audit import MAX_RECORD_BYTES, prompt_sha256
from mai_tools.jobbook._record import describe
from mcp_server import Settings, SettingsError, create_server
from mcp_server.__main__ import cli
from tests.cli.cli_support import invoke
from tests.mcp.test_mcp_tasks import TasksClient, send_task_request
from tests.support.emulators import EmulatorPool
from tests.support.fakes import KEY
from tests.support.jobbook import dead_call_intent, record_of
from tests.support.team import TOKENS, team_server

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "audit-test-bearer-token-0123456789"
ALICE = {"principal": "alice", "surface": "mcp", "tool": "generate_image"}
"""Who a refused call in these tests was."""
JWT = "eyJhbGciOiJSUzI1NiIsImtpZCI6ImsxIn0.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlLWJ5dGVz"


@pytest.fixture
def emu(emulators: EmulatorPool) -> RunningEmulator:
    return emulators(api_keys=(KEY,), min_duration=0.05, max_duration=0.1)


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in [k for k in os.environ if k.startswith(("MAI_MCP_", "PIXAZO_"))]:
        monkeypatch.delenv(key)


def _settings(emu: RunningEmulator, log: Path, **kw: Any) -> Settings:
    return Settings(api_key=KEY, base_url=emu.base_url, preview="off", audit_log=log, **kw)


def _records(log: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()]


async def _calls(settings: Settings, *calls: tuple[str, dict[str, Any]]) -> list[CallToolResult]:
    async with Client(create_server(settings)) as client:
        return [await client.call_tool(name, args) for name, args in calls]


def _png_data_uri() -> str:
    out = io.BytesIO()
    Image.new("RGB", (32, 32), (200, 30, 30)).save(out, "PNG")
    return "data:image/png;base64," + base64.b64encode(out.getvalue()).decode()


# ---------------------------------------------------------------------- through the server


async def test_a_call_through_the_server_is_audited_in_order(
    emu: RunningEmulator, tmp_path: Path
) -> None:
    log = tmp_path / "audit.jsonl"
    prompt = "a lighthouse at dusk"
    (done, failed) = await _calls(
        _settings(emu, log),
        ("generate_image", {"prompt": prompt, "num_images": 2}),
        ("generate_image", {"prompt": "a [fail] lighthouse"}),
    )
    assert not done.is_error
    assert failed.is_error
    records = _records(log)
    assert [(r["event"], r["status"]) for r in records] == [
        ("intent", None),
        ("submitted", "QUEUED"),
        ("finished", "COMPLETED"),
        ("intent", None),
        ("submitted", "QUEUED"),
        ("finished", "FAILED"),
    ]
    first = records[0]
    assert first["principal"] == "local"
    assert (first["surface"], first["tool"], first["operation"]) == (
        "mcp",
        "generate_image",
        "generate",
    )
    assert [r["num_images"] for r in records] == [2, 2, 2, 1, 1, 1]
    assert first["prompt_sha256"] == hashlib.sha256(prompt.encode()).hexdigest()
    assert "prompt" not in first  # not opted in: the hash only
    assert "estimated_cost" not in first  # no price per image
    rid = records[1]["request_id"]
    assert done.structured_content is not None
    assert rid == done.structured_content["request_id"]
    assert {r["job_id"] for r in records[:3]} == {first["job_id"]}
    assert records[5]["error"]  # the gateway's reason, for the operator
    assert stat.S_IMODE(log.stat().st_mode) == 0o600
    for record in records:
        assert record["time"].endswith("Z")
        assert record["by"].endswith(f":{os.getpid()}")


async def test_a_task_s_outcome_read_again_is_audited_once(
    emu: RunningEmulator, tmp_path: Path
) -> None:
    """An MCP task (the 2026-07-28 tasks extension): tasks/get records the outcome; reading
    the finished task again changes nothing, so adds no record."""
    log = tmp_path / "audit.jsonl"
    tasks = TasksClient()
    async with Client(create_server(_settings(emu, log)), extensions=[tasks]) as client:
        result = await client.call_tool("generate_image", {"prompt": "a task"})
        (created,) = tasks.created
        for _ in range(2):
            again = await send_task_request(client.session, "tasks/get", created.task_id)
            assert again.status == "completed"
    assert not result.is_error
    records = _records(log)
    assert [(r["event"], r["status"]) for r in records] == [
        ("intent", None),
        ("submitted", "QUEUED"),
        ("finished", "COMPLETED"),
    ]
    assert records[2]["request_id"] == created.task_id


async def test_a_refused_submit_is_released(emu: RunningEmulator, tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    emu.control.set_faults(insufficient_balance_keys=(KEY,))
    (broke,) = await _calls(_settings(emu, log), ("generate_image", {"prompt": "no money"}))
    assert broke.is_error
    records = _records(log)
    # A 402 certainly created nothing: the intent is released (nothing to pay).
    assert [r["event"] for r in records] == ["intent", "released"]
    assert records[1]["job_id"] == records[0]["job_id"]


async def test_a_dead_peer_s_intent_marked_unknown_is_audited(
    emu: RunningEmulator, tmp_path: Path
) -> None:
    """Another process died while sending a submit: when this server finds its intent (an
    identical call), it marks it unknown (it may be charged), and the audit log says so, with
    the dead process's job and principal."""
    log = tmp_path / "audit.jsonl"
    args = {"prompt": "a submit that may have arrived"}
    with MAIImageClient(KEY, base_url=emu.base_url) as api:
        orphan = dead_call_intent("generate_image", args, gateway=api.base_url)
    (told,) = await _calls(_settings(emu, log), ("generate_image", args))
    assert told.is_error
    (record,) = _records(log)
    assert (record["event"], record["job_id"], record["principal"]) == (
        "unknown",
        orphan.id,
        "local",
    )
    assert record["error"] == "its process stopped"
    assert record["request_id"] is None


async def test_no_key_token_jwt_or_data_uri_reaches_the_file(
    emu: RunningEmulator, tmp_path: Path
) -> None:
    log = tmp_path / "audit.jsonl"
    image = _png_data_uri()
    # A user who pastes secrets into a prompt: the operator opted into prompt text, and still
    # the file holds none of them.
    prompt = f"make it red {TOKEN} and {JWT} and {image[:60]}"
    results = await _calls(
        _settings(emu, log, audit_prompts=True, auth_token=TOKEN),
        ("edit_image", {"prompt": prompt, "image": image}),
        ("generate_image", {"prompt": f"plain {TOKEN}"}),
    )
    assert not any(r.is_error for r in results)
    text = log.read_text(encoding="utf-8")
    encoded = image.split(",", 1)[1]
    for secret in (KEY, TOKEN, JWT, encoded, encoded[:40], "base64,"):
        assert secret not in text
    records = _records(log)
    assert [r["event"] for r in records] == ["intent", "submitted", "finished"] * 2
    assert records[0]["tool"] == "edit_image"
    assert "[redacted]" in records[0]["prompt"]
    assert records[3]["prompt"] == "plain [redacted]"


async def test_prompt_text_only_when_opted_in(emu: RunningEmulator, tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    prompt = "a quiet harbour, ünïcödé"
    await _calls(_settings(emu, log, audit_prompts=True), ("generate_image", {"prompt": prompt}))
    records = _records(log)
    assert {r["prompt"] for r in records} == {prompt}
    assert {r["prompt_sha256"] for r in records} == {hashlib.sha256(prompt.encode()).hexdigest()}


def test_a_refusal_is_recorded_at_no_cost(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    with AuditLog(log, price_per_image=Decimal("0.035"), currency="USD") as audit:
        audit.refused(
            **ALICE, num_images=4, reason="daily image limit of 20 reached; resets at 00:00 UTC"
        )
    (record,) = _records(log)
    assert record["event"] == "refused"
    assert (record["estimated_cost"], record["currency"]) == ("0", "USD")  # nothing sent
    assert record["reason"].startswith("daily image limit")
    assert record["prompt_sha256"] is None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def _mai_image_mcp(emu: RunningEmulator, where: Path, *args: str) -> Iterator[tuple[str, Path]]:
    """``mai-image-mcp --transport streamable-http ARGS`` with the test's key and token: its
    URL, and a file its stderr goes to."""
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIXAZO_", "MAI_MCP_"))}
    env.update(
        PIXAZO_API_KEY=KEY,
        PIXAZO_BASE_URL=emu.base_url,
        MAI_MCP_AUTH_TOKEN=TOKEN,
        MAI_MCP_PREVIEW="off",
    )
    command = [sys.executable, "-m", "mcp_server", "--transport", "streamable-http"]
    err = where / "stderr.txt"
    with err.open("wb") as stderr:
        proc = subprocess.Popen(
            [*command, "--port", str(port), *args],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    try:
        while True:  # until it listens (or has exited: then say why)
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert proc.poll() is None, err.read_text()
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}/mcp", err
    finally:
        proc.terminate()
        proc.wait(timeout=30)


async def test_an_http_server_audits_its_callers_and_never_their_token(
    emu: RunningEmulator, tmp_path: Path
) -> None:
    log = tmp_path / "audit.jsonl"
    with _mai_image_mcp(emu, tmp_path, "--audit-log", str(log), "--audit-prompts") as (url, err):
        async with httpx2.AsyncClient(timeout=30) as stranger:
            refused = await stranger.post(url, json={"jsonrpc": "2.0", "id": 1, "method": "ping"})
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with (
            httpx2.AsyncClient(headers=headers, timeout=30) as http,
            Client(streamable_http_client(url, http_client=http)) as client,
        ):
            result = await client.call_tool("generate_image", {"prompt": "a shared cat"})
    assert refused.status_code == 401
    assert not result.is_error
    assert f"audit log: {log}" in err.read_text()
    records = _records(log)
    assert [r["event"] for r in records] == ["intent", "submitted", "finished"]
    assert {r["prompt"] for r in records} == {"a shared cat"}
    text = log.read_text()
    assert KEY not in text
    assert TOKEN not in text
    assert not any(r["by"].endswith(f":{os.getpid()}") for r in records)  # the server wrote them


async def test_two_principals_are_audited_apart_and_exported_apart(
    emu: RunningEmulator, tmp_path: Path
) -> None:
    """Alice and Bob call one HTTP server with their own tokens: each record names its caller,
    no token is in the file, and ``mai-image jobs export --principal`` gives each their own."""
    log = tmp_path / "audit.jsonl"
    with team_server(emu, audit_log=log) as url:
        for name in ("alice", "bob"):
            headers = {"Authorization": f"Bearer {TOKENS[name]}"}
            async with (
                httpx2.AsyncClient(headers=headers, timeout=30) as http,
                Client(streamable_http_client(url, http_client=http)) as client,
            ):
                done = await client.call_tool("generate_image", {"prompt": f"{name}'s cat"})
                assert not done.is_error
    records = _records(log)
    assert [(r["principal"], r["event"]) for r in records] == [
        (name, event) for name in ("alice", "bob") for event in ("intent", "submitted", "finished")
    ]
    text = log.read_text()
    assert not [name for name, token in TOKENS.items() if token in text]
    for name in ("alice", "bob"):
        got = invoke("jobs", "export", "--principal", name)
        assert got.code == 0, got.stderr
        (row,) = [json.loads(line) for line in got.stdout.splitlines()]
        assert (row["principal"], row["prompt"]) == (name, f"{name}'s cat")
        assert row["request_id"] == next(
            r["request_id"] for r in records if r["principal"] == name and r["request_id"]
        )


# ---------------------------------------------------------------------- the file


_APPENDER = """
import sys
from pathlib import Path
from mai_tools.jobbook import AuditLog, JobRecord
path, me, other, least = Path(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
log = AuditLog(path)
print("ready", flush=True)
sys.stdin.readline()
seen = False
i = 0
# At least `least` records, and on until the other process's first record is in the file: the
# two processes' appends overlap however the machine schedules them.
while i < least or not seen:
    log.refused(principal=me, surface="mcp", tool="generate_image", num_images=1,
                reason=f"{i} " + "x" * 3800)
    i += 1
    if i % 10 == 0 and not seen:
        with path.open("rb") as f:
            f.seek(max(f.seek(0, 2) - 65536, 0))
            seen = f'"principal":"{other}"'.encode() in f.read()
    assert i < 200_000, "the other process never wrote"
"""


def test_records_from_two_processes_are_whole_lines(tmp_path: Path) -> None:
    """Two processes append near-4 KB records to one file, each until the other's records
    are in it too: every line is one whole record, and each process's records are all there,
    in its own order."""
    log = tmp_path / "shared.jsonl"
    names = ("alice", "bob")
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _APPENDER, str(log), me, other, "300"],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for me, other in (names, names[::-1])
    ]
    for proc in procs:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "ready\n"
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.close()
    for proc in procs:
        assert proc.wait(timeout=120) == 0
        assert proc.stdout is not None
        proc.stdout.close()
    lines = log.read_bytes().split(b"\n")
    assert lines.pop() == b""  # the file ends with a newline
    order: list[str] = []
    seen: dict[str, list[int]] = {name: [] for name in names}
    for line in lines:
        assert len(line) < MAX_RECORD_BYTES
        record = json.loads(line)
        order.append(record["principal"])
        seen[record["principal"]].append(int(record["reason"].split()[0]))
    for name in names:
        assert len(seen[name]) >= 300
        assert seen[name] == list(range(len(seen[name])))
    # The appends interleaved: someone's record lies between two of the other's.
    first_last = {
        name: (order.index(name), len(order) - 1 - order[::-1].index(name)) for name in names
    }
    assert first_last["alice"][0] < first_last["bob"][0] < first_last["alice"][1] or (
        first_last["bob"][0] < first_last["alice"][0] < first_last["bob"][1]
    )


def test_a_record_never_passes_the_size_cap(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    with AuditLog(log, prompts=True) as audit:
        audit.refused(**ALICE, num_images=1, reason="too many", prompt="ü" * 5000 + "\n\x00")
    raw = log.read_bytes()
    assert len(raw) <= MAX_RECORD_BYTES
    (record,) = _records(log)
    assert record["prompt"].endswith("…")
    assert record["prompt_sha256"] == hashlib.sha256(("ü" * 5000 + "\n\x00").encode()).hexdigest()


@pytest.mark.parametrize(
    "prompt",
    [
        "a short one",
        ("a long winding road " * 100)[:1500],
        "Data: quarterly sales, as a bar chart",  # the book keeps a "data:…" value as a digest
    ],
)
@pytest.mark.parametrize("store_prompts", [True, False])
def test_the_prompt_hash_is_of_the_whole_prompt(prompt: str, store_prompts: bool) -> None:
    """Whatever the book keeps of a prompt (all of it, a long one's head and digest, or a digest
    only), the record's hash is the sha256 of the prompt as the caller gave it."""
    fields = describe(GenerateRequest(prompt=prompt), store_prompts=store_prompts).fields
    assert prompt_sha256(fields["prompt"]) == hashlib.sha256(prompt.encode()).hexdigest()


@pytest.mark.parametrize(
    ("prompt", "store_prompts", "written"),
    [
        ("a short one", True, "a short one"),
        ("Data: quarterly sales, as a bar chart", True, "Data: quarterly sales, as a bar chart"),
        ("word " * 300, True, ("word " * 40)[:199] + "…"),  # a long one: as jobs list shows it
        ("a short one", False, None),  # the book keeps digests only: so does the log
    ],
)
def test_opted_in_prompt_text_is_what_the_book_keeps(
    tmp_path: Path, prompt: str, store_prompts: bool, written: str | None
) -> None:
    record = record_of(GenerateRequest(prompt=prompt), store_prompts=store_prompts, surface="cli")
    with AuditLog(tmp_path / "audit.jsonl", prompts=True) as audit:
        entry = audit.entry("intent", record)
    assert entry["prompt"] == written
    assert entry["prompt_sha256"] == hashlib.sha256(prompt.encode()).hexdigest()
    assert entry["tool"] == "generate"  # not an agent surface: the operation


# ---------------------------------------------------------------------- bad input


def test_a_path_that_cannot_be_opened_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match=r"No such file or directory.*directory exists"):
        AuditLog(tmp_path / "missing" / "audit.jsonl")
    with pytest.raises(ConfigurationError, match="Is a directory"):
        AuditLog(tmp_path)


def test_the_server_does_not_start_with_a_bad_audit_log(tmp_path: Path) -> None:
    bad = tmp_path / "missing" / "audit.jsonl"
    result = CliRunner().invoke(cli, ["--audit-log", str(bad)])
    assert result.exit_code == 2
    text = " ".join(result.output.split())
    assert f"Cannot open the audit log {bad}" in text
    assert "(--audit-log / MAI_MCP_AUDIT_LOG)" in text
    assert "The server did not start" in text


def test_prompts_without_a_log_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(SettingsError, match=r"audit_prompts.*give --audit-log PATH"):
        Settings(audit_prompts=True)
    result = CliRunner().invoke(cli, ["--audit-prompts"])
    assert result.exit_code == 2
    assert "--audit-prompts: writes prompts into the audit log" in " ".join(result.output.split())
