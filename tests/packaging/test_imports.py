"""What importing mai-tools costs a process that never uses most of it.

The pytest plugin is loaded by every pytest run in an environment with mai-tools, so it must not
pull in the emulator's server stack or the adapters' frameworks; ``import mai_tools`` loads the
models and exceptions but not httpx, asyncio or the clients (they load on first use, and every
public name still resolves); and none of it changes how other libraries are imported. Each
check runs in a fresh interpreter: this test process has imported everything already.
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


# --------------------------------------------------------------------------- other libraries

# What importing mai_tools and using its clients may not do: change how anyone else imports
# (no finder on sys.meta_path, no patched module of another library).
LEAVES_IMPORTS_ALONE = (
    "import mai_tools",
    "from mai_tools import MAIImageClient, AsyncMAIImageClient, WebhookReceiver",
    "import mai_tools.langchain",
)


@pytest.mark.parametrize("code", LEAVES_IMPORTS_ALONE)
def test_mai_tools_changes_nothing_about_how_other_libraries_import(code: str) -> None:
    probe = (
        "import sys\n"
        "finders = list(sys.meta_path)\n"
        f"{code}\n"
        "assert sys.meta_path == finders, sys.meta_path\n"
        "import httpx\n"
        "assert httpx.__loader__ is httpx.__spec__.loader\n"
        "assert '__getattr__' not in vars(httpx)\n"
    )
    _passes(probe)
