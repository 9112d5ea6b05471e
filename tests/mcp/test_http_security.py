"""MCP over HTTP is never open by accident: bearer token, Host/Origin checks on every bind,
refusal to start on a non-loopback address without a token, no token in reprs or logs.

Servers here are real uvicorn servers on loopback ports, in a thread or a subprocess, in front of
the offline emulator; the emulator's request log proves a refused request reached nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import httpx2
import pytest
from click.testing import CliRunner
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from mai_tools.emulator import EmulatorConfig, RunningEmulator, run_emulator
from mcp_server import Settings, SettingsError, create_server
from mcp_server.__main__ import cli
from mcp_server._http import (
    BearerTokenMiddleware,
    default_hosts,
    http_app,
    is_loopback,
    refusal,
    startup_notes,
)
from tests.conftest import CANARY_PREFIX
from tests.support.fakes import KEY
from tests.support.identity import INITIALIZE, MCP_HEADERS, inspector_or_skip
from tests.support.serving import free_socket, serving

ROOT = Path(__file__).resolve().parents[2]
TOKEN = CANARY_PREFIX + "mcp-bearer-token-0123456789"  # the suite's log guard looks for it
CALL = {
    "jsonrpc": "2.0",
    "id": 2,
    "method": "tools/call",
    "params": {"name": "generate_image", "arguments": {"prompt": "an unauthorised cat"}},
}
WILDCARD = "0.0.0.0"  # noqa: S104  # a value under test; tests bind loopback sockets only


@pytest.fixture(scope="module")
def module_emu() -> Iterator[RunningEmulator]:
    with run_emulator(EmulatorConfig(api_keys=(KEY,), min_duration=0.2, max_duration=0.3)) as emu:
        yield emu


@pytest.fixture
def emu(module_emu: RunningEmulator) -> RunningEmulator:
    module_emu.control.reset()
    return module_emu


def _untouched(emu: RunningEmulator) -> None:
    stats = emu.control.stats()
    assert stats.requests == []
    assert stats.submissions == 0
    assert stats.jobs_created == 0


@contextlib.contextmanager
def _server(emu: RunningEmulator, *, bind: str = "127.0.0.1", **settings: Any) -> Iterator[str]:
    """The app ``mai-image-mcp`` serves, configured as if bound to ``bind`` (the socket itself
    is always loopback, so no test opens a port to the network)."""
    config = Settings(api_key=KEY, base_url=emu.base_url, preview="off", **settings)
    sock = free_socket()
    port = sock.getsockname()[1]
    app = http_app(create_server(config), config, host=bind, port=port)
    with serving(app, sock) as origin:
        yield origin


def _post(origin: str, body: dict[str, Any], **headers: str) -> httpx.Response:
    return httpx.post(f"{origin}/mcp", json=body, headers={**MCP_HEADERS, **headers}, timeout=10)


def test_no_token_gets_401_and_reaches_nothing(emu: RunningEmulator) -> None:
    with _server(emu, auth_token=TOKEN) as origin:
        attempts = [
            _post(origin, INITIALIZE),
            _post(origin, CALL, **{"MCP-Protocol-Version": "2026-07-28"}),
            _post(origin, CALL, Authorization="Basic " + TOKEN),
            _post(origin, CALL, Authorization="Bearer"),
            _post(origin, CALL, Authorization=TOKEN),
            httpx.get(f"{origin}/mcp", headers={"Accept": "text/event-stream"}),
            httpx.delete(f"{origin}/mcp"),
            httpx.options(f"{origin}/mcp"),
            httpx.get(f"{origin}/anything-else"),
        ]
    for response in attempts:
        assert response.status_code == 401, (response.request.method, response.text)
        assert response.headers["www-authenticate"].startswith("Bearer ")
        assert TOKEN not in response.text
    assert "Authorization: Bearer" in attempts[0].json()["error_description"]
    _untouched(emu)


def test_wrong_token_gets_401(emu: RunningEmulator) -> None:
    wrong = [TOKEN + "x", TOKEN[:-1], TOKEN.upper(), "a" * len(TOKEN), f"{TOKEN} {TOKEN}"]
    with _server(emu, auth_token=TOKEN) as origin:
        responses = [_post(origin, CALL, Authorization=f"Bearer {w}") for w in wrong]
        with httpx.Client() as http:  # two Authorization headers: refused, not guessed between
            twice = http.post(
                f"{origin}/mcp",
                json=CALL,
                headers=httpx.Headers(
                    [
                        *MCP_HEADERS.items(),
                        ("Authorization", "Bearer x"),
                        ("Authorization", f"Bearer {TOKEN}"),
                    ]
                ),
            )
    for response in [*responses, twice]:
        assert response.status_code == 401
        assert 'error="invalid_token"' in response.headers["www-authenticate"]
        assert TOKEN not in response.text
    _untouched(emu)


async def test_right_token_runs_the_tool(emu: RunningEmulator) -> None:
    with _server(emu, auth_token=TOKEN) as origin:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with (
            httpx2.AsyncClient(headers=headers, timeout=30) as http,
            Client(streamable_http_client(f"{origin}/mcp", http_client=http)) as client,
        ):
            assert len((await client.list_tools()).tools) == 5
            result = await client.call_tool("generate_image", {"prompt": "an authorised cat"})
        raw = _post(origin, INITIALIZE, Authorization=f"bearer {TOKEN}")  # scheme: any case
    assert not result.is_error
    assert result.structured_content is not None
    assert result.structured_content["status"] == "COMPLETED"
    assert emu.control.stats().jobs_created == 1
    assert raw.status_code == 200


async def test_the_token_is_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every check of a presented token goes through compare_digest (an ``==`` would leak, by
    its timing, how much of a guess is right)."""
    compared: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    monkeypatch.setattr(secrets, "compare_digest", spy)
    reached: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        reached.append(scope["path"])
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    guarded = BearerTokenMiddleware(app, TOKEN)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=guarded), base_url="http://127.0.0.1"
    ) as http:
        right = await http.get("/right", headers={"Authorization": f"Bearer {TOKEN}"})
        wrong = await http.get("/wrong", headers={"Authorization": f"Bearer {TOKEN[:-1]}x"})
    assert (right.status_code, wrong.status_code) == (204, 401)
    assert reached == ["/right"]
    assert len(compared) == 2  # both verdicts came from the constant-time comparison
    assert all(expected == TOKEN.encode() for _, expected in compared)


