"""Named bearer tokens: ``mai-image-mcp tokens add/list/revoke``, the tokens file (digests only,
mode 600), each token's name as the caller's principal, and revocation without a restart.

The commands run as the installed ``mai-image-mcp`` in a subprocess, as an operator runs them.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from mcp_server import Settings
from mcp_server.__main__ import cli
from mcp_server._auth import Authenticator, authenticator
from mcp_server._http import http_app, refusal, startup_notes
from mcp_server._tokens import NamedToken, NamedTokens, digest, write
from tests.support.fakes import KEY
from tests.support.identity import (
    INITIALIZE,
    MCP_HEADERS,
    inspector_or_skip,
    served_command,
    whoami,
    whoami_server,
)

WILDCARD = "0.0.0.0"  # noqa: S104  # a value under test; tests bind loopback sockets only
STATIC = "static-token-for-the-default-principal"
MINTED = re.compile(r"mai_[A-Za-z0-9_-]{43}")


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in [k for k in os.environ if k.startswith(("MAI_MCP_", "PIXAZO_"))]:
        monkeypatch.delenv(key)


def _command() -> str:
    found = shutil.which("mai-image-mcp", path=os.path.dirname(sys.executable))
    assert found is not None, "mai-image-mcp is not installed beside this Python"
    return found


def _env(**more: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MAI_MCP_", "PIXAZO_"))}
    return {**env, **more}


def _tokens(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_command(), "tokens", *args],
        env=_env(**env),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _served(tmp_path: Path) -> list[str]:
    """The HTTP server command, with a job book of the test's own (callers told apart need
    one: the book keeps which caller made which job)."""
    return [_command(), "--transport", "streamable-http", "--job-book", str(tmp_path / "j.db")]


def _file_with(path: Path, **tokens: str) -> Path:
    write(path, {n: NamedToken(n, digest(t), "2026-12-07T08:00:00Z") for n, t in tokens.items()})
    return path


def test_tokens_add_list_revoke_as_the_operator_runs_them(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    added = _tokens("add", "alice", "--tokens-file", str(path))
    assert added.returncode == 0, added.stderr
    alice = added.stdout.strip()
    assert added.stdout == alice + "\n"  # the token alone on stdout, once
    assert MINTED.fullmatch(alice)
    assert "shown only now" in added.stderr
    assert alice not in added.stderr
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    text = path.read_text()
    assert alice not in text
    assert digest(alice) in text  # only its digest is kept
    bob = _tokens("add", "bob", "--tokens-file", str(path)).stdout.strip()
    assert MINTED.fullmatch(bob)
    assert bob != alice
    text = path.read_text()

    again = _tokens("add", "alice", "--tokens-file", str(path))
    assert again.returncode == 1
    assert again.stdout == ""
    assert "already has a token named 'alice'" in again.stderr
    assert "--replace" in again.stderr
    assert path.read_text() == text  # unchanged
    replaced = _tokens("add", "alice", "--replace", "--tokens-file", str(path))
    assert replaced.returncode == 0
    assert digest(alice) not in path.read_text()
    assert digest(replaced.stdout.strip()) in path.read_text()

    listed = _tokens("list", MAI_MCP_TOKENS_FILE=str(path))  # the variable names the file too
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert [line.split("\t")[0] for line in lines] == ["alice", "bob"]
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", ln.split("\t")[1]) for ln in lines)
    assert not re.search(r"[0-9a-f]{64}", listed.stdout)  # no digest, no token

    revoked = _tokens("revoke", "bob", "--tokens-file", str(path))
    assert revoked.returncode == 0, revoked.stderr
    assert digest(bob) not in path.read_text()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    unknown = _tokens("revoke", "bob", "--tokens-file", str(path))
    assert unknown.returncode == 1
    assert "has no token named 'bob'" in unknown.stderr
    nowhere = tmp_path / "missing-dir" / "tokens.json"
    no_dir = CliRunner().invoke(cli, ["tokens", "add", "carol", "--tokens-file", str(nowhere)])
    assert no_dir.exit_code == 1
    assert "the directory" in no_dir.output
    assert "does not exist" in no_dir.output


@pytest.mark.parametrize(
    ("name", "says"),
    [
        ("../etc", "cannot name a token"),
        ("has space", "cannot name a token"),
        ("x" * 65, "cannot name a token"),
        ("-flaglike", "cannot name a token"),
        ("default", "reserved"),
        ("local", "reserved"),
    ],
)
def test_a_bad_or_reserved_name_is_refused(tmp_path: Path, name: str, says: str) -> None:
    path = tmp_path / "tokens.json"
    result = CliRunner().invoke(cli, ["tokens", "add", "--tokens-file", str(path), "--", name])
    assert result.exit_code == 1, result.output
    assert says in result.output
    assert not path.exists()


async def test_named_tokens_and_the_static_token_are_different_principals(
    tmp_path: Path,
) -> None:
    """Through the SDK's client: alice, bob and the single --auth-token ("default")."""
    alice, bob = "mai_alice-token-0123456789abcdef", "mai_bob-token-0123456789abcdef"
    path = _file_with(tmp_path / "tokens.json", alice=alice, bob=bob)
    settings = Settings(api_key=KEY, preview="off", tokens_file=path, auth_token=STATIC)
    server = whoami_server(settings)
    app = http_app(server, settings)
    async with server.session_manager.run():
        seen = [await whoami(app, t) for t in (alice, bob, STATIC)]
    assert seen == ["alice", "bob", "default"]


