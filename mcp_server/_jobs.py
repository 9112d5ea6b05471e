"""How the server names a call in the job book: its tool and exact arguments.

**Orphan adoption.** A tool call can end without its answer reaching the client: the client
cancelled it, its own timeout fired (OpenAI Agents waits 5 s by default, llama-index 30 s), the
stream dropped, the server was restarted or killed. The job goes on at the gateway, paid for.
The natural retry is the *same* call, and it would pay for a second image. So every submit is
written into the job book (:mod:`mai_tools.jobbook`) with the call's :func:`argument_key` as its
twin key; an identical call by the same principal continues that job while its answer is
undelivered (within :data:`~mai_tools.jobbook.ADOPT_WINDOW` seconds; an hour for a job still
running) instead of submitting again. A call whose answer was delivered (images, "still
running", or an error) releases the key: a new identical call after that is a new job, as the
model asked.

The book is a file (SQLite) shared by every process of the machine, or a Postgres database
shared by replicas: a restarted server, a fresh per-call stdio server and another replica all
adopt. See ``_service`` for when an answer counts as delivered.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any


def argument_key(tool: str, arguments: dict[str, Any]) -> str:
    """A digest of a tool name and its validated arguments (the exact argument set)."""
    # Generate and edit create the same kind of job: a generate never adopts an edit's.
    canonical = json.dumps([tool, arguments], sort_keys=True, separators=(",", ":"))
    return "mcp:" + hashlib.sha256(canonical.encode("utf-8")).hexdigest()
