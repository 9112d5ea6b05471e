"""What a client remembers of the jobs it submitted: their request and when they were sent.

``wait(job)`` on a job the same client submitted then polls it as ``run`` would (its age and
the operation's learned durations are known), and its result carries the request. In memory
only, bounded, shared by the threads of a sync client.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Final

from ._models import JobRequest

RECENT_JOBS: Final = 4096
"""How many submitted jobs a client remembers; the oldest are forgotten first."""


@dataclass(frozen=True)
class Submitted:
    """One job this client submitted."""

    request: JobRequest
    at: float
    """Monotonic time of the submit's answer: the job's age counts from it."""


class RecentJobs:
    """The last :data:`RECENT_JOBS` jobs a client submitted, by request id."""

    def __init__(self, size: int = RECENT_JOBS) -> None:
        self._size = size
        self._jobs: OrderedDict[str, Submitted] = OrderedDict()
        self._lock = threading.Lock()

    def remember(self, request_id: str, request: JobRequest, at: float) -> None:
        with self._lock:
            self._jobs[request_id] = Submitted(request, at)
            self._jobs.move_to_end(request_id)
            while len(self._jobs) > self._size:
                self._jobs.popitem(last=False)

    def get(self, request_id: str) -> Submitted | None:
        with self._lock:
            return self._jobs.get(request_id)

    def __len__(self) -> int:
        return len(self._jobs)