async def test_a_revoked_token_is_refused_at_once_without_a_restart(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="mcp_server")
    alice, bob = "mai_alice-token-0123456789abcdef", "mai_bob-token-0123456789abcdef"
    path = _file_with(tmp_path / "tokens.json", alice=alice, bob=bob)
    settings = Settings(api_key=KEY, preview="off", tokens_file=path)
    server = whoami_server(settings)
    app = http_app(server, settings)

    async def status(token: str) -> int:
        headers = {**MCP_HEADERS, "Authorization": f"Bearer {token}"}
        return (await http.post("/mcp", json=INITIALIZE, headers=headers)).status_code

    async with (
        server.session_manager.run(),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1:8000"
        ) as http,
    ):
        before = [await status(alice), await status(bob)]
        revoked = CliRunner().invoke(cli, ["tokens", "revoke", "bob", "--tokens-file", str(path)])
        assert revoked.exit_code == 0, revoked.output
        after = [await status(alice), await status(bob)]
        path.write_text("{not json")  # an edit gone wrong: every named token is refused
        broken = await status(alice)
        _file_with(path, alice=alice)
        fixed = await status(alice)
    assert before == [200, 200]
    assert after == [200, 401]
    assert broken == 401
    assert fixed == 200
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "is not JSON" in text
    assert "Every named token is refused until it is fixed" in text
    assert "refused an HTTP request from 127.0.0.1:" in text
    assert alice not in text
    assert bob not in text


async def test_named_tokens_lookup_is_by_digest_and_shows_no_secret(tmp_path: Path) -> None:
    token = "mai_carol-token-0123456789abcdef"
    path = _file_with(tmp_path / "tokens.json", carol=token)
    named = NamedTokens(path)
    assert named.principal(token) == "carol"
    assert named.principal(token + "x") is None
    assert named.principal(token[:-1]) is None
    assert len(named) == 1
    for shown in (repr(named), repr(NamedToken("carol", digest(token), "now"))):
        assert digest(token) not in shown
        assert token not in shown
    verifier = authenticator(Settings(tokens_file=path, auth_token=STATIC))
    assert isinstance(verifier, Authenticator)
    assert token not in repr(verifier)
    assert STATIC not in repr(verifier)
    access = await verifier.authenticate(token)
    assert (access.client_id, access.claims) == (
        "carol",
        {"mai_principal": "carol", "mai_auth": "token"},
    )
    assert token not in access.model_dump_json()  # a fingerprint, never the token


@pytest.mark.parametrize(
    ("content", "mode", "says"),
    [
        (None, 0o600, "does not exist"),
        ("", 0o600, "is empty"),
        ("{not json", 0o600, "is not JSON"),
        ('{"version": 2, "tokens": {}}', 0o600, "has version 2"),
        ('{"version": 1}', 0o600, 'has no "tokens" object'),
        ('{"version": 1, "tokens": {"a": {"sha256": "abc"}}}', 0o600, "no valid sha256 digest"),
        ('{"version": 1, "tokens": {"a b": {"sha256": "' + "0" * 64 + '"}}}', 0o600, "badly"),
        ('{"version": 1, "tokens": {}}', 0o644, "chmod 600"),
    ],
)
def test_a_bad_tokens_file_stops_the_server_at_start(
    tmp_path: Path, content: str | None, mode: int, says: str
) -> None:
    path = tmp_path / "tokens.json"
    if content is not None:
        path.write_text(content)
        path.chmod(mode)
    result = CliRunner().invoke(
        cli,
        ["--transport", "streamable-http", "--host", WILDCARD, "--tokens-file", str(path)],
    )
    assert result.exit_code == 2, result.output
    assert says in result.output
    assert "--tokens-file / MAI_MCP_TOKENS_FILE" in result.output
    assert "The server did not start" in result.output


