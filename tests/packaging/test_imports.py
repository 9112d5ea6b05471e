"""What importing mai-tools costs a process that never uses most of it.

The pytest plugin is loaded by every pytest run in an environment with mai-tools, so it must not
pull in the emulator's server stack or the adapters' frameworks; ``import mai_tools`` must not
load httpx's command-line client (click, rich, pygments), while ``httpx.main`` keeps working.
Each check runs in a fresh interpreter: this test process has imported everything already.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HEAVY_FOR_THE_PLUGIN = ("PIL", "starlette", "uvicorn", "mcp", "langchain_core")
HTTPX_CLI_STACK = ("click", "rich", "pygments")


def _python(code: str, *, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _loaded(code: str, names: tuple[str, ...]) -> list[str]:
    """Run ``code`` in a fresh interpreter; return which of ``names`` it left in sys.modules."""
    probe = f"{code}\nimport json, sys\nprint(json.dumps([n for n in {names} if n in sys.modules]))"
    proc = _python(probe)
    assert proc.returncode == 0, proc.stderr
    loaded: list[str] = json.loads(proc.stdout.splitlines()[-1])
    return loaded


# --------------------------------------------------------------------------- the pytest plugin


def test_importing_the_plugin_loads_no_server_or_adapter_stack() -> None:
    assert _loaded("import mai_tools.emulator.pytest_plugin", HEAVY_FOR_THE_PLUGIN) == []


def test_the_emulator_package_loads_its_server_only_on_use() -> None:
    # The plugin's module path runs mai_tools/emulator/__init__.py: its names are lazy.
    assert _loaded("import mai_tools.emulator", HEAVY_FOR_THE_PLUGIN) == []
    assert _loaded("from mai_tools.emulator import EmulatorConfig", HEAVY_FOR_THE_PLUGIN) == []
    assert "uvicorn" in _loaded("from mai_tools.emulator import run_emulator", ("uvicorn",))


def test_the_emulator_package_names_all_resolve() -> None:
    code = (
        "import mai_tools.emulator as e\n"
        "missing = [n for n in e.__all__ if getattr(e, n, None) is None]\n"
        "assert not missing, missing\n"
        "assert set(e.__all__) <= set(dir(e))\n"
        "try:\n    e.no_such_name\nexcept AttributeError as exc:\n    print(exc)\n"
    )
    proc = _python(code)
    assert proc.returncode == 0, proc.stderr
    assert "'mai_tools.emulator' has no attribute 'no_such_name'" in proc.stdout


def test_a_pytest_session_loading_the_entry_point_stays_light(tmp_path: Path) -> None:
    # The way users meet the plugin: pytest loads it by its pytest11 entry point name. Other
    # installed plugins are switched off so only ours is judged.
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    (tmp_path / "test_probe.py").write_text(
        "import sys\n\n"
        f"HEAVY = {HEAVY_FOR_THE_PLUGIN!r}\n\n"
        "def test_plugin_loaded_light(pytestconfig):\n"
        "    assert pytestconfig.pluginmanager.hasplugin('mai_tools_emulator')\n"
        "    assert [n for n in HEAVY if n in sys.modules] == []\n\n"
        "def test_config_fixture_needs_no_server(mai_emulator_config):\n"
        "    assert mai_emulator_config.max_duration == 0.5\n"
        "    assert [n for n in HEAVY if n in sys.modules] == []\n"
    )
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "mai_tools_emulator"],
        cwd=tmp_path,
        env={**os.environ, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "2 passed" in proc.stdout


# --------------------------------------------------------------------------- httpx's CLI


def test_import_mai_tools_skips_the_httpx_cli() -> None:
    assert _loaded("import mai_tools", (*HTTPX_CLI_STACK, "httpx._main")) == []
    # Listing httpx's names shows main without loading it.
    code = "import mai_tools, httpx\nassert 'main' in dir(httpx) and 'Client' in dir(httpx)"
    assert _loaded(code, HTTPX_CLI_STACK) == []


def test_httpx_main_is_still_the_real_cli() -> None:
    code = (
        "import mai_tools, httpx, sys, click\n"
        "main = httpx.main\n"
        "assert isinstance(main, click.Command), type(main)\n"
        "assert main is sys.modules['httpx._main'].main\n"
        "assert main.__module__ == 'httpx'\n"
        "from httpx import main as again\n"
        "assert again is main\n"
        "import httpx._main\n"
        "assert callable(httpx._main.print_help)\n"
    )
    proc = _python(code)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("first", ["import mai_tools, httpx", "import httpx, mai_tools"])
def test_httpx_help_is_what_httpx_alone_prints(first: str) -> None:
    # `--help` runs the real CLI (rich output, exit 0) and touches no network.
    alone = _python("import httpx; httpx.main(['--help'])")
    assert alone.returncode == 0, alone.stderr
    assert "Usage: httpx <URL> [OPTIONS]" in alone.stdout
    proc = _python(f"{first}; httpx.main(['--help'])")
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, alone.stdout, alone.stderr)


def test_httpx_main_without_its_cli_dependencies_says_what_httpx_says() -> None:
    # With click missing (sys.modules[...] = None makes its import fail), httpx's own stand-in
    # prints an install hint and exits 1; the lazy one must do the same, not crash.
    block = "import sys; sys.modules['click'] = None"
    alone = _python(f"{block}; import httpx; httpx.main()")
    assert alone.returncode == 1
    assert "pip install 'httpx[cli]'" in alone.stdout
    proc = _python(f"{block}; import mai_tools, httpx; httpx.main()")
    assert (proc.returncode, proc.stdout) == (1, alone.stdout)


def test_httpx_imported_first_is_left_alone() -> None:
    code = (
        "import httpx, sys\n"
        "before = vars(httpx)['main']\n"
        "import mai_tools\n"
        "assert vars(httpx)['main'] is before\n"
        "assert '__getattr__' not in vars(httpx)\n"
    )
    proc = _python(code)
    assert proc.returncode == 0, proc.stderr
