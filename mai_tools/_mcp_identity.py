"""The ``mai-image-mcp`` console script: refuse to start on someone else's ``mcp_server``.

mai-tools ships its MCP server as the top-level package ``mcp_server``. Other distributions use
that import name too (PyPI's ``mcp-server`` does). pip installs both into the same
``site-packages/mcp_server/`` folder without a warning, the later one's ``__init__.py`` replacing
the earlier one's; ``mcp-server`` 0.1.4's then imports ``mcp.server.fastmcp``, which mcp 2 does not
have, so the server died with a traceback about FastMCP that names neither package. A package
named ``mcp_server`` earlier on ``sys.path`` (``PYTHONPATH``, a project folder) shadows ours the
same way, and uninstalling the other distribution afterwards deletes the shared ``__init__.py``.

This check lives outside ``mcp_server`` on purpose: it must run before anything imports that
package, because importing a foreign one can fail or do anything. It only looks at files (the
import spec, mai-tools' installed RECORD); it imports nothing of ``mcp_server``. The server's own
``main()`` runs it again, for ``python -m mcp_server``; the console script is
:mod:`mai_tools._mcp_entry`.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import importlib.util
import shlex
import sys
from functools import cache
from pathlib import Path

__all__ = ["exit_if_foreign_mcp_server", "foreign_mcp_server"]

_DIST = "mai-tools"
_INIT = "mcp_server/__init__.py"
EXIT_USAGE = 2


def _ours() -> Path:
    # mai_tools and mcp_server are installed side by side (site-packages, or a checkout).
    return Path(__file__).resolve().parent.parent / "mcp_server" / "__init__.py"


def _record_hash(path: Path) -> str:
    digest = hashlib.sha256(path.read_bytes()).digest()
    return "sha256=" + base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def _other_owners() -> list[str]:
    """Installed distributions, other than mai-tools, whose files include an mcp_server package."""
    owners = set()
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"] or "?"
        if name.lower().replace("_", "-") == _DIST:
            continue
        if any(str(f).replace("\\", "/").startswith("mcp_server/") for f in dist.files or ()):
            owners.add(f"{name} {dist.version}")
    return sorted(owners)


def _replaced_on_disk(ours: Path) -> bool:
    """Whether mai-tools' installed ``mcp_server/__init__.py`` no longer has the bytes it
    installed (another distribution wrote over it). An editable install records no hash."""
    try:
        dist = importlib.metadata.distribution(_DIST)
    except importlib.metadata.PackageNotFoundError:
        return False  # run from a source tree: nothing installed to compare with
    for entry in dist.files or ():
        if str(entry).replace("\\", "/") != _INIT or entry.hash is None:
            continue
        if Path(str(dist.locate_file(entry))).resolve() != ours:
            return False  # a different mai-tools install than the one running
        return f"{entry.hash.mode}={entry.hash.value}" != _record_hash(ours)
    return False


def _pip(args: str) -> str:
    return f"  {shlex.quote(sys.executable)} -m pip {args}"


_OWN_VENV = "Or give the other package a virtual environment of its own: the two cannot share one."


@cache
def foreign_mcp_server() -> str | None:
    """Why ``import mcp_server`` would not give mai-tools' MCP server, or None when it would."""
    ours = _ours()
    reinstall = _pip(f"install --force-reinstall --no-deps {_DIST}")
    try:
        spec = importlib.util.find_spec("mcp_server")
    except (ImportError, ValueError) as exc:  # a broken parent entry on sys.path, a bad spec
        return f"mai-image-mcp: cannot locate the mcp_server package ({exc}).\n{reinstall}"
    if spec is None:
        return f"mai-image-mcp: the mcp_server package is not installed.\nReinstall:\n{reinstall}"
    found = Path(spec.origin).resolve() if spec.has_location and spec.origin else None
    if found is None:  # a namespace package: folders without __init__.py
        where = ", ".join(spec.submodule_search_locations or ()) or "?"
        uninstall = [_pip(f"uninstall {owner.split()[0]}") for owner in _other_owners()]
        return "\n".join(
            [
                f"mai-image-mcp: {where} has no __init__.py: mai-tools' copy was deleted, usually "
                "by uninstalling another package that had installed its own mcp_server there.",
                "Fix it with:",
                *uninstall,
                reinstall,
            ]
        )
    if found != ours:
        owners = _other_owners()
        by = f" (installed by {', '.join(owners)})" if owners else ""
        fix = (
            ["Uninstall it:", *(_pip(f"uninstall {o.split()[0]}") for o in owners), _OWN_VENV]
            if owners
            else [f"Take {found.parent.parent} off PYTHONPATH, or rename that mcp_server."]
        )
        return "\n".join(
            [
                f"mai-image-mcp: 'import mcp_server' finds {found}{by}, not mai-tools' MCP "
                f"server ({ours}): another package named mcp_server comes first on sys.path.",
                *fix,
            ]
        )
    if _replaced_on_disk(ours):
        owners = _other_owners()
        return "\n".join(
            [
                f"mai-image-mcp: {ours} is not mai-tools' file any more: "
                f"{', '.join(owners) or 'another package'} installed its own mcp_server package "
                "over it (same import name, same folder).",
                "Fix it (uninstalling deletes the shared file, the reinstall puts ours back):",
                *(_pip(f"uninstall {o.split()[0]}") for o in owners),
                reinstall,
                _OWN_VENV,
            ]
        )
    return None


def exit_if_foreign_mcp_server() -> None:
    """Exit with status 2 and say what to do when ``mcp_server`` is not mai-tools' package."""
    problem = foreign_mcp_server()
    if problem is not None:
        # stderr: on stdio, stdout belongs to the MCP protocol.
        print(problem, file=sys.stderr)
        raise SystemExit(EXIT_USAGE)