def test_the_command_with_a_malformed_tokens_file_exits_at_start(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    path.write_text('{"version": 1, "tokens": {"alice": "not an entry"}}')
    path.chmod(0o600)
    proc = subprocess.run(
        [*_served(tmp_path), "--host", WILDCARD],
        env=_env(MAI_MCP_TOKENS_FILE=str(path)),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    assert f"The tokens file {path} has no valid sha256 digest for 'alice'" in proc.stderr
    assert "The server did not start" in proc.stderr


def test_any_authentication_allows_a_network_bind(tmp_path: Path) -> None:
    path = _file_with(tmp_path / "tokens.json", alice="mai_alice-token-0123456789abcdef")
    named = Settings(tokens_file=path)
    assert refusal(WILDCARD, named, insecure_no_auth=False) is None
    oauth = Settings(oauth_issuer="https://idp.example.test/")
    assert refusal(WILDCARD, oauth, insecure_no_auth=False) is None
    notes = startup_notes(WILDCARD, 8000, named, insecure_no_auth=False)
    assert any("named tokens from" in note for note in notes)
    assert not any("WITHOUT AUTHENTICATION" in note for note in notes)
    contradictory = CliRunner().invoke(
        cli,
        ["--transport", "streamable-http", "--tokens-file", str(path), "--insecure-no-auth"],
    )
    assert contradictory.exit_code == 2
    assert "--insecure-no-auth contradicts" in contradictory.output


def test_the_served_command_refuses_a_token_revoked_while_it_runs(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    alice = _tokens("add", "alice", "--tokens-file", str(path)).stdout.strip()
    bearer = {**MCP_HEADERS, "Authorization": f"Bearer {alice}"}
    command = [_command(), "--transport", "streamable-http", "--tokens-file", str(path)]
    with served_command(
        [*command, "--emulator", "--job-book", str(tmp_path / "jobs.sqlite3")],
        _env(MAI_MCP_PREVIEW="off"),
    ) as served:
        url = f"{served.origin}/mcp"
        accepted = httpx.post(url, json=INITIALIZE, headers=bearer, timeout=10)
        assert _tokens("revoke", "alice", "--tokens-file", str(path)).returncode == 0
        refused = httpx.post(url, json=INITIALIZE, headers=bearer, timeout=10)
    assert accepted.status_code == 200
    assert refused.status_code == 401
    assert 'error="invalid_token"' in refused.headers["www-authenticate"]
    assert json.loads(path.read_text())["tokens"] == {}
    assert "named tokens from" in served.stderr
    assert alice not in served.stderr


def test_the_mcp_inspector_calls_as_two_named_callers_until_one_is_revoked(
    tmp_path: Path,
) -> None:
    """A second real client: the MCP Inspector CLI, with each caller's own token."""
    inspector = inspector_or_skip()
    path = tmp_path / "tokens.json"
    alice = _tokens("add", "alice", "--tokens-file", str(path)).stdout.strip()
    bob = _tokens("add", "bob", "--tokens-file", str(path)).stdout.strip()
    command = [_command(), "--transport", "streamable-http", "--tokens-file", str(path)]
    with served_command(
        [*command, "--emulator", "--job-book", str(tmp_path / "jobs.sqlite3")],
        _env(MAI_MCP_PREVIEW="off"),
    ) as served:

        def tools_as(token: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [
                    *(inspector, "--cli", f"{served.origin}/mcp", "--method", "tools/list"),
                    *("--header", f"Authorization: Bearer {token}"),
                ],
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )

        as_alice, as_bob = tools_as(alice), tools_as(bob)
        assert _tokens("revoke", "bob", "--tokens-file", str(path)).returncode == 0
        revoked = tools_as(bob)
    assert as_alice.returncode == 0, as_alice.stderr
    assert as_bob.returncode == 0, as_bob.stderr
    assert "generate_image" in as_alice.stdout
    assert revoked.returncode != 0
    assert alice not in served.stderr
    assert bob not in served.stderr