async def test_never_closed_sessions_are_capped_and_idle_out() -> None:
    """A flood of sessions opened and never closed: new clients get 503 at the cap, and only
    until the idle timeout (60 s by default) closes them. The loop's clock is moved on, not
    slept through."""
    assert Settings().session_idle_timeout <= 60
    assert Settings().max_sessions <= 1000  # ~45 KB each: memory stays bounded
    config = Settings(api_key=KEY, preview="off", max_sessions=2, session_idle_timeout=60)
    server = create_server(config)
    app = http_app(server, config, host="127.0.0.1", port=8000)
    loop = asyncio.get_running_loop()
    real_time = loop.time
    async with (
        server.session_manager.run(),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1:8000"
        ) as http,
    ):
        flood = [await http.post("/mcp", json=INITIALIZE, headers=MCP_HEADERS) for _ in range(3)]
        assert [r.status_code for r in flood] == [200, 200, 503]
        try:
            loop.time = lambda: real_time() + 61  # type: ignore[method-assign]
            for _ in range(100):  # the expired sessions end within a few loop turns
                await asyncio.sleep(0.01)
                late = await http.post("/mcp", json=INITIALIZE, headers=MCP_HEADERS)
                if late.status_code != 503:
                    break
        finally:
            del loop.time
        gone = await http.post(
            "/mcp",
            json={"jsonrpc": "2.0", "id": 2, "method": "ping"},
            headers={**MCP_HEADERS, "mcp-session-id": flood[0].headers["mcp-session-id"]},
        )
    assert late.status_code == 200  # a new client gets in once the idle ones are closed
    assert gone.status_code == 404  # an idled-out session is gone (its client starts anew)


def test_foreign_host_or_origin_refused_even_with_the_token(emu: RunningEmulator) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with _server(emu, auth_token=TOKEN) as origin:
        port = origin.rsplit(":", 1)[1]
        evil_host = _post(origin, CALL, Host="evil.example", **auth)
        evil_host_port = _post(origin, CALL, Host=f"evil.example:{port}", **auth)
        evil_origin = _post(origin, CALL, Origin="http://evil.example", **auth)
        own = _post(origin, INITIALIZE, Origin=f"http://localhost:{port}", **auth)
    assert evil_host.status_code == 421
    assert evil_host_port.status_code == 421
    assert evil_origin.status_code == 403
    assert own.status_code == 200
    assert emu.control.stats().jobs_created == 0


@pytest.mark.parametrize("bind", [WILDCARD, "::", "192.0.2.10"])
def test_rebinding_protection_is_on_for_every_bind_address(emu: RunningEmulator, bind: str) -> None:
    """The SDK protects only a loopback bind by itself; the served app protects every one."""
    with _server(emu, bind=bind, auth_token=TOKEN) as origin:
        port = origin.rsplit(":", 1)[1]
        auth = {"Authorization": f"Bearer {TOKEN}"}
        foreign = _post(origin, CALL, Host=f"attacker.example:{port}", **auth)
        local = _post(origin, INITIALIZE, Host=f"localhost:{port}", **auth)
        bound = _post(origin, INITIALIZE, Host=f"{bind}:{port}", **auth)
    assert foreign.status_code == 421
    assert local.status_code == 200
    # A wildcard is no name a client uses; a specific address is accepted as bound.
    assert bound.status_code == (200 if bind == "192.0.2.10" else 421)
    assert emu.control.stats().jobs_created == 0


