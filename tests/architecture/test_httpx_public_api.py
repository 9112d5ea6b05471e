"""Only httpx's and httpcore's public API: no private module, name or attribute of theirs.

A private name can change in any release (httpx 0.28 moved and renamed several) and bypasses
what the library guarantees; the clients use plain ``httpx.Client``/``AsyncClient`` with
public ``limits=``, and tests observe connections through httpcore's documented debug log.

Every ``.py`` file of the project is read with ``ast`` and the test fails on:

- an import of a private module or name: ``import httpx._main``, ``from httpx._utils import
  ...``, ``from httpcore import _x``;
- an attribute with a private name read from the modules themselves: ``httpx._something``;
- an attribute access (or a ``getattr``/``hasattr``/``setattr`` with a constant name) whose
  name is private to httpx or httpcore (set on ``self``, or a private method or class
  attribute, in their installed sources) and is not also a private name of this project:
  ``client._http._transport._pool``. Names both use (``_state``, ``_lock``, ...) are taken as
  ours; the attribute's object is not known to ``ast``.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator
from pathlib import Path

import httpcore
import httpx

ROOT = Path(__file__).resolve().parents[2]
TREES = ("mai_tools", "mcp_server", "tests", "examples", "benchmarks")
LIBRARIES = ("httpx", "httpcore")
NAME_FUNCTIONS = ("getattr", "hasattr", "setattr", "delattr")


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _private_names(files: Iterable[Path]) -> set[str]:
    """Private attribute, method and class-attribute names that ``files`` define."""
    names: set[str] = set()
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                names.add(node.attr)
            elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                names.add(node.name)
            if isinstance(node, ast.ClassDef):
                for statement in node.body:
                    targets = (
                        statement.targets
                        if isinstance(statement, ast.Assign)
                        else [statement.target]
                        if isinstance(statement, ast.AnnAssign)
                        else []
                    )
                    names.update(t.id for t in targets if isinstance(t, ast.Name))
    return {name for name in names if _is_private(name)}


def _project_files() -> list[Path]:
    return sorted(path for tree in TREES for path in (ROOT / tree).rglob("*.py"))


def _library_files() -> list[Path]:
    return [
        path
        for module in (httpx, httpcore)
        for path in Path(str(module.__file__)).parent.rglob("*.py")
    ]


def _is_library(module: str | None) -> bool:
    return module is not None and module.split(".")[0] in LIBRARIES


def violations(tree: ast.AST, library_private: set[str]) -> Iterator[tuple[int, str]]:
    """(line, what) for each use of a private httpx/httpcore name in ``tree``."""
    aliases: set[str] = set()  # local names bound to the httpx/httpcore modules
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if _is_library(alias.name):
                    if any(_is_private(part) for part in alias.name.split(".")):
                        yield node.lineno, f"import {alias.name}"
                    if alias.asname or "." not in alias.name:
                        aliases.add(alias.asname or alias.name)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and _is_library(node.module):
            module = node.module or ""
            if any(_is_private(part) for part in module.split(".")):
                yield node.lineno, f"from {module} import ..."
            for alias in node.names:
                if _is_private(alias.name):
                    yield node.lineno, f"from {module} import {alias.name}"
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _is_private(node.attr):
            if isinstance(node.value, ast.Name) and node.value.id in aliases:
                yield node.lineno, f"{node.value.id}.{node.attr}"
            elif node.attr in library_private:
                yield node.lineno, f".{node.attr} (private to httpx/httpcore)"
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in NAME_FUNCTIONS
            and len(node.args) >= 2
            and isinstance(node.args[1], ast.Constant)
            and isinstance(node.args[1].value, str)
            and node.args[1].value in library_private
        ):
            yield node.lineno, f"{node.func.id}(..., {node.args[1].value!r})"


def _library_private() -> set[str]:
    return _private_names(_library_files()) - _private_names(_project_files())


def test_no_private_httpx_or_httpcore_name_is_used() -> None:
    library_private = _library_private()
    found = [
        f"{path.relative_to(ROOT)}:{line}: {what}"
        for path in _project_files()
        for line, what in violations(ast.parse(path.read_text(encoding="utf-8")), library_private)
    ]
    assert found == []


def test_the_checker_sees_each_kind_of_private_use() -> None:
    source = (
        "import httpx\n"
        "import httpx._main\n"
        "import httpcore as hc\n"
        "from httpx._utils import get_environment_proxies\n"
        "from httpcore import _exceptions\n"
        "hc._trace\n"
        "client._http._transport._pool.connections\n"
        "getattr(transport, '_pool')\n"
        "self._state = 1\n"  # a name this project uses too: not flagged
        "httpx.__version__\n"  # dunders are public
        "httpx.AsyncClient(limits=httpx.Limits(max_connections=None))\n"
    )
    found = list(violations(ast.parse(source), {"_transport", "_pool"}))
    assert sorted(line for line, _ in found) == [2, 4, 5, 6, 7, 7, 8]


def test_the_library_names_are_found() -> None:
    library_private = _library_private()
    assert {"_transport", "_pool", "_mounts", "_transport_for_url"} <= library_private
    assert "_state" not in library_private  # this project's too
