"""What this server process remembers about the jobs it started: orphans and recent jobs.

**Orphan adoption.** A tool call can end without its answer reaching the client: the client
cancelled it, its own timeout fired (OpenAI Agents waits 5 s by default, llama-index 30 s), the
stream dropped. The job goes on at the gateway, paid for. The natural retry is the *same* call,
and it would pay for a second image. So the book keeps, per exact argument set, the job of a
call still in flight or one whose answer was not delivered (for :data:`ORPHAN_TTL` seconds);
an identical call then continues that job instead of submitting again. A call whose answer was
delivered (images, "still running", or an error) clears the entry: a new identical call after
that is a new job, as the model asked.

Nothing here is shared between processes or kept across restarts; both tables are bounded.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

ORPHAN_TTL = 600.0
"""Seconds an undelivered job stays adoptable by an identical call."""

MAX_ORPHANS = 256
MAX_RECENT = 50
"""Jobs listed by ``list_recent_jobs`` (the newest first)."""


def argument_key(tool: str, arguments: dict[str, Any]) -> str:
    """A digest of a tool name and its validated arguments (the exact argument set)."""
    # Generate and edit create the same kind of job: a generate never adopts an edit's.
    canonical = json.dumps([tool, arguments], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


@dataclass
class _Entry:
    request_id: str
    started: datetime
    orphaned_at: float | None = None  # monotonic; None while a call still waits on it


@dataclass
class RecentJob:
    """One job this process started (or resumed), as ``list_recent_jobs`` shows it."""

    request_id: str
    tool: str
    prompt: str
    started: datetime
    status: str = "QUEUED"
    image_urls: list[str] = field(default_factory=list)


class JobBook:
    """Per-process, thread-safe memory of undelivered jobs and recent jobs."""

    def __init__(self, *, ttl: float = ORPHAN_TTL, clock: Any = time.monotonic) -> None:
        self._ttl = ttl
        self._clock = clock
        self._lock = threading.Lock()
        self._by_key: OrderedDict[str, _Entry] = OrderedDict()
        self._recent: OrderedDict[str, RecentJob] = OrderedDict()

    # ------------------------------------------------------------------ adoption

    def adoptable(self, key: str) -> tuple[str, datetime] | None:
        """(request_id, when it started) of a job an identical call may continue, if any."""
        with self._lock:
            self._expire()
            entry = self._by_key.get(key)
            return None if entry is None else (entry.request_id, entry.started)

    def started(self, key: str, request_id: str, started: datetime | None = None) -> None:
        """A call with these arguments now waits on ``request_id``."""
        with self._lock:
            self._by_key[key] = _Entry(request_id, started or datetime.now(UTC))
            self._by_key.move_to_end(key)
            while len(self._by_key) > MAX_ORPHANS:
                self._by_key.popitem(last=False)

    def orphaned(self, key: str, request_id: str, started: datetime) -> None:
        """The call waiting on ``request_id`` ended without delivering its answer."""
        with self._lock:
            self._by_key[key] = _Entry(request_id, started, orphaned_at=self._clock())
            self._by_key.move_to_end(key)
            while len(self._by_key) > MAX_ORPHANS:
                self._by_key.popitem(last=False)

    def delivered(self, key: str, request_id: str) -> None:
        """The answer about ``request_id`` went out: an identical call is a new job."""
        with self._lock:
            entry = self._by_key.get(key)
            if entry is not None and entry.request_id == request_id:
                del self._by_key[key]

    def _expire(self) -> None:
        now = self._clock()
        for key in [
            k
            for k, e in self._by_key.items()
            if e.orphaned_at is not None and now - e.orphaned_at > self._ttl
        ]:
            del self._by_key[key]

    # ------------------------------------------------------------------ recent jobs

    def record(
        self,
        request_id: str,
        *,
        tool: str | None = None,
        prompt: str | None = None,
        status: str | None = None,
        image_urls: list[str] | None = None,
    ) -> None:
        """Note a job (or news about one) for ``list_recent_jobs``."""
        with self._lock:
            job = self._recent.get(request_id)
            if job is None:
                job = RecentJob(
                    request_id, tool or "get_image_job", _short(prompt), datetime.now(UTC)
                )
                self._recent[request_id] = job
                while len(self._recent) > MAX_RECENT:
                    self._recent.popitem(last=False)
            if status is not None:
                job.status = status
            if image_urls is not None:
                job.image_urls = list(image_urls)

    def recent(self, limit: int = MAX_RECENT) -> list[RecentJob]:
        """The newest jobs first."""
        with self._lock:
            return list(reversed(self._recent.values()))[:limit]


def _short(prompt: str | None) -> str:
    if not prompt:
        return ""
    prompt = " ".join(prompt.split())
    return prompt if len(prompt) <= 120 else prompt[:119] + "…"
