"""``mai-image-mcp`` refuses someone else's ``mcp_server`` package, and says what to do.

PyPI's ``mcp-server`` (0.1.4) installs a top-level ``mcp_server`` package too: pip writes its
``__init__.py`` over ours in the same folder, and that file imports ``mcp.server.fastmcp``, which
mcp 2 lacks, so the server used to die with a traceback naming neither package. These tests
reproduce that on the real built wheel, installed by pip, with the other package's files written
the way pip writes them, and run the installed console script.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from mai_tools._mcp_identity import foreign_mcp_server

# mcp-server 0.1.4's package, as far as importing it goes.
FOREIGN_INIT = '"""Math Calculator MCP Server."""\n\nfrom . import server\n'
FOREIGN_SERVER = "from mcp.server.fastmcp import FastMCP, Context\n\nmcp = FastMCP('Math')\n"


def _run(
    args: list[str], *, pythonpath: list[Path], cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIXAZO_", "MAI_MCP_"))}
    env["PYTHONPATH"] = os.pathsep.join(map(str, pythonpath))
    return subprocess.run(
        args,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _run_installed(
    site: Path, *args: str, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run with the wheel installed in ``site`` as the only mai-tools: ``-S`` skips the .pth
    files, so this checkout (an editable install of this environment) is not on sys.path; the
    dependencies come from this environment's site-packages."""
    deps = Path(sysconfig.get_paths()["purelib"])
    return _run([sys.executable, "-S", *args], pythonpath=[site, deps], cwd=cwd)


def _install_foreign_over(site: Path, init: str = FOREIGN_INIT) -> None:
    """What ``pip install mcp-server`` does to a site-packages holding mai-tools."""
    (site / "mcp_server" / "__init__.py").write_text(init)
    (site / "mcp_server" / "server.py").write_text(FOREIGN_SERVER)
    info = site / "mcp_server-0.1.4.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: mcp-server\nVersion: 0.1.4\n")
    (info / "RECORD").write_text(
        "mcp_server/__init__.py,,\nmcp_server/server.py,,\nmcp_server-0.1.4.dist-info/RECORD,,\n"
    )


def _assert_refused(proc: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stdout == ""  # on stdio, stdout is the MCP protocol's
    assert "Traceback" not in proc.stderr
    for needle in needles:
        assert needle in proc.stderr, proc.stderr


def test_this_checkout_is_ours() -> None:
    assert foreign_mcp_server() is None


def test_the_installed_wheel_starts(installed: Path) -> None:
    # A regular install: the RECORD hash of mcp_server/__init__.py matches, so no false alarm.
    proc = _run_installed(installed, str(installed / "bin" / "mai-image-mcp"), "--help")
    assert proc.returncode == 0, proc.stderr
    assert "MCP server for Microsoft MAI Image 2.5" in proc.stdout


def test_a_package_installed_over_ours_is_named_with_the_fix(installed: Path) -> None:
    _install_foreign_over(installed)
    proc = _run_installed(installed, str(installed / "bin" / "mai-image-mcp"))
    _assert_refused(
        proc,
        str(installed / "mcp_server" / "__init__.py"),
        "mcp-server 0.1.4 installed its own mcp_server package over it",
        f"{sys.executable} -m pip uninstall mcp-server",
        f"{sys.executable} -m pip install --force-reinstall --no-deps mai-tools",
    )


def test_python_m_mcp_server_refuses_an_importable_foreign_init(installed: Path) -> None:
    # A foreign __init__.py that imports cleanly lets our __main__ run: its main() checks too.
    _install_foreign_over(installed, init='"""Another mcp_server."""\n')
    proc = _run_installed(installed, "-m", "mcp_server", cwd=installed)
    _assert_refused(proc, "mcp-server 0.1.4 installed its own mcp_server package over it")


def test_uninstalling_the_other_package_took_our_init(installed: Path) -> None:
    (installed / "mcp_server" / "__init__.py").unlink()  # what `pip uninstall mcp-server` leaves
    fix = f"{sys.executable} -m pip install --force-reinstall --no-deps mai-tools"
    proc = _run_installed(installed, str(installed / "bin" / "mai-image-mcp"))
    _assert_refused(proc, "has no __init__.py", fix)
    proc = _run_installed(installed, "-m", "mcp_server", cwd=installed)
    _assert_refused(proc, "has no __init__.py", fix)


def test_a_package_earlier_on_sys_path_is_refused(tmp_path: Path) -> None:
    # The console script of this environment (an editable install), shadowed through PYTHONPATH.
    script = shutil.which("mai-image-mcp", path=os.path.dirname(sys.executable))
    if script is None:
        pytest.skip("the mai-image-mcp console script is not installed next to this Python")
    (tmp_path / "mcp_server").mkdir()
    (tmp_path / "mcp_server" / "__init__.py").write_text(FOREIGN_INIT)
    (tmp_path / "mcp_server" / "server.py").write_text(FOREIGN_SERVER)
    proc = _run([script, "--help"], pythonpath=[tmp_path])
    _assert_refused(
        proc,
        f"finds {tmp_path / 'mcp_server' / '__init__.py'}",
        "comes first on sys.path",
        f"Take {tmp_path} off PYTHONPATH",
    )
