"""The desktop bundle: ``mcpb/manifest.json`` agrees with the server it starts, the official
``mcpb`` CLI validates and packs it, and the packed bundle's server runs the way its manifest says.

The CLI comes from npm (``@anthropic-ai/mcpb``, pinned in the README's test command, installed
into ``.ci/node``); without it these tests are skipped, except in CI, where they fail.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client
from PIL import Image

from mai_tools._tools import TOOLS
from mai_tools.emulator import RunningEmulator
from mcp_server import Settings, create_server
from mcp_server._settings import env_name, options
from mcpb import build
from tests.packaging.conftest import ROOT, Built
from tests.support.emulators import EmulatorPool

BUNDLE = ROOT / "mcpb"


def _manifest() -> dict[str, Any]:
    found: dict[str, Any] = json.loads((BUNDLE / "manifest.json").read_text(encoding="utf-8"))
    return found


def _mcpb() -> str:
    cli = ROOT / ".ci" / "node" / "node_modules" / ".bin" / "mcpb"
    if cli.exists():
        return str(cli)
    message = f"the mcpb CLI is not installed: npm install --prefix .ci/node {build.MCPB_CLI}"
    if os.environ.get("CI"):
        pytest.fail(message + " (the README's test command does)")
    pytest.skip(message)


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_mcpb(), *args], capture_output=True, text=True, timeout=300, check=False
    )


# --------------------------------------------------------------------------- the manifest


async def test_the_manifest_lists_exactly_the_servers_tools() -> None:
    async with Client(create_server(Settings())) as client:
        served = [tool.name for tool in (await client.list_tools()).tools]
    listed = [tool["name"] for tool in _manifest()["tools"]]
    assert listed == served == [*(spec.name for spec in TOOLS), "list_recent_jobs"]
    assert _manifest()["tools_generated"] is False


def test_the_key_is_sensitive_user_config_passed_as_the_variable_the_server_reads() -> None:
    manifest = _manifest()
    key = manifest["user_config"]["api_key"]
    assert key["sensitive"] is True
    assert key["required"] is True
    env = manifest["server"]["mcp_config"]["env"]
    assert env["PIXAZO_API_KEY"] == "${user_config.api_key}"
    read = {env_name(name) for name, _, _ in options()}
    assert set(env) - {"PYTHONPATH"} <= read
    # Every user_config entry reaches the server, and nothing else is asked for.
    used = set(re.findall(r"\$\{user_config\.(\w+)\}", json.dumps(manifest["server"])))
    assert used == set(manifest["user_config"])


def test_the_manifest_runs_the_bundled_python_server() -> None:
    server = _manifest()["server"]
    assert server["type"] == "python"
    assert server["entry_point"] == "server/main.py"
    assert (BUNDLE / server["entry_point"]).is_file()
    assert server["mcp_config"]["args"] == ["${__dirname}/server/main.py"]
    assert server["mcp_config"]["env"]["PYTHONPATH"] == "${__dirname}/server/lib"


def test_the_icon_is_a_square_png() -> None:
    assert _manifest()["icon"] == "icon.png"
    with Image.open(BUNDLE / "icon.png") as icon:
        assert icon.format == "PNG"
        assert icon.size == (512, 512)  # the size Claude Desktop recommends


def test_the_official_cli_validates_the_manifest() -> None:
    proc = _run("validate", str(BUNDLE / "manifest.json"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Manifest schema validation passes" in proc.stdout


def test_a_bundle_for_another_version_is_refused(built: Built, tmp_path: Path) -> None:
    renamed = tmp_path / built.wheel.name.replace("0.", "9.", 1)
    with zipfile.ZipFile(built.wheel) as source, zipfile.ZipFile(renamed, "w") as target:
        for item in source.infolist():
            data = source.read(item)
            if item.filename.endswith(".dist-info/METADATA"):
                data = re.sub(rb"(?m)^Version: .*$", b"Version: 9.9.9", data)
            target.writestr(item, data)
    with pytest.raises(build.BuildError, match=r"manifest\.json says .*; the wheel is 9\.9\.9"):
        build.stage(renamed, tmp_path / "stage")


# --------------------------------------------------------------------------- the packed bundle


@pytest.fixture(scope="module")
def packed(built: Built, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The bundle staged from the built wheel, packed by ``mcpb pack``, then unpacked (what a
    host installs)."""
    cli = _mcpb()
    work = tmp_path_factory.mktemp("mcpb")
    staged = build.stage(built.wheel, work / "stage")
    out = build.pack(staged, work / "mai-tools.mcpb", cli=[cli])
    unpacked = work / "installed"
    with zipfile.ZipFile(out) as archive:
        archive.extractall(unpacked)
    yield unpacked
    shutil.rmtree(work, ignore_errors=True)


def _substitute(value: str, bundle: Path, user_config: dict[str, str]) -> str:
    """What a host does to ``mcp_config`` (an optional setting left unset becomes empty)."""
    value = value.replace("${__dirname}", str(bundle))
    return re.sub(r"\$\{user_config\.(\w+)\}", lambda m: user_config.get(m.group(1), ""), value)


@pytest.mark.slow
async def test_the_packed_bundles_server_lists_its_tools_and_draws(
    packed: Path, emulators: EmulatorPool, tmp_path: Path
) -> None:
    manifest = json.loads((packed / "manifest.json").read_text(encoding="utf-8"))
    major, minor = sys.version_info[:2]
    assert manifest["compatibility"]["platforms"] == [sys.platform]
    assert (
        manifest["compatibility"]["runtimes"]["python"] == f">={major}.{minor},<{major}.{minor + 1}"
    )
    assert (packed / "icon.png").is_file()

    emu: RunningEmulator = emulators()
    output = tmp_path / "saved"
    config = {"api_key": emu.api_key, "output_dir": str(output)}  # edit_dir left unset
    mcp_config = manifest["server"]["mcp_config"]
    # "python" is the host's Python: here the interpreter this venv was made from, which has
    # none of mai-tools' dependencies, so the server runs only from what the bundle carries.
    runtime = tmp_path / "runtime"
    runtime.mkdir()
    (runtime / mcp_config["command"]).symlink_to(getattr(sys, "_base_executable", sys.executable))
    env = {
        "PATH": f"{runtime}{os.pathsep}{os.environ['PATH']}",
        "HOME": os.environ["HOME"],
        "MAI_JOB_BOOK": os.environ["MAI_JOB_BOOK"],  # the test's private book
        "XDG_CACHE_HOME": os.environ["XDG_CACHE_HOME"],
        # The bundle asks for no gateway URL (it is always the real one): the test adds it.
        "PIXAZO_BASE_URL": emu.base_url,
        **{k: _substitute(v, packed, config) for k, v in mcp_config["env"].items()},
    }
    params = StdioServerParameters(
        command=mcp_config["command"],
        args=[_substitute(a, packed, config) for a in mcp_config["args"]],
        env=env,
    )
    with (tmp_path / "stderr.log").open("w+") as errlog:
        async with Client(stdio_client(params, errlog=errlog)) as client:
            names = [tool.name for tool in (await client.list_tools()).tools]
            result = await client.call_tool("generate_image", {"prompt": "from the bundle"})
        errlog.seek(0)
        stderr = errlog.read()
    assert names == [tool["name"] for tool in manifest["tools"]]
    assert not result.is_error, stderr
    assert len(list(output.iterdir())) == 1  # saved where the user_config said
    assert emu.api_key not in stderr
