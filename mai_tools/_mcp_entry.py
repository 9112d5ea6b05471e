"""The ``mai-image-mcp`` console script: run mai-tools' MCP server, or say how to get it back.

mai-tools ships its MCP server as the top-level package ``mcp_server``, a name other
distributions use too (PyPI's ``mcp-server``): installed into the same environment, theirs
replaces ours, or shadows it from earlier on ``sys.path``. One look before anything of that
package runs (``find_spec`` locates it without importing it): it must be the folder beside
``mai_tools``. Otherwise, or if it fails to import, one line says what to do.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import NoReturn

__all__ = ["main"]

FIX = "pip uninstall mcp-server && pip install --force-reinstall --no-deps mai-tools"


def _refuse(problem: str) -> NoReturn:
    # stderr: on stdio, stdout belongs to the MCP protocol.
    print(f"mai-image-mcp: {problem}; fix: {FIX}", file=sys.stderr)
    raise SystemExit(2)


def main() -> None:
    """Console-script entry point of ``mai-image-mcp``."""
    ours = Path(__file__).resolve().parent.parent / "mcp_server" / "__init__.py"
    spec = importlib.util.find_spec("mcp_server")
    found = spec.origin if spec is not None and spec.has_location else None
    if found is None or Path(found).resolve() != ours:
        _refuse(f"'import mcp_server' finds {found or 'no package'}, not mai-tools' ({ours})")
    try:
        from mcp_server.__main__ import main as serve
    except ImportError as exc:  # another package's files written over ours
        _refuse(f"mai-tools' mcp_server package does not import ({exc})")
    serve()
