"""Push waiting through the adapters: ``mai-image ... --webhook-listen`` and ``mai-image-mcp
--webhook-public-url`` (a real server process receiving callbacks on its own HTTP app)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner
from mcp import Client

from mai_tools.cli import cli
from mai_tools.emulator import EmulatorConfig, RunningEmulator, run_emulator
from mcp_server import Settings, SettingsError
from mcp_server.__main__ import cli as mcp_cli
from tests.support.fakes import KEY

ROOT = Path(__file__).resolve().parents[2]
HOOKS = "/mai-tools/webhooks"
TOKEN = "a-bearer-token-for-this-server-0123456789"


@pytest.fixture(scope="module")
def server() -> Iterator[RunningEmulator]:
    config = EmulatorConfig(api_keys=(KEY,), min_duration=0.4, max_duration=0.6)
    with run_emulator(config) as emu:
        yield emu


@pytest.fixture
def emu(server: RunningEmulator) -> RunningEmulator:
    server.control.reset()
    return server


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _mai_image(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    assert KEY not in result.stdout + result.stderr
    return result.exit_code, result.stdout, result.stderr


# --------------------------------------------------------------------------- the CLI


@pytest.mark.parametrize("command", ["generate", "edit"])
def test_the_cli_waits_for_the_callback(emu: RunningEmulator, command: str) -> None:
    image = (
        "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQ"
        "DwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
    )
    args = [command, *([image] if command == "edit" else []), "a pushed picture"]
    code, out, err = _mai_image(
        *args,
        *("--base-url", emu.base_url, "--api-key", KEY),
        *("--webhook-listen", "127.0.0.1:0", "--no-save", "--json", "--quiet"),
    )
    assert code == 0, err
    rid = json.loads(out)["request_id"]
    stats = emu.control.stats()
    assert stats.polls[rid] == 1  # the callback, then one confirming read
    (delivery,) = stats.webhook_deliveries
    assert (delivery["outcome"], delivery["status_code"]) == ("sent", 200)
    assert f"{HOOKS}/" in delivery["url"]


def test_the_cli_gives_the_gateway_the_public_url(emu: RunningEmulator) -> None:
    port = _free_port()
    public = f"http://localhost:{port}"  # e.g. a tunnel; here the same receiver by name
    code, _, err = _mai_image(
        *("generate", "a public url", "--base-url", emu.base_url, "--api-key", KEY),
        *("--webhook-listen", f"127.0.0.1:{port}", "--webhook-public-url", public),
        *("--no-save", "--json", "--quiet"),
    )
    assert code == 0, err
    (delivery,) = emu.control.stats().webhook_deliveries
    assert delivery["url"].startswith(f"{public}{HOOKS}/")
    assert delivery["status_code"] == 200


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--webhook-public-url", "https://hooks.example.com"], 2, "needs --webhook-listen"),
        (["--webhook-listen", "nowhere"], 2, "not HOST:PORT"),
        (["--webhook-listen", "127.0.0.1:70000"], 2, "not HOST:PORT"),
        (["--webhook-listen", "127.0.0.1:0", "--webhook-public-url", "ftp://x"], 2, "http"),
    ],
)
def test_bad_push_flags_are_usage_errors(
    emu: RunningEmulator, args: list[str], code: int, message: str
) -> None:
    exit_code, _, err = _mai_image(
        "generate", "bad flags", "--base-url", emu.base_url, "--api-key", KEY, *args
    )
    assert exit_code == code
    assert message in err
    assert emu.control.stats().submissions == 0


def test_a_listen_address_in_use_is_reported_before_submitting(emu: RunningEmulator) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, _, err = _mai_image(
            *("generate", "port taken", "--base-url", emu.base_url, "--api-key", KEY),
            *("--webhook-listen", f"127.0.0.1:{port}"),
        )
    assert code == 3
    assert f"cannot listen on 127.0.0.1:{port}" in err
    assert emu.control.stats().submissions == 0


def test_wait_with_a_receiver_says_it_reads_as_usual(emu: RunningEmulator) -> None:
    response = httpx.post(
        f"{emu.base_url}/microsoft-mai-image-2-5/v1/microsoft-mai-image-2-5-request",
        json={"prompt": "submitted elsewhere"},
        headers={"Ocp-Apim-Subscription-Key": KEY},
    )
    rid = response.json()["request_id"]
    code, out, err = _mai_image(
        *("wait", rid, "--base-url", emu.base_url, "--api-key", KEY),
        *("--webhook-listen", "127.0.0.1:0", "--no-save", "--json"),
    )
    assert code == 0, err
    assert json.loads(out)["request_id"] == rid
    assert "submitted by another command" in err


# --------------------------------------------------------------------------- the MCP server


def test_settings_read_and_check_the_public_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAI_MCP_WEBHOOK_PUBLIC_URL", "https://replica-3.example.com/")
    assert Settings.from_env().webhook_public_url == "https://replica-3.example.com"
    with pytest.raises(SettingsError, match="MAI_MCP_WEBHOOK_PUBLIC_URL"):
        Settings(webhook_public_url="replica-3.example.com")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--webhook-public-url", "http://127.0.0.1:9"], "needs --transport streamable-http"),
        (["--transport", "streamable-http", "--webhook-public-url", "ftp://x"], "http(s) URL"),
    ],
)
def test_the_mcp_flag_is_checked(args: list[str], message: str) -> None:
    result = CliRunner().invoke(mcp_cli, args, env={"PIXAZO_API_KEY": KEY})
    assert result.exit_code == 2
    assert message in result.stderr


def _spawn(emu: RunningEmulator, port: int, *extra: str) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIXAZO_", "MAI_MCP_"))}
    env.update({"PIXAZO_API_KEY": KEY, "PIXAZO_BASE_URL": emu.base_url, "MAI_MCP_PREVIEW": "off"})
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "mcp_server", "--transport", "streamable-http"),
            *("--port", str(port), "--webhook-public-url", f"http://127.0.0.1:{port}", *extra),
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,  # one stream: uvicorn's access log goes to stdout
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc
        except OSError:
            if proc.poll() is not None:
                raise AssertionError(proc.stdout.read().decode() if proc.stdout else "") from None
            time.sleep(0.1)
    proc.terminate()
    raise AssertionError("the MCP server did not start")


def _stop(proc: subprocess.Popen[bytes]) -> str:
    """What the server wrote (stderr and stdout, in one stream)."""
    proc.terminate()
    output, _ = proc.communicate(timeout=10)
    return output.decode()


async def test_the_mcp_server_receives_callbacks_on_its_own_app(emu: RunningEmulator) -> None:
    port = _free_port()
    proc = _spawn(emu, port, "--log-level", "INFO")  # INFO: uvicorn's access log is on
    try:
        async with Client(f"http://127.0.0.1:{port}/mcp") as client:
            result = await client.call_tool("generate_image", {"prompt": "a pushed agent"})
        assert not result.is_error
    finally:
        stderr = _stop(proc)
    assert f"calls back at http://127.0.0.1:{port}{HOOKS}/<token>" in stderr
    assert KEY not in stderr
    stats = emu.control.stats()
    (rid,) = stats.polls
    assert stats.polls[rid] == 1
    (delivery,) = stats.webhook_deliveries
    assert delivery["url"].startswith(f"http://127.0.0.1:{port}{HOOKS}/")
    assert (delivery["outcome"], delivery["status_code"]) == ("sent", 200)
    # The callback is in the access log (INFO), its token (a capability) is not.
    assert f'"POST {HOOKS}/<token> HTTP/1.1" 200' in stderr
    assert delivery["url"].rsplit("/", 1)[1] not in stderr


def test_callbacks_bypass_the_bearer_token_but_nothing_else_does(
    emu: RunningEmulator, tmp_path: Path
) -> None:
    port = _free_port()
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    token_file.chmod(0o600)  # the key file's rule: no access for others
    proc = _spawn(emu, port, "--auth-token-file", str(token_file))
    try:
        unknown = httpx.post(f"http://127.0.0.1:{port}{HOOKS}/{'A' * 43}", json={}, timeout=10)
        mcp = httpx.post(f"http://127.0.0.1:{port}/mcp", json={}, timeout=10)
        beside = httpx.post(f"http://127.0.0.1:{port}{HOOKS}-x/{'A' * 43}", json={}, timeout=10)
    finally:
        _stop(proc)
    assert unknown.status_code == 404  # the receiver answered: no token registered, no effect
    assert mcp.status_code == 401
    assert beside.status_code == 401
