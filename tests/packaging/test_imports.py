"""What importing mai-tools costs a process that never uses most of it.

The pytest plugin is loaded by every pytest run in an environment with mai-tools, so it must not
pull in the emulator's server stack or the adapters' frameworks; ``import mai_tools`` loads the
models and exceptions but not httpx, asyncio or the clients (they load on first use, and every
public name still resolves); nothing of mai_tools loads httpx's command-line client (click,
rich, pygments), while ``httpx.main`` keeps working. Each check runs in a fresh interpreter:
this test process has imported everything already.
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
# What `import mai_tools` leaves for first use: the I/O stack and the adapters' frameworks.
DEFERRED_BY_THE_PACKAGE = (
    "httpx",
    "httpcore",
    "h11",
    "asyncio",
    "ssl",
    "mai_tools._config",
    "mai_tools._policies",
    "mai_tools._download",
    "mai_tools._flow",
    "mai_tools._client",
    "mai_tools._async_client",
    "mai_tools._webhooks",
    "mai_tools.langchain",
    "mai_tools.emulator",
    "langchain_core",
    "mcp",
    "PIL",
    *HTTPX_CLI_STACK,
)
MODELS = ("GenerateRequest", "EditRequest", "Job", "JobOutput", "JobStatus", "ImageResult")


def _python(code: str, *, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _passes(code: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` (its own asserts) in a fresh interpreter; it must exit 0."""
    proc = _python(code)
    assert proc.returncode == 0, proc.stderr
    return proc


def _loaded(code: str, names: tuple[str, ...]) -> list[str]:
    """Run ``code`` in a fresh interpreter; return which of ``names`` it left in sys.modules."""
    probe = f"{code}\nimport json, sys\nprint(json.dumps([n for n in {names} if n in sys.modules]))"
    proc = _passes(probe)
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
    proc = _passes(code)
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


# --------------------------------------------------------------------------- import mai_tools


def test_import_mai_tools_leaves_the_client_stack_for_first_use() -> None:
    assert _loaded("import mai_tools", DEFERRED_BY_THE_PACKAGE) == []


def test_import_mai_tools_builds_no_pydantic_model() -> None:
    # defer_build: each model's validator is built on its first use, not by the import.
    code = (
        "import mai_tools\n"
        f"built = [n for n in {MODELS!r} if getattr(mai_tools, n).__pydantic_complete__]\n"
        "assert built == [], built\n"
        "mai_tools.JobStatus.from_body({'request_id': 'r', 'status': 'COMPLETED'})\n"
        "assert mai_tools.JobStatus.__pydantic_complete__\n"
    )
    _passes(code)


@pytest.mark.parametrize(
    ("name", "module"),
    [
        ("MAIImageClient", "mai_tools._client"),
        ("AsyncMAIImageClient", "mai_tools._async_client"),
        ("RetryPolicy", "mai_tools._policies"),
        ("WebhookReceiver", "mai_tools._webhooks"),
    ],
)
def test_a_deferred_name_loads_its_module_on_first_use(name: str, module: str) -> None:
    code = (
        f"from mai_tools import {name}\nimport sys\nassert {name} is sys.modules[{module!r}].{name}"
    )
    _passes(code)
    assert "mai_tools.langchain" not in _loaded(
        f"from mai_tools import {name}", ("mai_tools.langchain",)
    )


def test_every_public_name_resolves_and_is_listed() -> None:
    code = (
        "import mai_tools as m\n"
        "assert set(m.__all__) <= set(dir(m)), set(m.__all__) - set(dir(m))\n"
        "missing = [n for n in m.__all__ if getattr(m, n, None) is None]\n"
        "assert not missing, missing\n"
        "ns = {}\n"
        "exec('from mai_tools import *', ns)\n"
        "assert set(m.__all__) <= set(ns), set(m.__all__) - set(ns)\n"
        "try:\n    m.no_such_name\nexcept AttributeError as exc:\n    print(exc)\n"
    )
    proc = _passes(code)
    assert "module 'mai_tools' has no attribute 'no_such_name'" in proc.stdout


# --------------------------------------------------------------------------- httpx's CLI

LOADS_HTTPX = (
    "from mai_tools import MAIImageClient",
    "import mai_tools._client",
    "from mai_tools import AsyncMAIImageClient",
    "import mai_tools, httpx",
)


@pytest.mark.parametrize("code", LOADS_HTTPX)
def test_mai_tools_loads_httpx_without_its_cli(code: str) -> None:
    assert _loaded(code, (*HTTPX_CLI_STACK, "httpx._main")) == []
    # Listing httpx's names shows main without loading it.
    listed = f"{code}\nimport httpx\nassert 'main' in dir(httpx) and 'Client' in dir(httpx)"
    assert _loaded(listed, HTTPX_CLI_STACK) == []


def test_the_finder_is_gone_once_httpx_is_imported_and_leaves_no_trace() -> None:
    code = (
        "import sys, mai_tools\n"
        "def ours():\n"
        "    return [f for f in sys.meta_path if type(f).__module__ == 'mai_tools._lazy_imports']\n"
        "assert len(ours()) == 1, sys.meta_path\n"
        "import importlib; importlib.reload(mai_tools._lazy_imports)\n"
        "assert len(ours()) == 1, sys.meta_path\n"
        "import httpx\n"
        "assert ours() == [], sys.meta_path\n"
        "assert httpx.__loader__ is httpx.__spec__.loader\n"
        "assert type(httpx.__loader__).__module__ != 'mai_tools._lazy_imports'\n"
        "assert httpx.Client and httpx.__file__.endswith('__init__.py')\n"
    )
    _passes(code)


def test_httpx_main_is_still_the_real_cli() -> None:
    code = (
        "from mai_tools import MAIImageClient\n"
        "import httpx, sys, click\n"
        "main = httpx.main\n"
        "assert isinstance(main, click.Command), type(main)\n"
        "assert main is sys.modules['httpx._main'].main\n"
        "assert main.__module__ == 'httpx'\n"
        "from httpx import main as again\n"
        "assert again is main\n"
        "import httpx._main\n"
        "assert callable(httpx._main.print_help)\n"
    )
    _passes(code)


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
        "from mai_tools import MAIImageClient\n"
        "assert vars(httpx)['main'] is before\n"
        "assert '__getattr__' not in vars(httpx)\n"
        "assert not [f for f in sys.meta_path if type(f).__module__ == 'mai_tools._lazy_imports']\n"
    )
    _passes(code)


def test_the_httpx_cli_imported_by_hand_after_mai_tools_is_the_real_one() -> None:
    # `import httpx._main` imports httpx first (through the finder), then the real CLI module.
    code = (
        "import mai_tools\n"
        "import httpx._main\n"
        "import httpx, click\n"
        "assert isinstance(httpx.main, click.Command), type(httpx.main)\n"
        "assert httpx.main is httpx._main.main\n"
    )
    _passes(code)
