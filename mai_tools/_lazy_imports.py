"""Import httpx without its command-line client: ``import mai_tools`` stays cheap.

httpx's ``__init__`` ends with ``from ._main import main`` (inside ``try/except ImportError``),
and ``httpx._main`` imports click, rich and pygments whenever they are installed, as they are
next to mai-tools: about 45 ms of every ``import mai_tools`` (and every pytest run, through the
plugin) for a CLI that library code never runs.

This module imports httpx once, before anything else in mai_tools does, with a placeholder
``httpx._main`` in ``sys.modules`` so httpx's own import skips the CLI. It then removes the
placeholder from both ``sys.modules`` and httpx's namespace and gives httpx a module
``__getattr__`` (PEP 562), so the first read of ``httpx.main`` (``from httpx import main``,
``CliRunner().invoke(httpx.main, ...)``) imports the real ``httpx._main`` and returns the real
click command, exactly what httpx would have given. ``import httpx._main`` also gets the real
module, since the placeholder is gone from ``sys.modules``.

Why not a callable stand-in for ``main``: it would not be the click command some callers
expect (``isinstance(..., click.Command)``, ``.params``); a lazy attribute is the object itself.
Nothing changes when httpx was imported before mai_tools (its CLI is loaded already), nor for
the ``httpx`` console script (it does not import mai_tools).
"""

from __future__ import annotations

import sys
from types import ModuleType
from typing import Any

__all__: list[str] = []

_CLI_MISSING = (
    "The httpx command line client could not run because the required "
    "dependencies were not installed.\nMake sure you've installed "
    "everything with: pip install 'httpx[cli]'"
)


def _cli_missing() -> None:
    # httpx's own stand-in when click/rich/pygments are missing, with the same words.
    print(_CLI_MISSING)
    sys.exit(1)


def _load_main() -> Any:
    import importlib

    try:
        main = importlib.import_module("httpx._main").main
    except ImportError:
        return _cli_missing
    main.__module__ = "httpx"  # as httpx's __init__ does for every public name
    return main


def _httpx_getattr(name: str) -> Any:
    if name == "main":
        main = _load_main()
        vars(sys.modules["httpx"])["main"] = main  # later reads skip __getattr__
        return main
    raise AttributeError(f"module 'httpx' has no attribute {name!r}")


def _import_httpx_without_cli() -> None:
    if "httpx" in sys.modules or "httpx._main" in sys.modules:
        return  # too late to skip it, or someone wants it: leave httpx as it is

    def placeholder_main() -> None:  # what httpx's `from ._main import main` binds, briefly
        raise AssertionError("unreachable: removed from httpx right after its import")

    placeholder = ModuleType("httpx._main")
    vars(placeholder)["main"] = placeholder_main
    sys.modules["httpx._main"] = placeholder
    try:
        import httpx
    finally:
        if sys.modules.get("httpx._main") is placeholder:
            del sys.modules["httpx._main"]
    namespace = vars(httpx)
    if namespace.get("main") is not placeholder_main:
        return  # this httpx did not take the placeholder (a later one might not import its CLI)
    if "__getattr__" in namespace or "__dir__" in namespace:
        namespace["main"] = _load_main()  # never replace module hooks of httpx's own
        return
    del namespace["main"]
    namespace["__getattr__"] = _httpx_getattr
    namespace["__dir__"] = lambda: sorted({*namespace, "main"})  # dir() and completion list it


_import_httpx_without_cli()
