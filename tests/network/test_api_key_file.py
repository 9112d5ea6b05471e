"""Key lookup: argument, then PIXAZO_API_KEY, then ~/.pixazo/api-key (mode 600, as ssh wants
for a private key); the library, the CLI and the adapters share the one lookup."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from mai_tools import ConfigurationError, MAIImageClient, MissingAPIKeyError
from mai_tools._config import api_key_file, resolve_api_key
from mai_tools.cli import cli
from mai_tools.emulator import RunningEmulator
from tests.support.fakes import KEY

FILE_KEY = "sk-canary-from-the-key-file"

posix_only = pytest.mark.skipif(os.name != "posix", reason="file modes are POSIX")


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("PIXAZO_API_KEY", raising=False)
    assert Path.home() == tmp_path  # the lookup follows HOME, read at call time
    return tmp_path


def _write_key(home: Path, text: str, mode: int = 0o600) -> Path:
    path = home / ".pixazo" / "api-key"
    path.parent.mkdir(exist_ok=True)
    path.write_text(text)
    path.chmod(mode)
    return path


def test_the_key_file_is_used_when_nothing_else_gives_a_key(home: Path) -> None:
    assert _write_key(home, FILE_KEY + "\n") == api_key_file()
    assert resolve_api_key(None).get() == FILE_KEY
    with MAIImageClient() as client:
        assert client.options.api_key.get() == FILE_KEY


def test_the_argument_and_the_variable_win_over_the_file(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _write_key(home, FILE_KEY)
    assert resolve_api_key("sk-canary-argument").get() == "sk-canary-argument"
    monkeypatch.setenv("PIXAZO_API_KEY", "sk-canary-variable")
    assert resolve_api_key(None).get() == "sk-canary-variable"
    monkeypatch.setenv("PIXAZO_API_KEY", "  ")  # blank: as if unset
    assert resolve_api_key(None).get() == FILE_KEY


def test_an_explicitly_blank_argument_does_not_fall_back(home: Path) -> None:
    _write_key(home, FILE_KEY)
    with pytest.raises(MissingAPIKeyError):
        resolve_api_key("")


@pytest.mark.parametrize("text", ["", "\n", "   \n  "])
def test_an_empty_file_means_no_key(home: Path, text: str) -> None:
    _write_key(home, text)
    with pytest.raises(MissingAPIKeyError):
        resolve_api_key(None)


def test_the_missing_key_message_names_all_three_and_the_emulator(home: Path) -> None:
    with pytest.raises(MissingAPIKeyError) as caught:
        resolve_api_key(None)
    message = str(caught.value)
    for part in ("api_key=", "PIXAZO_API_KEY", "~/.pixazo/api-key", "--emulator", "run_emulator"):
        assert part in message


@posix_only
@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_a_file_others_can_read_is_refused(home: Path, mode: int) -> None:
    _write_key(home, FILE_KEY, mode)
    with pytest.raises(ConfigurationError) as caught:
        resolve_api_key(None)
    message = str(caught.value)
    assert "chmod 600 ~/.pixazo/api-key" in message
    assert f"{mode:03o}" in message
    assert FILE_KEY not in message


@posix_only
def test_a_fifo_or_a_directory_is_not_a_key_file(home: Path) -> None:
    (home / ".pixazo").mkdir()
    os.mkfifo(home / ".pixazo" / "api-key", 0o600)
    with pytest.raises(ConfigurationError, match="not a file"):
        resolve_api_key(None)  # and does not hang opening the FIFO
    (home / ".pixazo" / "api-key").unlink()
    (home / ".pixazo" / "api-key").mkdir(mode=0o700)
    with pytest.raises(ConfigurationError, match=r"not a file|Cannot read"):
        resolve_api_key(None)


def test_a_key_file_with_garbage_is_refused_without_echoing_it(home: Path) -> None:
    _write_key(home, "sk-canary-two words")
    with pytest.raises(ConfigurationError, match=r"from ~/\.pixazo/api-key") as caught:
        resolve_api_key(None)
    assert "sk-canary" not in str(caught.value)
    (home / ".pixazo" / "api-key").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ConfigurationError, match="not text"):
        resolve_api_key(None)


def test_a_byte_order_mark_is_not_part_of_the_key(home: Path) -> None:
    # Notepad saves UTF-8 with a BOM; it is invisible, so no advice could get it removed.
    path = _write_key(home, "")
    path.write_bytes(b"\xef\xbb\xbf" + FILE_KEY.encode() + b"\r\n")
    assert resolve_api_key(None).get() == FILE_KEY


@posix_only
@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604])
def test_the_mcp_auth_token_file_is_held_to_the_key_files_rule(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: int
) -> None:
    from mcp_server._settings import Settings, SettingsError

    token = "a-long-random-token-" + "x" * 24
    path = tmp_path / "token"
    path.write_bytes(b"\xef\xbb\xbf" + token.encode() + b"\n")
    path.chmod(0o600)
    monkeypatch.delenv("MAI_MCP_AUTH_TOKEN", raising=False)
    monkeypatch.setenv("MAI_MCP_AUTH_TOKEN_FILE", str(path))
    from_file = Settings.from_env().auth_token
    assert from_file is not None
    assert from_file.get_secret_value() == token  # the BOM dropped here too
    path.chmod(mode)
    with pytest.raises(SettingsError) as caught:
        Settings.from_env()
    message = str(caught.value)
    assert f"The auth token file {path} can be read or changed by other users" in message
    assert f"(mode {mode:03o}); it was not used. Run `chmod 600 {path}`." in message
    assert token not in message


def test_the_cli_reads_the_key_file(home: Path, mai_emulator: RunningEmulator) -> None:
    _write_key(home, mai_emulator.api_key)
    env = {"PIXAZO_API_KEY": None, "PIXAZO_BASE_URL": mai_emulator.base_url, "HOME": str(home)}
    got = CliRunner().invoke(cli, ["generate", "a cat", "--no-save", "--quiet"], env=env)
    assert got.exit_code == 0, got.output
    assert mai_emulator.api_key not in got.output


@posix_only
def test_the_cli_refuses_a_readable_key_file(home: Path) -> None:
    _write_key(home, KEY, 0o644)
    got = CliRunner().invoke(cli, ["generate", "a cat"], env={"PIXAZO_API_KEY": None})
    assert got.exit_code == 3
    assert "chmod 600 ~/.pixazo/api-key" in got.output
    assert KEY not in got.output


def test_the_cli_no_key_message_names_the_key_file(home: Path) -> None:
    got = CliRunner().invoke(cli, ["generate", "a cat"], env={"PIXAZO_API_KEY": None})
    assert got.exit_code == 3
    assert "~/.pixazo/api-key" in got.output