def test_allowed_hosts_and_origins_for_real_deployments(emu: RunningEmulator) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with _server(
        emu,
        bind=WILDCARD,
        auth_token=TOKEN,
        allowed_hosts=("mcp.example.com",),
        allowed_origins=("https://app.example.com",),
    ) as origin:
        named = _post(origin, INITIALIZE, Host="mcp.example.com", **auth)
        from_app = _post(
            origin, INITIALIZE, Host="mcp.example.com", Origin="https://app.example.com", **auth
        )
        other = _post(
            origin, INITIALIZE, Host="mcp.example.com", Origin="https://evil.example", **auth
        )
    assert named.status_code == 200
    assert from_app.status_code == 200
    assert other.status_code == 403


def test_non_loopback_without_a_token_is_refused_at_start(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for key in [k for k in os.environ if k.startswith(("MAI_MCP_", "PIXAZO_"))]:
        monkeypatch.delenv(key)
    runner = CliRunner()
    for host in [WILDCARD, "::", "192.0.2.10", "mcp.example.com"]:
        result = runner.invoke(cli, ["--transport", "streamable-http", "--host", host])
        assert result.exit_code == 2, (host, result.output)
        assert "without authentication" in result.output
        assert "MAI_MCP_AUTH_TOKEN" in result.output
        assert "secrets.token_urlsafe" in result.output
    allowed = runner.invoke(
        cli,
        ["--transport", "streamable-http", "--host", WILDCARD, "--allow-dir", str(tmp_path)],
    )
    assert "read the images in the allowed directories" in allowed.output
    contradictory = runner.invoke(
        cli,
        ["--transport", "streamable-http", "--auth-token", TOKEN, "--insecure-no-auth"],
    )
    assert contradictory.exit_code == 2
    assert TOKEN not in contradictory.output
    # The real command, as an operator runs it: exit status 2, nothing served.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MAI_MCP_", "PIXAZO_"))}
    proc = subprocess.run(
        [sys.executable, "-m", "mcp_server", "--transport", "streamable-http", "--host", WILDCARD],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    assert "MAI_MCP_AUTH_TOKEN" in proc.stderr


def test_loopback_and_insecure_no_auth_are_allowed_with_warnings() -> None:
    plain = Settings()
    assert refusal("127.0.0.1", plain, insecure_no_auth=False) is None
    assert refusal("::1", plain, insecure_no_auth=False) is None
    assert refusal("localhost", plain, insecure_no_auth=False) is None
    assert refusal(WILDCARD, plain, insecure_no_auth=True) is None
    assert refusal(WILDCARD, Settings(auth_token=TOKEN), insecure_no_auth=False) is None
    (loud, hosts) = startup_notes(WILDCARD, 8000, plain, insecure_no_auth=True)
    assert loud.startswith("WARNING: --insecure-no-auth")
    assert "WITHOUT AUTHENTICATION" in loud
    assert "--allowed-host" in hosts
    assert (
        "any program on this machine"
        in startup_notes("127.0.0.1", 8000, plain, insecure_no_auth=False)[0]
    )
    assert (
        startup_notes("127.0.0.1", 8000, Settings(auth_token=TOKEN), insecure_no_auth=False) == []
    )
    assert is_loopback("127.0.0.2")
    assert is_loopback("[::1]")
    assert not is_loopback(WILDCARD)
    assert not is_loopback("localhost.evil.example")
    assert default_hosts(WILDCARD, 8000) == ["127.0.0.1:8000", "localhost:8000", "[::1]:8000"]
    assert "[fe80::1]:9000" in default_hosts("fe80::1", 9000)
    assert "localhost" in default_hosts("127.0.0.1", 80)


def test_token_settings_and_no_token_in_reprs(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for key in [k for k in os.environ if k.startswith(("MAI_MCP_", "PIXAZO_"))]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("MAI_MCP_AUTH_TOKEN", f"  {TOKEN}\n")
    settings = Settings.from_env()
    assert settings.auth_token is not None
    assert settings.auth_token.get_secret_value() == TOKEN
    assert TOKEN not in repr(settings)
    assert TOKEN not in str(settings)
    assert TOKEN not in repr(
        BearerTokenMiddleware(create_server(settings).streamable_http_app(), TOKEN)
    )
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)  # the key file's rule: no access for others
    monkeypatch.setenv("MAI_MCP_AUTH_TOKEN_FILE", str(token_file))
    with pytest.raises(SettingsError, match="not both"):
        Settings.from_env()
    monkeypatch.delenv("MAI_MCP_AUTH_TOKEN")
    from_file = Settings.from_env().auth_token
    assert from_file is not None
    assert from_file.get_secret_value() == TOKEN
    token_file.write_text("\n")
    with pytest.raises(SettingsError, match="is empty"):
        Settings.from_env()
    monkeypatch.setenv("MAI_MCP_AUTH_TOKEN_FILE", str(tmp_path / "missing"))
    with pytest.raises(SettingsError, match="Cannot read the auth token file"):
        Settings.from_env()
    monkeypatch.delenv("MAI_MCP_AUTH_TOKEN_FILE")
    for bad, why in [("x7Qz9", "too short"), ("has spaces in it, long enough", "only letters")]:
        monkeypatch.setenv("MAI_MCP_AUTH_TOKEN", bad)
        with pytest.raises(SettingsError, match=why) as caught:
            Settings.from_env()
        assert bad not in str(caught.value)
        assert "token_urlsafe" in str(caught.value)
    monkeypatch.delenv("MAI_MCP_AUTH_TOKEN")
    monkeypatch.setenv("MAI_MCP_ALLOWED_HOSTS", " mcp.example.com , 10.0.0.5:8000,,")
    monkeypatch.setenv("MAI_MCP_ALLOWED_ORIGINS", "https://app.example.com/")
    settings = Settings.from_env()
    assert settings.allowed_hosts == ("mcp.example.com", "10.0.0.5:8000")
    assert settings.allowed_origins == ("https://app.example.com",)
    for env, bad in [
        ("MAI_MCP_ALLOWED_HOSTS", "https://mcp.example.com"),
        ("MAI_MCP_ALLOWED_HOSTS", "mcp.example.com/mcp"),
        ("MAI_MCP_ALLOWED_ORIGINS", "app.example.com"),
        ("MAI_MCP_ALLOWED_ORIGINS", "https://app.example.com/path"),
    ]:
        monkeypatch.setenv(env, bad)
        with pytest.raises(SettingsError, match="Allowed"):
            Settings.from_env()
        monkeypatch.delenv(env)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def authed_http_server(emu: RunningEmulator, tmp_path: Path) -> Iterator[str]:
    """``mai-image-mcp --transport streamable-http --auth-token-file FILE`` as a subprocess."""
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIXAZO_", "MAI_MCP_"))}
    env.update({"PIXAZO_API_KEY": KEY, "PIXAZO_BASE_URL": emu.base_url, "MAI_MCP_PREVIEW": "off"})
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "mcp_server", "--transport", "streamable-http"),
            *("--port", str(port), "--auth-token-file", str(token_file)),
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 30
    try:
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if proc.poll() is not None:
                    raise AssertionError(
                        proc.stderr.read().decode() if proc.stderr else ""
                    ) from None
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        _, stderr = proc.communicate(timeout=10)
    assert TOKEN not in stderr.decode()


def test_the_command_serves_with_a_token_file(
    authed_http_server: str, emu: RunningEmulator
) -> None:
    refused = _post(authed_http_server, CALL)
    accepted = _post(authed_http_server, INITIALIZE, Authorization=f"Bearer {TOKEN}")
    assert refused.status_code == 401
    assert accepted.status_code == 200
    _untouched(emu)


def test_mcp_inspector_cli_over_authenticated_http(
    authed_http_server: str, emu: RunningEmulator
) -> None:
    inspector = inspector_or_skip()
    url = f"{authed_http_server}/mcp"

    def inspect(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [inspector, "--cli", url, *args],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    without = inspect("--method", "tools/list")
    assert without.returncode != 0
    assert emu.control.stats().requests == []
    header = ("--header", f"Authorization: Bearer {TOKEN}")
    listed = inspect(*header, "--method", "tools/list")
    assert listed.returncode == 0, listed.stderr
    names = {t["name"] for t in json.loads(listed.stdout)["tools"]}
    assert names == {
        "generate_image",
        "edit_image",
        "get_image_job",
        "view_image",
        "list_recent_jobs",
    }
    called = inspect(
        *header,
        *("--method", "tools/call", "--tool-name", "generate_image"),
        *("--tool-arg", "prompt=from the inspector over http"),
    )
    assert called.returncode == 0, called.stderr
    payload = json.loads(called.stdout)
    assert payload.get("isError") in (None, False)
    assert payload["structuredContent"]["status"] == "COMPLETED"
