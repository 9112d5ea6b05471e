"""The layers import one way: every import in mai_tools/ and mcp_server/ points down.

Every import statement is read from the source (function bodies included, so a lazy import
cannot hide an upward edge; ``if TYPE_CHECKING:`` blocks excluded, they never run). The test
fails on an import of a higher layer, on a cycle, on a module missing from the table below
(a new module must say where it belongs), and on a module longer than the size limit.
CONTRIBUTING.md describes the same layers in words.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("mai_tools", "mcp_server")
MAX_LINES = 600

# Lowest first. A module may import only from modules of a lower rank, or of the same rank
# inside its own package (the internals of one adapter), and never in a cycle.
LAYERS: list[tuple[str, ...]] = [
    ("mai_tools._version",),
    ("mai_tools._constants",),
    ("mai_tools._status",),  # what the gateway says of a job (the job errors carry it)
    ("mai_tools._exceptions",),
    ("mai_tools._urls",),
    ("mai_tools._config",),
    ("mai_tools._spread_pools",),  # the async client's transport: httpx's public API only
    ("mai_tools._images",),
    ("mai_tools._policies",),  # pure: imports nothing of mai_tools (downloads use its backoff)
    ("mai_tools._fetch",),
    ("mai_tools._telemetry",),  # OpenTelemetry names, instruments, the download span (lazy)
    ("mai_tools._download",),
    ("mai_tools._previews",),  # small JPEGs of result images (Pillow): MCP previews, view_image
    ("mai_tools._models",),
    ("mai_tools.emulator",),  # a separate server: constants, URL helpers, models (see below)
    ("mai_tools._duration_cache",),
    ("mai_tools._wire",),
    ("mai_tools._recent",),  # the jobs a client submitted (wait polls them by their age)
    ("mai_tools.jobbook",),  # the durable memory of submitted jobs (SQLite, Postgres)
    ("mai_tools._actions",),  # what a flow asks of its driver; the RequestGate hook
    ("mai_tools._bookkeeping",),  # the job book's part of a flow: intent, notes, adoption
    ("mai_tools._waiting",),  # status reads and the wait loop (a base of FlowCore)
    ("mai_tools._flow",),
    ("mai_tools._traced",),  # a flow inside its job span (OpenTelemetry, when loaded)
    ("mai_tools._bodies",),
    ("mai_tools._server_guard",),  # what a connection flood may take from a uvicorn server
    ("mai_tools._webhook_server",),  # the receiver's server side: caps, deadline, logs, ASGI
    ("mai_tools._webhooks",),  # push waiting: the callback receiver the drivers wait on
    ("mai_tools._base_client",),
    ("mai_tools._client",),
    ("mai_tools._async_client",),
    ("mai_tools._agent",),
    ("mai_tools._tools",),  # TOOLS: the one description of each agent tool and its request
    ("mai_tools._views",),  # view_image's flow: which image a caller may see, and its preview
    ("mai_tools._langchain_calls",),  # the LangChain job tools' keys in the job book
    ("mai_tools._tool_images",),  # images out of tool messages (langchain-core only)
    ("mai_tools.langchain", "mai_tools.batch"),
    ("mai_tools.middleware",),  # the LangChain agent middleware (the agents extra)
    ("mai_tools.cli",),
    ("mai_tools",),  # the public facade
    ("mcp_server",),
    ("mai_tools._mcp_entry",),  # the mai-image-mcp console script: is mcp_server ours? run it
]
# What the emulator may use of the client library: it must never depend on the client.
EMULATOR_MAY_IMPORT = {
    "mai_tools._version",
    "mai_tools._constants",
    "mai_tools._exceptions",
    "mai_tools._urls",
    "mai_tools._images",
    "mai_tools._models",
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            found[_module_name(path)] = path
    return found


MODULES = _modules()


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _walk(node: ast.AST, *, typed: bool = False) -> Iterator[ast.AST]:
    """Every node, except what only type checkers see (unless ``typed``)."""
    for child in ast.iter_child_nodes(node):
        if not typed and isinstance(child, ast.If) and _is_type_checking(child.test):
            for other in child.orelse:
                yield from _walk(other)
            continue
        yield child
        yield from _walk(child, typed=typed)


def _resolve(target: str) -> str | None:
    """The known module ``target`` names (a module, or the package holding a name)."""
    while target:
        if target in MODULES:
            return target
        target = target.rpartition(".")[0]
    return None


def _imports(name: str, path: Path, *, typed: bool = False) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    is_package = path.name == "__init__.py"
    edges: set[str] = set()
    for node in _walk(tree, typed=typed):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                here = name.split(".") if is_package else name.split(".")[:-1]
                anchor = here[: len(here) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            # `from pkg import module` is an edge to the module; `from pkg import name` to pkg.
            targets = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base
                for alias in node.names
            ]
        for target in targets:
            resolved = _resolve(target)
            if resolved is not None and resolved != name:
                edges.add(resolved)
    return edges


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}
TYPED_GRAPH = {name: _imports(name, path, typed=True) for name, path in MODULES.items()}
"""The same, with the imports of ``if TYPE_CHECKING:`` blocks: what a type checker follows."""


def _layer(name: str) -> tuple[int, str]:
    """(rank, layer group) of a module: the most specific entry of LAYERS that covers it."""
    best: tuple[int, str, int] | None = None
    for rank, group in enumerate(LAYERS):
        for entry in group:
            if name == entry or name.startswith(entry + "."):
                depth = entry.count(".")
                if best is None or depth > best[2]:
                    best = (rank, entry, depth)
    if best is None:
        raise LookupError(name)
    return best[0], best[1]


def test_every_module_has_a_layer() -> None:
    missing = []
    for name in MODULES:
        try:
            _layer(name)
        except LookupError:
            missing.append(name)
    assert not missing, f"add these modules to LAYERS in {__file__}: {missing}"


def _upward_edges() -> list[str]:
    bad = []
    for name, targets in GRAPH.items():
        rank, group = _layer(name)
        for target in targets:
            target_rank, target_group = _layer(target)
            if target_rank < rank or (target_rank == rank and target_group == group):
                continue
            bad.append(f"{name} -> {target}")
    return sorted(bad)


def test_no_module_imports_a_higher_layer() -> None:
    assert _upward_edges() == []


def test_the_emulator_uses_only_constants_url_helpers_and_models() -> None:
    bad = sorted(
        f"{name} -> {target}"
        for name, targets in GRAPH.items()
        if name.startswith("mai_tools.emulator")
        for target in targets
        if not target.startswith("mai_tools.emulator") and target not in EMULATOR_MAY_IMPORT
    )
    assert bad == []


def _cycles(graph: dict[str, set[str]] = GRAPH) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def test_there_is_no_import_cycle() -> None:
    assert _cycles() == []


def test_there_is_no_import_cycle_even_counting_type_checking_imports() -> None:
    # A cycle that only a lazy or TYPE_CHECKING import breaks is still a knot in the design
    # (results that saved themselves once closed one through seven modules).
    assert _cycles(TYPED_GRAPH) == []


@pytest.mark.parametrize("name", sorted(MODULES))
def test_modules_stay_small(name: str) -> None:
    lines = MODULES[name].read_text(encoding="utf-8").count("\n")
    assert lines <= MAX_LINES, f"{name} has {lines} lines; split it along its layers"


# --------------------------------------------------------------------------- the checker itself


def test_the_checker_sees_lazy_imports_and_ignores_type_checking_blocks(tmp_path: Path) -> None:
    source = (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    from mai_tools._client import MAIImageClient\n"
        "def later():\n"
        "    from mai_tools import _agent\n"
        "    from ._flow import FlowCore\n"
    )
    path = ROOT / "mai_tools" / "_models.py"  # resolved as if it were this module
    fake = tmp_path / "_models.py"
    fake.write_text(source)
    original = MODULES["mai_tools._models"]
    try:
        MODULES["mai_tools._models"] = fake
        edges = _imports("mai_tools._models", fake)
    finally:
        MODULES["mai_tools._models"] = original
    assert edges == {"mai_tools._agent", "mai_tools._flow"}
    assert path.exists()


def test_the_checker_reports_an_upward_edge_and_a_cycle() -> None:
    saved = {k: set(v) for k, v in GRAPH.items()}
    try:
        GRAPH["mai_tools._models"].add("mai_tools._client")
        assert "mai_tools._models -> mai_tools._client" in _upward_edges()
        assert any("mai_tools._models" in c for c in _cycles())
    finally:
        GRAPH.clear()
        GRAPH.update(saved)
