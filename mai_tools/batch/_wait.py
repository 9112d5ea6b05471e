"""Waiting for one line's job: paced status reads until it ends, times out or the run stops.

Waiting is done here, with the client's public :meth:`get_status`, its poll policy and its
learned durations, rather than with ``client.wait``: every status read must pass the run's
token bucket and its run-wide 429 pause (:mod:`._pacing`), and the schedule must thin out when
thousands of jobs are in flight. Push waiting (webhooks) would replace :class:`Waiter` only.
"""

from __future__ import annotations

import time

from .._async_client import AsyncMAIImageClient
from .._exceptions import (
    APIConnectionError,
    APIResponseError,
    APIStatusError,
    AuthenticationError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
)
from .._models import JobStatus, Status
from ._journal import Row
from ._state import RunState, Stopped


class Waiter:
    """Polls the jobs of a run, all of them together within ``reads_per_second``."""

    def __init__(
        self,
        state: RunState,
        client: AsyncMAIImageClient,
        *,
        job_timeout: float,
        reads_per_second: float,
    ) -> None:
        self._state = state
        self._client = client
        self._job_timeout = job_timeout
        self._reads_per_second = reads_per_second
        self._polling = 0

    def _poll_floor(self) -> float:
        """The shortest gap between two reads of one job, so that all jobs in flight together
        stay within the status-read budget: thousands of jobs poll less often each."""
        return self._polling / self._reads_per_second

    async def wait_for(self, row: Row, operation: str) -> None:
        """Poll ``row``'s job until it ends, the job timeout passes, or the run stops."""
        state = self._state
        request_id = row.request_id
        assert request_id is not None
        policy = self._client.poll_policy
        started = state.submitted_at.pop(row.id, None)
        origin = started if started is not None else time.monotonic()
        deadline = origin + self._job_timeout
        gap: float | None = None
        polls = failures = 0
        self._polling += 1
        try:
            while True:
                now = time.monotonic()
                if failures:
                    delay = state.retry.backoff(failures, None, state.rng)
                elif polls == 0 and started is None:
                    delay = 0.0  # resumed: read at once
                else:
                    window = (
                        self._client.durations.window(operation, policy)
                        if started is not None
                        else None
                    )
                    delay = policy.next_delay(elapsed=now - origin, last_gap=gap, window=window)
                    delay = max(delay, self._poll_floor())
                    gap = delay if polls else max(delay, policy.first_delay)
                if now + delay >= deadline:
                    await state.sleep(max(deadline - now, 0.0))
                    final = True
                else:
                    await state.sleep(delay)
                    final = False
                await state.acquire()
                try:
                    status = await self._client.get_status(request_id)
                except RateLimitError as exc:
                    state.rate_limited(exc, "a status read")
                    continue
                except (AuthenticationError, PermissionDeniedError) as exc:
                    state.fail(f"{exc}; nothing is lost: fix the key and rerun the same command")
                    raise Stopped from exc
                except NotFoundError as exc:
                    state.record(
                        row,
                        state="failed",
                        status="ERROR",
                        error=f"the gateway does not know this job ({exc}); was it submitted "
                        "to another gateway?",
                    )
                    return
                except (APIConnectionError, APIResponseError, APIStatusError) as exc:
                    failures += 1
                    if final:
                        state.record(
                            row,
                            error=f"still running after {self._job_timeout:g}s (last status "
                            f"read failed: {exc}); rerun to keep waiting",
                        )
                        state.settle(row)
                        return
                    continue
                failures = 0
                polls += 1
                if status.status is Status.COMPLETED:
                    self._learn(operation, status, started)
                    if not status.image_urls:
                        state.record(
                            row,
                            state="failed",
                            status="ERROR",
                            error="the job COMPLETED without any image URL",
                        )
                        return
                    state.record(
                        row, state="completed", status="COMPLETED", image_urls=status.image_urls
                    )
                    return
                if status.status.is_failure:
                    state.record(
                        row,
                        state="failed",
                        status=status.status.value,
                        error=status.error or f"the job ended {status.status.value}",
                    )
                    return
                if status.status.value in ("QUEUED", "PROCESSING") and (
                    status.status.value != row.status
                ):
                    state.record(row, status=status.status.value)
                if final:
                    state.record(
                        row,
                        error=f"still {status.status.value} after {self._job_timeout:g}s; rerun "
                        "to keep waiting",
                    )
                    state.settle(row)
                    return
        finally:
            self._polling -= 1

    def _learn(self, operation: str, status: JobStatus, started: float | None) -> None:
        """Feed the client's learned durations (as the client's own wait does), so later jobs
        poll by them; a job resumed from an earlier run counts by the gateway's figure only."""
        observed = time.monotonic() - started if started is not None else None
        self._client.durations.learn(operation, server=status.server_seconds, observed=observed)
