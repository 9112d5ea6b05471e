"""Learned job durations, kept between runs of ``mai-image`` and ``mai-image-mcp``.

A new process knows nothing about how long jobs take and polls on the cold schedule (gaps
growing to 2 s), seeing jobs finish up to ~2 s late until it has learned. The client's
:class:`~mai_tools.DurationStats` is saved per gateway to a small JSON file in the user's
cache directory and restored by the next process, so polling is adaptive from the first job.

The file holds durations only (no key, prompt or request id). Deleting it is always safe;
failing to read or write it never fails a command.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import threading
from pathlib import Path
from typing import Any

from ._policies import DurationStats

logger = logging.getLogger("mai_tools")

CACHE_FILE_NAME = "durations.json"
MAX_GATEWAYS = 20
"""Gateways remembered; the least recently used go first (emulators on random ports add up)."""
_FORMAT = 1


def cache_file() -> Path:
    """``$XDG_CACHE_HOME/mai-tools/durations.json`` (``~/.cache`` by default; on Windows
    ``%LOCALAPPDATA%``)."""
    base = os.environ.get("XDG_CACHE_HOME")
    if not base and sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA")
    root = Path(base) if base else Path.home() / ".cache"
    return root / "mai-tools" / CACHE_FILE_NAME


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        logger.debug("ignoring unreadable duration cache %s: %s", path, exc)
        return {}
    if not isinstance(data, dict) or data.get("format") != _FORMAT:
        return {}
    gateways = data.get("gateways")
    return gateways if isinstance(gateways, dict) else {}


def _cache_file() -> Path | None:
    try:
        return cache_file()
    except RuntimeError as exc:  # no home directory (e.g. a container user without one)
        logger.debug("no duration cache: %s", exc)
        return None


def restore(durations: DurationStats, gateway: str) -> None:
    """Add the durations saved for ``gateway`` (a base URL, or ``"emulator"``)."""
    path = _cache_file()
    saved = _read(path).get(gateway) if path is not None else None
    if isinstance(saved, dict):
        durations.update(saved)


def store(durations: DurationStats, gateway: str) -> None:
    """Save ``durations`` for ``gateway``, keeping other gateways' entries."""
    learned = durations.to_dict()
    path = _cache_file()
    if not learned or path is None:
        return
    gateways = _read(path)
    gateways.pop(gateway, None)
    gateways[gateway] = learned  # now the most recent
    for stale in list(gateways)[:-MAX_GATEWAYS]:
        del gateways[stale]
    body = json.dumps({"format": _FORMAT, "gateways": gateways}, separators=(",", ":"))
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(body, encoding="utf-8")
        os.replace(tmp, path)  # atomic: a concurrent run reads the old or the new file
    except OSError as exc:
        logger.debug("could not save the duration cache %s: %s", path, exc)
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
