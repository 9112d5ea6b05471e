"""``mai-image-mcp`` starts mai-tools' ``mcp_server``, or says in one line how to get it back.

PyPI's ``mcp-server`` also installs a top-level ``mcp_server`` package: pip writes its files over
ours (its ``__init__.py`` imports ``mcp.server.fastmcp``, which mcp 2 lacks), and a package of
that name earlier on ``sys.path`` shadows ours the same way.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

from mcp import Client, StdioServerParameters

from mai_tools._tools import TOOLS

FIX = "pip uninstall mcp-server && pip install --force-reinstall --no-deps mai-tools"
FOREIGN_INIT = "from mcp.server.fastmcp import FastMCP\n"  # mcp-server 0.1.4's, as it imports


def _run(
    site: Path, *args: str, pythonpath: tuple[Path, ...] = ()
) -> subprocess.CompletedProcess[str]:
    """The installed console script, with the wheel in ``site`` as the only mai-tools (``-S``:
    this checkout's editable install stays off sys.path; dependencies from this environment)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIXAZO_", "MAI_MCP_"))}
    deps = Path(sysconfig.get_paths()["purelib"])
    env["PYTHONPATH"] = os.pathsep.join(map(str, (*pythonpath, site, deps)))
    script = str(site / "bin" / "mai-image-mcp")
    return subprocess.run(
        [sys.executable, "-S", script, *args],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _assert_refused(proc: subprocess.CompletedProcess[str], where: str) -> None:
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stdout == ""  # on stdio, stdout is the MCP protocol's
    (line,) = proc.stderr.splitlines()
    assert where in line
    assert line.endswith(f"fix: {FIX}")


def test_the_installed_wheel_starts(installed: Path) -> None:
    proc = _run(installed, "--help")
    assert proc.returncode == 0, proc.stderr
    assert "MCP server for Microsoft MAI Image 2.5" in proc.stdout


def test_a_package_written_over_ours_is_refused_with_the_fix(installed: Path) -> None:
    (installed / "mcp_server" / "__init__.py").write_text(FOREIGN_INIT)
    _assert_refused(_run(installed), "does not import (No module named 'mcp.server.fastmcp'")


def test_our_init_deleted_is_refused_with_the_fix(installed: Path) -> None:
    (installed / "mcp_server" / "__init__.py").unlink()  # what uninstalling the other one does
    _assert_refused(_run(installed), "not mai-tools'")


def test_a_package_earlier_on_sys_path_is_refused_with_the_fix(
    installed: Path, tmp_path: Path
) -> None:
    shadow = tmp_path / "shadow"
    (shadow / "mcp_server").mkdir(parents=True)
    (shadow / "mcp_server" / "__init__.py").write_text(FOREIGN_INIT)
    proc = _run(installed, "--help", pythonpath=(shadow,))
    _assert_refused(proc, f"finds {shadow / 'mcp_server' / '__init__.py'}")


async def test_the_command_named_like_the_package_is_the_mcp_server(installed: Path) -> None:
    # `uvx mai-tools --emulator` (and a registry client's `uvx mai-tools`) run this script.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIXAZO_", "MAI_MCP_"))}
    deps = Path(sysconfig.get_paths()["purelib"])
    env["PYTHONPATH"] = os.pathsep.join(map(str, (installed, deps)))
    script = str(installed / "bin" / "mai-tools")
    params = StdioServerParameters(
        command=sys.executable, args=["-S", script, "--emulator"], env=env
    )
    async with Client(params) as client:
        names = [tool.name for tool in (await client.list_tools()).tools]
        result = await client.call_tool("generate_image", {"prompt": "from the wheel"})
    assert names == [*(spec.name for spec in TOOLS), "list_recent_jobs"]
    assert not result.is_error
