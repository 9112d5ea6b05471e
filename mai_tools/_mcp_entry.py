"""The ``mai-image-mcp`` console script: check that ``mcp_server`` is ours, then run it.

The check (:mod:`mai_tools._mcp_identity`) runs before anything imports ``mcp_server``: a
foreign package of that name can fail, or do anything, on import.
"""

from __future__ import annotations

from ._mcp_identity import exit_if_foreign_mcp_server

__all__ = ["main"]


def main() -> None:
    """Console-script entry point of ``mai-image-mcp``."""
    exit_if_foreign_mcp_server()
    from mcp_server.__main__ import main as serve

    serve()
