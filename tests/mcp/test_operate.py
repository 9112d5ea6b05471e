"""Operating the HTTP server (issue 25 item 2): ``/healthz`` and ``/readyz`` without a token,
telling nothing; the start line, job lines and access lines on stderr, as text or JSON, with no
key or token in any of them. The served tests run the real ``mai-image-mcp`` on loopback."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import httpx
import httpx2
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client

from mai_tools import __version__
from mai_tools._constants import WEBHOOK_PATH
from mai_tools._webhook_server import hide_tokens_in_logs
from mai_tools.emulator import RunningEmulator
from mai_tools.jobbook import JobRecord
from mcp_server import Settings, create_server
from mcp_server._auth import Authenticator
from mcp_server._health import Health
from mcp_server._logs import (
    CHATTY,
    FIELDS,
    START,
    JobLog,
    JsonFormatter,
    TextFormatter,
    auth_mode,
    gateway_host,
    job_fields,
    setup,
)
from mcp_server._state import STOPPING
from mcp_server._tokens import NamedToken, NamedTokens, digest, write
from tests.support.emulators import EmulatorPool
from tests.support.fakes import KEY
from tests.support.identity import http_command, served_command, server_env
from tests.support.postgres import PostgresServer
from tests.support.serving import stdio_call

ALICE_TOKEN = "alice-operate-token-0123456789abcdef"
SECRET = "a-secret-the-formatter-knows-0123"
"""Redacted by the formatters (not the suite's key: a record holding it fails the test)."""
STRANGE_HOST = {"Host": "10.1.2.3:8000"}  # a kubelet probes the pod's IP: no allowed host


@pytest.fixture
def emu(emulators: EmulatorPool) -> RunningEmulator:
    return emulators(api_keys=(KEY,), min_duration=0.05, max_duration=0.1)


def _tokens_file(where: Path) -> Path:
    path = where / "tokens.json"
    write(path, {"alice": NamedToken("alice", digest(ALICE_TOKEN), "2026-12-07T00:00:00Z")})
    return path


def _records(stderr: str) -> list[dict[str, Any]]:
    """Every stderr line, each parsed as one JSON object (a line that is not one fails)."""
    return [json.loads(line) for line in stderr.splitlines() if line.strip()]


# --------------------------------------------------------------------------- served


async def test_probes_answer_without_a_token_and_the_json_log_tells_each_job(
    emu: RunningEmulator, tmp_path: Path
) -> None:
    book = tmp_path / "jobs.sqlite3"
    command = [
        *http_command(),
        "--tokens-file",
        str(_tokens_file(tmp_path)),
        "--job-book",
        str(book),
    ]
    command += ["--log-format", "json", "--log-level", "INFO"]
    env = server_env(PIXAZO_API_KEY=KEY, PIXAZO_BASE_URL=emu.base_url)
    with served_command(command, env) as served:
        async with httpx2.AsyncClient(base_url=served.origin, timeout=10) as plain:
            health = await plain.get("/healthz")
            head = await plain.head("/healthz")
            ready = await plain.get("/readyz", headers=STRANGE_HOST)
            posted = await plain.post("/readyz")
            refused = await plain.post("/mcp", json={})
        async with (
            httpx2.AsyncClient(headers={"Authorization": f"Bearer {ALICE_TOKEN}"}) as http,
            Client(streamable_http_client(f"{served.origin}/mcp", http_client=http)) as client,
        ):
            result = await client.call_tool("generate_image", {"prompt": "a log", "num_images": 2})
    assert not result.is_error
    assert (health.status_code, health.json()) == (200, {"status": "ok"})
    assert (head.status_code, head.content) == (200, b"")
    assert (ready.status_code, ready.json()) == (200, {"status": "ready"})
    assert (posted.status_code, posted.headers["allow"]) == (405, "GET, HEAD")
    assert refused.status_code == 401  # everything else still needs the token
    for answer in (health, ready):
        assert answer.headers["cache-control"] == "no-store"
        for told in (str(tmp_path), "127.0.0.1", emu.base_url, __version__, "alice", KEY):
            assert told not in answer.text

    records = _records(served.stderr)  # every line is one JSON object
    assert all({"time", "level", "logger", "message"} <= r.keys() for r in records)
    (start,) = [r for r in records if r["logger"] == "mcp_server.start" and "event" in r]
    assert start["transport"] == "streamable-http"
    assert start["address"] == f"{served.origin}/mcp"
    assert start["auth"] == "named tokens"
    assert start["gateway"] == emu.base_url.removeprefix("http://")
    assert start["job_book"] == str(book)
    assert start["version"] == __version__
    jobs = [r for r in records if r["logger"] == "mcp_server.jobs"]
    assert [r["event"] for r in jobs] == ["intent", "submitted", "finished"]
    assert {(r["principal"], r["tool"], r["images"], r["level"]) for r in jobs} == {
        ("alice", "generate_image", 2, "INFO")
    }
    finished = jobs[-1]
    assert finished["status"] == "COMPLETED"
    assert finished["request_id"] == jobs[1]["request_id"] is not None
    assert finished["seconds"] >= jobs[1]["seconds"] >= 0
    access = [r for r in records if r["logger"] == "uvicorn.access"]
    assert {"method": "GET", "path": "/healthz", "status_code": 200}.items() <= access[0].items()
    assert any(r["path"] == "/mcp" and r["status_code"] == 401 for r in access)
    assert KEY not in served.stderr
    assert ALICE_TOKEN not in served.stderr
    assert "HTTP Request" not in served.stderr  # httpx's per-poll lines: DEBUG only


def test_the_default_level_shows_the_start_line_and_no_job_line(
    emu: RunningEmulator, tmp_path: Path
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(ALICE_TOKEN)
    token_file.chmod(0o600)
    command = [*http_command(), "--auth-token-file", str(token_file)]
    env = server_env(PIXAZO_API_KEY=KEY, PIXAZO_BASE_URL=emu.base_url, MAI_JOB_BOOK="off")
    with served_command(command, env) as served:
        ready = httpx.get(f"{served.origin}/readyz", timeout=10)
        refused = httpx.get(f"{served.origin}/mcp", timeout=10)
    assert ready.status_code == 200
    assert refused.status_code == 401
    lines = served.stderr.splitlines()
    (start,) = [line for line in lines if "mcp_server.start: mai-image-mcp" in line]
    assert f"serving streamable-http at {served.origin}/mcp; auth: token; gateway: " in start
    assert "job book: off (this process only)" in start
    assert not any("uvicorn.access" in line or "refused an HTTP request" in line for line in lines)
    assert ALICE_TOKEN not in served.stderr
    assert KEY not in served.stderr


def test_readyz_is_503_while_the_postgres_book_is_down(
    postgres_server: PostgresServer, postgres_url: str
) -> None:
    command = [*http_command(), "--emulator", "--job-book", postgres_url]
    with served_command(command, server_env()) as served:
        ready = httpx.get(f"{served.origin}/readyz", timeout=10)
        postgres_server.stop()
        try:
            down = _readyz_until(served.origin, 503)
        finally:
            postgres_server.start()
        back = _readyz_until(served.origin, 200)
    assert ready.status_code == 200
    assert down.json() == {"status": "not ready", "reason": "the job book cannot be read"}
    assert back.json() == {"status": "ready"}
    assert postgres_server.password not in down.text
    assert "postgres" not in down.text.lower()
    assert "readiness: the job book cannot be read" in served.stderr
    assert postgres_server.password not in served.stderr
    assert "job book: postgresql://" in served.stderr  # the start line, without the password


async def test_stdio_json_log_has_the_start_line_and_the_job_lines(
    emu: RunningEmulator, tmp_path: Path
) -> None:
    params = StdioServerParameters(
        command=http_command()[0],
        args=["--log-format", "json", "--log-level", "INFO"],
        env=server_env(PIXAZO_API_KEY=KEY, PIXAZO_BASE_URL=emu.base_url),
    )
    prompt = {"prompt": "a json log"}
    result, stderr = await stdio_call(params, "generate_image", prompt, tmp_path / "err.log")
    assert not result.is_error
    records = _records(stderr)  # every line is one JSON object; stdout was the protocol's
    (start,) = [r for r in records if r.get("event") == "start"]
    assert (start["transport"], start["address"]) == ("stdio", "stdin/stdout")
    jobs = [r for r in records if r["logger"] == "mcp_server.jobs"]
    assert [(r["event"], r["principal"]) for r in jobs] == [
        ("intent", "local"),
        ("submitted", "local"),
        ("finished", "local"),
    ]
    assert jobs[-1]["status"] == "COMPLETED"
    assert KEY not in stderr


def _readyz_until(origin: str, status: int) -> httpx.Response:
    """``/readyz`` asked until it answers ``status`` (an answer is reused for a second)."""
    deadline = time.monotonic() + 30
    while True:
        answer = httpx.get(f"{origin}/readyz", timeout=30)
        if answer.status_code == status or time.monotonic() > deadline:
            return answer
        time.sleep(0.2)


# --------------------------------------------------------------------------- in process


@pytest.mark.parametrize("key", [KEY, None])
async def test_readyz_in_process_starting_ready_or_keyless_then_stopping(
    key: str | None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PIXAZO_API_KEY", raising=False)  # the client would read it
    server = create_server(Settings(api_key=key, job_book=str(tmp_path / "jobs.sqlite3")))
    inner = server.streamable_http_app()
    ticks = iter(range(0, 100, 5))  # each read of the clock is 5 s later: no answer reused
    app = Health(inner, server, clock=lambda: float(next(ticks)))
    async with httpx2.AsyncClient(
        transport=httpx2.ASGITransport(app=app), base_url="http://x"
    ) as http:
        starting = await http.get("/readyz")
        async with inner.router.lifespan_context(inner):  # the server's lifespan runs
            running = await http.get("/readyz")
            STOPPING.set()
            try:
                stopping = await http.get("/readyz")
            finally:
                STOPPING.clear()
        alive = await http.get("/healthz")
    assert (starting.status_code, starting.json()["reason"]) == (503, "starting")
    if key is None:
        assert running.status_code == 503
        assert running.json()["reason"].startswith("no gateway client")
    else:
        assert (running.status_code, running.json()) == (200, {"status": "ready"})
    assert (stopping.status_code, stopping.json()["reason"]) == (503, "stopping")
    assert alive.status_code == 200


async def test_readyz_is_503_while_the_tokens_file_cannot_be_used(tmp_path: Path) -> None:
    path = _tokens_file(tmp_path)
    server = create_server(Settings(api_key=KEY, job_book=str(tmp_path / "jobs.sqlite3")))
    inner = server.streamable_http_app()
    ticks = iter(range(0, 100, 5))  # each read of the clock is 5 s later: no answer reused
    verifier = Authenticator(named=NamedTokens(path))
    app = Health(inner, server, authenticator=verifier, clock=lambda: float(next(ticks)))
    async with (
        httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app), base_url="http://x") as http,
        inner.router.lifespan_context(inner),
    ):
        ready = await http.get("/readyz")
        path.write_text("{not json", encoding="utf-8")  # edited into something malformed
        broken = await http.get("/readyz")
        _tokens_file(tmp_path)  # fixed
        fixed = await http.get("/readyz")
    assert ready.status_code == fixed.status_code == 200
    assert broken.status_code == 503
    assert broken.json() == {"status": "not ready", "reason": "the tokens file cannot be used"}
    assert str(path) not in broken.text


def _record(**changes: Any) -> JobRecord:
    values: dict[str, Any] = {
        "id": "j1",
        "principal": "alice",
        "surface": "mcp",
        "operation": "edit",
        "fingerprint": "f",
        "fields": {"prompt": "p", "num_images": 3},
        "prompt": "p",
        "request_id": "microsoft-mai-image-2-5_x",
        "status": "COMPLETED",
        "created": 100.0,
        "submitted_at": 100.5,
        "finished_at": 112.25,
        "updated": 112.25,
    }
    return JobRecord(**{**values, **changes})


def test_a_job_line_has_who_which_how_long_and_how_many() -> None:
    assert job_fields("finished", _record()) == {
        "event": "finished",
        "principal": "alice",
        "tool": "edit_image",
        "request_id": "microsoft-mai-image-2-5_x",
        "status": "COMPLETED",
        "seconds": 12.25,
        "images": 3,
    }
    assert job_fields("submitted", _record())["seconds"] == 0.5
    intent = job_fields("intent", _record(request_id=None, status=None))
    assert (intent["seconds"], intent["request_id"]) == (0.0, None)
    assert job_fields("unknown", _record(status=None))["status"] == "UNKNOWN"


def test_the_formats_put_one_record_on_one_line_and_redact_secrets(
    caplog: pytest.LogCaptureFixture,
) -> None:
    logger = logging.getLogger("tests.operate")
    with caplog.at_level(logging.INFO, logger="tests.operate"):
        JobLog(logger)("finished", _record(principal="bob"))
        logger.warning("two\nlines with %s", SECRET)
    job, warning = caplog.records
    text = TextFormatter([SECRET])
    assert text.format(job).endswith(
        "INFO tests.operate: job finished: principal=bob tool=edit_image "
        "request_id=microsoft-mai-image-2-5_x status=COMPLETED seconds=12.25 images=3"
    )
    assert text.format(warning).endswith("WARNING tests.operate: two\\nlines with [redacted]")
    as_json = JsonFormatter([SECRET])
    parsed = json.loads(as_json.format(job))
    assert parsed["logger"] == "tests.operate"
    assert parsed["time"].endswith("Z")
    assert {k: parsed[k] for k in getattr(job, FIELDS)} == job_fields(
        "finished", _record(principal="bob")
    )
    line = as_json.format(warning)
    assert "\n" not in line
    assert SECRET not in line
    assert json.loads(line)["message"] == "two\nlines with [redacted]"


def test_the_start_line_names_the_auth_mode_and_only_the_gateways_host() -> None:
    assert auth_mode(token=False, tokens_file=False, oauth_issuer=None, transport="x") == "none"
    both = auth_mode(
        token=True, tokens_file=True, oauth_issuer="https://sso.example/t", transport="x"
    )
    assert both == "token + named tokens + OAuth (https://sso.example/t)"
    assert auth_mode(token=True, tokens_file=False, oauth_issuer=None, transport="stdio") == (
        "none (stdio: the client that started it)"
    )
    assert gateway_host("https://u:secret@gw.example:8443/p?k=v", emulator=False) == (
        "gw.example:8443"
    )
    assert gateway_host(None, emulator=False) == "gateway.pixazo.ai"
    assert gateway_host("http://127.0.0.1:1", emulator=True).startswith("emulator")


class _JsonLines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []
        self.setFormatter(JsonFormatter([]))

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


def test_a_json_access_line_keeps_a_callback_token_out_of_its_path() -> None:
    hide_tokens_in_logs(WEBHOOK_PATH)  # as a mounted WebhookReceiver does
    access = logging.getLogger("uvicorn.access")
    token = "cap-" + "A" * 40
    handler = _JsonLines()  # on the logger itself: an in-process uvicorn (an emulator) may
    access.addHandler(handler)  # have stopped its records from propagating
    level = access.level
    access.setLevel(logging.INFO)
    try:  # uvicorn's call, as in its h11 protocol
        access.info(
            '%s - "%s %s HTTP/%s" %d', "1.2.3.4:5", "POST", f"{WEBHOOK_PATH}/{token}", "1.1", 200
        )
    finally:
        access.removeHandler(handler)
        access.setLevel(level)
    (line,) = handler.lines
    assert token not in line
    assert json.loads(line)["path"] == f"{WEBHOOK_PATH}/<token>"
    assert json.loads(line)["status_code"] == 200


@pytest.mark.parametrize(
    ("level", "start", "chatty"),
    [
        ("DEBUG", logging.INFO, logging.DEBUG),
        ("INFO", logging.INFO, logging.WARNING),
        ("WARNING", logging.INFO, logging.WARNING),  # the default still shows the start line
        ("ERROR", logging.ERROR, logging.ERROR),
    ],
)
def test_setup_shows_the_start_line_up_to_warning_and_library_chatter_only_at_debug(
    level: str, start: int, chatty: int
) -> None:
    names = ["", START.name, *CHATTY]
    saved = {name: logging.getLogger(name).level for name in names}
    handler = setup(level, "json")
    try:
        assert logging.getLogger().level == logging.getLevelName(level)
        assert START.level == start
        assert {logging.getLogger(name).level for name in CHATTY} == {chatty}
        assert isinstance(handler.formatter, JsonFormatter)
        assert setup(level, "text") is not handler  # a second call replaces its handler
        assert sum(getattr(h, "_mai_image_mcp", False) for h in logging.getLogger().handlers) == 1
    finally:
        for old in [h for h in logging.getLogger().handlers if getattr(h, "_mai_image_mcp", 0)]:
            logging.getLogger().removeHandler(old)
        for name, value in saved.items():
            logging.getLogger(name).setLevel(value)
