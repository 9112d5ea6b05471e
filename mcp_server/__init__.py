"""An MCP server for MAI Image 2.5: ``generate_image``, ``edit_image``, ``get_image_job``,
``list_recent_jobs``; MCP Tasks for clients that opt in.

Run it with ``mai-image-mcp`` (stdio) or ``mai-image-mcp --transport streamable-http``; add
``--emulator`` to try it with no key. Configuration: see :class:`Settings`.

Every job goes into the job book (:mod:`mai_tools.jobbook`, ``MAI_JOB_BOOK``): an identical
call whose earlier answer never arrived continues that job, across restarts, per-call servers
and replicas sharing a Postgres book (see ``_jobs`` and ``_service``).
"""

from __future__ import annotations

from mai_tools._agent import ImageJobResult

from ._server import create_server
from ._settings import Settings, SettingsError

__all__ = ["ImageJobResult", "Settings", "SettingsError", "create_server"]
