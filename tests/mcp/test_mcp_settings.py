"""The server's settings are one model: each field gives its variable and its flag, errors name
where a bad value came from, secrets stay secret; and one client per server run (its lifespan)."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from mcp import Client

from mai_tools import AsyncMAIImageClient
from mai_tools.emulator import EmulatorConfig, run_emulator
from mcp_server import Settings, SettingsError, create_server
from mcp_server.__main__ import cli
from mcp_server._settings import env_name, load, options
from tests.support.fakes import KEY

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "sk-canary-settings-token-0123456789"


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in [k for k in os.environ if k.startswith(("MAI_MCP_", "PIXAZO_"))]:
        monkeypatch.delenv(key)


def test_the_readme_table_is_the_model() -> None:
    """Every documented variable and flag is a field's, and every public field is documented."""
    readme = (ROOT / "docs" / "mcp" / "index.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| `([A-Z_]+)` \|\s*(?:`(--[a-z-]+)`)?\s*\|", readme, re.MULTILINE)
    documented = {env: flag or None for env, flag in rows}
    assert documented == {env_name(name): option.flag for name, _, option in options()}


def test_help_is_made_from_the_fields() -> None:
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    text = " ".join(result.output.split())  # click wraps lines
    for name, info, option in options():
        if option.flag is None:
            continue
        assert option.flag in text
        assert f"env {env_name(name)}" in text
        assert " ".join(str(info.description).split()[:4]) in text
    assert "--resource-links / --no-resource-links" in text
    assert "default 45]" in text


def test_a_flag_overrides_its_variable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MAI_MCP_MAX_WAIT", "7")
    monkeypatch.setenv("MAI_MCP_ALLOWED_HOSTS", "a.example.com")
    assert load().max_wait == 7.0
    settings = load({"max_wait": "3", "allowed_hosts": ("b.example.com", "c.example.com:8000")})
    assert settings.max_wait == 3.0
    assert settings.allowed_hosts == ("b.example.com", "c.example.com:8000")
    # The token and its file are one setting: a flag for either sets both variables aside.
    monkeypatch.setenv("MAI_MCP_AUTH_TOKEN", "x" * 20)
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)  # the key file's rule: no access for others
    from_file = load({"auth_token_file": str(token_file)}).auth_token
    assert from_file is not None
    assert from_file.get_secret_value() == TOKEN
    monkeypatch.setenv("MAI_MCP_AUTH_TOKEN_FILE", str(token_file))
    with pytest.raises(SettingsError, match="MAI_MCP_AUTH_TOKEN_FILE: give the token or the file"):
        load()


@pytest.mark.parametrize(
    ("field", "bad", "says"),
    [
        ("max_wait", "soon", "a valid number"),
        ("max_wait", "0", "greater than 0"),
        ("preview", "huge", "'preview', 'thumbnail' or 'off'"),
        ("resource_links", "maybe", "valid boolean"),
        ("log_level", "loud", "'DEBUG', 'INFO'"),
        ("allowed_origins", "app.example.com", "give scheme://host[:port]"),
        ("max_connections", "0", "greater than 0"),
        ("max_connections_per_client", "-1", "greater than or equal to 0"),
        ("request_read_timeout", "inf", "finite number"),
    ],
)
def test_an_error_names_the_variable_or_flag_and_what_to_give(
    monkeypatch: pytest.MonkeyPatch, field: str, bad: str, says: str
) -> None:
    flag = {name: option.flag for name, _, option in options()}[field]
    monkeypatch.setenv(env_name(field), bad)
    with pytest.raises(SettingsError) as from_env:
        Settings.from_env()
    assert str(from_env.value).startswith(f"{env_name(field)}: ")
    assert says in str(from_env.value)
    assert repr(bad).lower() in str(from_env.value).lower()  # as given (case aside)
    monkeypatch.delenv(env_name(field))
    value: Any = (bad,) if field == "allowed_origins" else bad
    with pytest.raises(SettingsError) as from_flag:
        load({field: value})
    assert str(from_flag.value).startswith(f"{flag}: ")
    with pytest.raises(SettingsError) as given:
        Settings(**{field: value})
    assert str(given.value).startswith(f"{field} ({env_name(field)}): ")
    if field != "resource_links":  # a switch: it takes no value
        # The command: a usage error (exit status 2), before anything starts.
        result = CliRunner().invoke(cli, [str(flag), bad])
        assert result.exit_code == 2, result.output
        assert str(flag) in result.output


def test_secrets_are_never_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    bad_token = "sk-canary has spaces so it is refused"
    attempts: list[Callable[[], Settings]] = [
        lambda: load({"auth_token": bad_token}),
        lambda: Settings(auth_token=bad_token),
    ]
    for attempt in attempts:
        with pytest.raises(SettingsError) as caught:
            attempt()
        assert "sk-canary" not in str(caught.value)
        assert caught.value.__suppress_context__  # no traceback shows the validation error
    monkeypatch.setenv("PIXAZO_API_KEY", KEY)
    monkeypatch.setenv("MAI_MCP_AUTH_TOKEN", TOKEN)
    settings = Settings.from_env()
    assert settings.api_key is not None
    assert settings.api_key.get_secret_value() == KEY
    for shown in (repr(settings), str(settings), settings.model_dump_json()):
        assert KEY not in shown
        assert TOKEN not in shown
    result = CliRunner().invoke(cli, ["--auth-token", "short-" + "x"])
    assert result.exit_code == 2
    assert "short-x" not in result.output
    assert "--auth-token: the token is too short" in result.output


def test_settings_given_in_code_do_not_read_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MAI_MCP_ALLOWED_DIRS", "/")
    monkeypatch.setenv("PIXAZO_API_KEY", KEY)
    assert Settings().allowed_dirs == ()
    assert Settings().api_key is None
    assert Settings.from_env().allowed_dirs == (Path("/"),)


async def test_one_client_per_server_run(monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[AsyncMAIImageClient] = []
    closed: list[AsyncMAIImageClient] = []

    class Counted(AsyncMAIImageClient):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            made.append(self)

        async def aclose(self) -> None:
            closed.append(self)
            await super().aclose()

    monkeypatch.setattr("mcp_server._state.AsyncMAIImageClient", Counted)
    with run_emulator(EmulatorConfig(api_keys=(KEY,), min_duration=0, max_duration=0)) as emu:
        settings = Settings(api_key=KEY, base_url=emu.base_url, preview="off")
        server = create_server(settings)
        assert made == []  # nothing before the server runs
        async with Client(server) as client:
            for n in range(3):
                result = await client.call_tool("generate_image", {"prompt": f"job {n}"})
                assert not result.is_error
            assert len(made) == 1
            assert closed == []
        assert closed == made  # closed when the run ended
        async with Client(server) as client:  # a second run: its own client
            assert not (await client.call_tool("generate_image", {"prompt": "again"})).is_error
        assert len(made) == 2
        assert closed == made
