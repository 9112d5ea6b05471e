"""httpx without its command-line client, imported only when mai_tools first needs it.

httpx's ``__init__`` ends with ``from ._main import main`` (inside ``try/except ImportError``),
and ``httpx._main`` imports click, rich and pygments whenever they are installed, as they are
next to mai-tools: about 45 ms of every process that imports httpx, for a CLI that library code
never runs. And ``import mai_tools`` itself need not import httpx at all (another ~50 ms): the
clients load on first use (``mai_tools.__getattr__``), and every pytest run in an environment
with mai-tools imports the package, through the emulator's plugin.

So this module imports nothing. It puts a one-shot finder at the front of ``sys.meta_path``:
the first ``import httpx`` of the process (by mai_tools or anyone) finds httpx as usual and runs
its ``__init__`` with a placeholder ``httpx._main`` in ``sys.modules``, so httpx skips its CLI.
Then the placeholder goes from both ``sys.modules`` and httpx's namespace, and httpx gets a
module ``__getattr__`` (PEP 562): the first read of ``httpx.main`` (``from httpx import main``,
``CliRunner().invoke(httpx.main, ...)``) imports the real ``httpx._main`` and returns the real
click command, exactly what httpx would have given. ``import httpx._main`` also gets the real
module, since the placeholder is gone from ``sys.modules``. The finder removes itself on that
first import; after it, httpx's module has its own loader and spec again.

Why not a callable stand-in for ``main``: it would not be the click command some callers
expect (``isinstance(..., click.Command)``, ``.params``); a lazy attribute is the object itself.
Nothing changes when httpx was imported before mai_tools (its CLI is loaded already), nor for
the ``httpx`` console script (it does not import mai_tools).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from types import ModuleType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from importlib.abc import Loader
    from importlib.machinery import ModuleSpec

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


def _placeholder_main() -> None:  # what httpx's `from ._main import main` binds, briefly
    raise AssertionError("unreachable: removed from httpx right after its import")


def _exec_without_cli(loader: Loader, httpx: ModuleType) -> None:
    placeholder = ModuleType("httpx._main")
    vars(placeholder)["main"] = _placeholder_main
    sys.modules["httpx._main"] = placeholder
    try:
        loader.exec_module(httpx)
    finally:
        if sys.modules.get("httpx._main") is placeholder:
            del sys.modules["httpx._main"]
    namespace = vars(httpx)
    if namespace.get("main") is not _placeholder_main:
        return  # this httpx did not take the placeholder (a later one might not import its CLI)
    if "__getattr__" in namespace or "__dir__" in namespace:
        namespace["main"] = _load_main()  # never replace module hooks of httpx's own
        return
    del namespace["main"]
    namespace["__getattr__"] = _httpx_getattr
    namespace["__dir__"] = lambda: sorted({*namespace, "main"})  # dir() and completion list it


class _HttpxLoader:
    """httpx's own loader, running its ``__init__`` without the CLI; every other call is its."""

    def __init__(self, loader: Loader) -> None:
        self._loader = loader

    def create_module(self, spec: ModuleSpec) -> ModuleType | None:
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        try:
            _exec_without_cli(self._loader, module)
        finally:  # leave no trace of this wrapper on httpx
            module.__loader__ = self._loader
            if module.__spec__ is not None:
                module.__spec__.loader = self._loader

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loader, name)


class _HttpxFinder:
    """First on ``sys.meta_path`` until httpx is imported; finds nothing but httpx, once."""

    def find_spec(
        self, name: str, path: Sequence[str] | None = None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if name != "httpx":
            return None
        _remove_finder()
        if "httpx._main" in sys.modules:
            return None  # someone imported the CLI by hand: leave httpx as it is
        spec: ModuleSpec | None = None
        for finder in list(sys.meta_path):  # the finders that would have found httpx
            find_spec = getattr(finder, "find_spec", None)
            spec = None if find_spec is None else find_spec(name, path, target)
            if spec is not None:
                break
        if spec is None:
            return None  # not installed: the import fails as it would have
        loader = spec.loader
        if loader is not None and hasattr(loader, "exec_module"):
            spec.loader = _HttpxLoader(loader)  # type: ignore[assignment]  # duck-typed Loader
        return spec


def _is_ours(finder: object) -> bool:
    # By name, not isinstance: a reloaded module's class is a new class.
    kind = type(finder)
    return kind.__module__ == __name__ and kind.__qualname__ == _HttpxFinder.__qualname__


def _remove_finder() -> None:
    sys.meta_path[:] = [f for f in sys.meta_path if not _is_ours(f)]


def _install_finder() -> None:
    if "httpx" in sys.modules or "httpx._main" in sys.modules:
        return  # too late to skip it, or someone wants it: leave httpx as it is
    if not any(_is_ours(f) for f in sys.meta_path):
        sys.meta_path.insert(0, _HttpxFinder())


_install_finder()
