"""The API reference (docs/reference/) covers every exported name once and names nothing else.

mkdocstrings renders a ``::: module.Name`` line of a page into that name's entry; the build
(``mkdocs build --strict``, run once by the test command) fails on links it cannot resolve, but
not on a name that no page mentions. These tests catch that, and an entry for a name that is no
longer exported, by reading the pages.
"""

from __future__ import annotations

import importlib
import inspect
import re
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = ROOT / "docs" / "reference"

#: The public modules whose ``__all__`` the reference documents.
PUBLIC_MODULES = (
    "mai_tools",
    "mai_tools.batch",
    "mai_tools.emulator",
    "mai_tools.langchain",
    "mai_tools.middleware",
    "mai_tools.jobbook",
    "mcp_server",
)
#: Documented besides ``__all__``: the fixtures of the pytest plugin mai-tools installs.
PLUGIN = "mai_tools.emulator.pytest_plugin"
FIXTURES = ("mai_emulator", "mai_emulator_config", "mai_emulator_clock")

_DIRECTIVE = re.compile(r"^::: (\S+)\s*$", flags=re.MULTILINE)
_LINK = re.compile(r"\]\[([A-Za-z_][\w.]*)\]")


def exported() -> dict[str, Any]:
    """``{"module.Name": object}`` for every name in the public modules' ``__all__``."""
    names: dict[str, Any] = {}
    for module_name in PUBLIC_MODULES:
        module = importlib.import_module(module_name)
        for name in module.__all__:
            names[f"{module_name}.{name}"] = getattr(module, name)
    return names


def directives() -> dict[str, str]:
    """``{"module.Name": "page.md"}`` for every ``:::`` entry of the reference pages."""
    found: dict[str, str] = {}
    for page in sorted(REFERENCE.glob("*.md")):
        for identifier in _DIRECTIVE.findall(page.read_text(encoding="utf-8")):
            assert identifier not in found, f"{identifier} has two entries"
            found[identifier] = page.name
    return found


def links(page: str) -> set[str]:
    return set(_LINK.findall((REFERENCE / page).read_text(encoding="utf-8")))


def identity(value: Any) -> object:
    # Classes, functions and type aliases are the same object under every module that exports
    # them; constants (small ints, strings) may be equal without being the same name.
    if inspect.isclass(value) or inspect.isfunction(value):
        return (value.__module__, value.__qualname__)
    return id(value)


def test_every_exported_name_has_one_entry_or_links_to_it() -> None:
    names = exported()
    entries = directives()
    documented = {identity(names[i]): i for i in entries if i in names}
    index = links("index.md")
    missing = []
    for path, value in names.items():
        if path in entries:
            continue
        home = documented.get(identity(value))
        if home is None or path not in index:
            missing.append(path)
    assert not missing, (
        "exported but not in docs/reference/ (add a `::: name` entry to the page of its group, "
        f"or, for a re-export, a link to it in index.md's 'By module'): {missing}"
    )


def test_an_object_exported_twice_is_documented_once() -> None:
    names = exported()
    homes: dict[object, list[str]] = {}
    for identifier in directives():
        if identifier in names:
            homes.setdefault(identity(names[identifier]), []).append(identifier)
    twice = {tuple(paths) for paths in homes.values() if len(paths) > 1}
    assert not twice, f"documented more than once (keep one entry, link the others): {twice}"


def test_the_reference_names_only_exported_names() -> None:
    names = exported()
    fixtures = {f"{PLUGIN}.{fixture}" for fixture in FIXTURES}
    stray = [i for i in directives() if i not in names and i not in fixtures]
    assert not stray, f"a reference entry names something no public module exports: {stray}"
    stray_links = [link for link in links("index.md") if link.count(".") and link not in names]
    assert not stray_links, f"index.md links a name that is not exported: {stray_links}"


def test_the_index_lists_every_module_and_its_names() -> None:
    index = links("index.md")
    missing = [path for path in exported() if path not in index]
    assert not missing, f"index.md's 'By module' lacks: {missing}"


def test_the_pytest_fixtures_are_documented_and_exist() -> None:
    plugin = importlib.import_module(PLUGIN)
    entries = directives()
    for fixture in FIXTURES:
        assert hasattr(plugin, fixture), f"{PLUGIN} has no fixture {fixture}"
        assert f"{PLUGIN}.{fixture}" in entries


def test_every_reference_page_is_in_the_nav() -> None:
    nav = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    for page in REFERENCE.glob("*.md"):
        assert f"reference/{page.name}" in nav, f"docs/reference/{page.name} is not in the nav"


_TREE_LINE = re.compile(r"^(?P<indent> *)- \[`(?P<name>\w+)`\]\[(?P<path>[\w.]+)\]", re.MULTILINE)


def test_the_error_hierarchy_drawn_matches_the_classes() -> None:
    """errors.md draws the exception tree; each class sits under one of its own bases, and
    every exported exception is in it."""
    text = (REFERENCE / "errors.md").read_text(encoding="utf-8")
    names = exported()
    parents: list[type[BaseException]] = []
    drawn = set()
    for match in _TREE_LINE.finditer(text):
        depth = len(match["indent"]) // 4
        cls = names[match["path"]]
        del parents[depth:]
        if parents:
            assert parents[-1] in cls.__bases__, f"{cls.__name__} is drawn under a non-base"
        parents.append(cls)
        drawn.add(cls)
    exceptions = {v for v in names.values() if inspect.isclass(v) and issubclass(v, BaseException)}
    assert exceptions - drawn == set(), "exported exceptions missing from errors.md's tree"


def test_each_public_module_has_an_anchor_for_its_docstring_links() -> None:
    # Docstrings link modules (:mod:`mai_tools.jobbook`): the heading of the module's page
    # carries its name as id ({ #mai_tools.jobbook }), which autorefs resolves.
    text = "\n".join(page.read_text(encoding="utf-8") for page in REFERENCE.glob("*.md"))
    missing = [m for m in PUBLIC_MODULES if f"{{ #{m} }}" not in text]
    assert not missing, f"no heading with these modules' ids in docs/reference/: {missing}"
