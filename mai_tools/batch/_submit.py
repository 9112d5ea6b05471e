"""One line's job: sending it (the money rules of the batch) and waiting for it.

The intent is journaled when the run's gate admits the POST, immediately before it leaves
(:class:`._gate.LineGate`): a crash after that leaves the line ``submitting``, which the next
run reports UNKNOWN instead of sending it again, and a line still waiting for one of the
client's request slots is never UNKNOWN. A POST that may have reached the gateway (a 5xx, an
unreadable answer, a connection lost after sending: the client's ``may_have_arrived``) makes
the line UNKNOWN, never re-sent unless the user asks. Only a POST that certainly did nothing
(429, 402, 401/403, 404, a refusal, a connection never made) gives its images back to the
budget. Retrying is the client's (:mod:`mai_tools._flow`): a POST is retried only when it
certainly did nothing, and the run's gate paces every try.

Waiting is ``client.wait`` behind the run's gate, raced against the run's stop.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import Final, TypeVar

import pydantic

from .._async_client import AsyncMAIImageClient
from .._exceptions import (
    APIConnectionError,
    APIResponseError,
    APIStatusError,
    AuthenticationError,
    InsufficientBalanceError,
    InvalidArgumentError,
    JobBookError,
    JobFailedError,
    JobTimeoutError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    ServerError,
)
from .._models import Job, JobStatus
from ..jobbook import JobScope
from ._gate import LineGate, RunGate
from ._input import BatchItem, request_of
from ._journal import Row
from ._state import RunState, Stopped

T = TypeVar("T")

BATCH_SCOPE: Final = JobScope(surface="batch")
"""How the batch's jobs are marked in the job book (the client writes them there)."""

UNREACHABLE_AFTER: Final = 20
"""Consecutive lines that could not connect (after the client's retries) before the run stops
submitting."""


class Submitter:
    """Sends lines through ``client`` and waits for their jobs, recording each step in
    ``state``'s journal; every request passes ``gate``."""

    def __init__(
        self,
        state: RunState,
        client: AsyncMAIImageClient,
        gate: RunGate,
        *,
        base_dir: Path,
        sync_intents: bool,
        job_timeout: float,
    ) -> None:
        self._state = state
        self._client = client
        self._gate = gate
        self._base_dir = base_dir
        self._sync_intents = sync_intents
        self._job_timeout = job_timeout
        self._max_input = client.options.max_input_image_bytes
        self._consecutive_unreachable = 0

    # ------------------------------------------------------------------ sending

    async def submit(self, row: Row, item: BatchItem) -> None:
        """Send ``item`` (the line of ``row``, whose images the budget already counts)."""
        state = self._state
        gate = LineGate(self._gate, state, row, durable=self._sync_intents)
        try:
            request = await asyncio.to_thread(
                request_of, item, self._base_dir, max_image_bytes=self._max_input
            )
            job = await self._client.submit(request, gate=gate, job_scope=BATCH_SCOPE)
        except Stopped:
            # Refused by the gate (the run stops): this POST never left, nor did an earlier
            # try of it (the client retries a POST only when it certainly did nothing).
            state.images_requested -= row.num_images
            if row.state == "submitting":
                state.record(row, state="pending")
            raise
        except JobBookError as exc:
            # The job book refused the line's intent, which the client writes before the POST:
            # nothing was sent. Jobs in flight are still waited for and saved.
            state.images_requested -= row.num_images
            state.record(row, state="pending")
            state.submits.appendleft(row)
            state.fatal = True
            state.hold(f"{exc} Nothing was sent for the lines not submitted; fix it and rerun")
            return
        except (pydantic.ValidationError, InvalidArgumentError) as exc:
            state.images_requested -= row.num_images
            state.record(row, state="invalid", status="INVALID", error=_reason(exc))
            return
        except RateLimitError as exc:  # still throttled after the client's own retries
            state.images_requested -= row.num_images
            state.record(row, state="pending")
            state.submits.appendleft(row)
            state.rate_limited(exc, "a submission")
            return
        except InsufficientBalanceError as exc:
            state.images_requested -= row.num_images
            state.record(row, state="pending")
            state.balance = True
            state.hold(f"no balance (HTTP 402: {exc}); waiting for the jobs already submitted")
            return
        except (AuthenticationError, PermissionDeniedError) as exc:
            state.images_requested -= row.num_images
            state.record(row, state="pending")
            state.fail(f"{exc}; nothing is lost: fix the key and rerun the same command")
            return
        except NotFoundError as exc:
            state.images_requested -= row.num_images
            state.record(row, state="pending")
            state.fail(f"{exc} (the submit path does not exist: is the base URL right?)")
            return
        except (ServerError, APIResponseError) as exc:
            state.gateway_trouble = True
            state.record(row, state="unknown", status="UNKNOWN", error=_unknown(exc))
            return
        except APIStatusError as exc:  # 400 and any other 4xx: refused, so nothing was created
            state.images_requested -= row.num_images
            state.record(row, state="invalid", status="INVALID", error=f"gateway refused: {exc}")
            return
        except APIConnectionError as exc:
            if exc.may_have_arrived:
                state.gateway_trouble = True
                state.record(row, state="unknown", status="UNKNOWN", error=_unknown(exc))
                return
            state.images_requested -= row.num_images
            self._not_sent(row, exc)
            return
        self._consecutive_unreachable = 0
        state.submitted_now += 1
        state.submitted_at[row.id] = time.monotonic()
        try:
            state.record(
                row,
                state="submitted",
                status=_job_status(job),
                request_id=job.request_id,
                error=None,
            )
        except Stopped:
            # The job exists (and is charged) but the journal could not say so: its id must
            # still reach the user (the line's outcome, the manifest, a warning).
            row.request_id = job.request_id
            state.emit(
                "warning",
                f"{row.id}: submitted as {job.request_id}, but the journal could not record "
                "it: keep this request id (the job exists and may be charged)",
                row.id,
            )
            raise
        state.emit("submitted", f"{row.id}: submitted as {job.request_id}", row.id)

    def _not_sent(self, row: Row, exc: APIConnectionError) -> None:
        """The POST certainly never left (no connection, after the client's retries): the
        line stays pending for a rerun; many such lines in a row stop the submitting."""
        state = self._state
        state.gateway_trouble = True
        self._consecutive_unreachable += 1
        state.record(row, state="pending", error=f"not submitted: {exc}")
        if self._consecutive_unreachable >= UNREACHABLE_AFTER:
            state.hold(f"the gateway cannot be reached ({exc})")

    # ------------------------------------------------------------------ waiting

    async def wait_for(self, row: Row) -> None:
        """Wait for ``row``'s job (``client.wait`` behind the run's gate) until it ends, the
        job timeout passes, or the run stops (then raise :class:`Stopped`)."""
        state = self._state
        request_id = row.request_id
        assert request_id is not None
        started = state.submitted_at.pop(row.id, None)
        timeout = self._job_timeout
        spent = 0.0  # of the job timeout, before this wait
        if started is not None:  # submitted in this run: the timeout counts from then
            spent = min(time.monotonic() - started, timeout - 0.001)
            timeout -= spent

        def on_status(status: JobStatus, _elapsed: float) -> None:
            value = status.status.value
            if value in ("QUEUED", "PROCESSING") and value != row.status:
                state.record(row, status=value)

        waiting = self._client.wait(
            request_id, timeout=timeout, on_status=on_status, gate=self._gate
        )
        try:
            result = await self._until_stopped(waiting)
        except JobFailedError as exc:
            value = exc.status.value
            error = exc.error or f"the job ended {value}"
            state.record(row, state="failed", status=value, error=error)
            return
        except JobTimeoutError as exc:
            state.record(row, error=self._still_running(exc, spent))
            state.settle(row)
            return
        except (AuthenticationError, PermissionDeniedError) as exc:
            state.fail(f"{exc}; nothing is lost: fix the key and rerun the same command")
            raise Stopped from exc
        except NotFoundError as exc:
            state.record(
                row,
                state="failed",
                status="ERROR",
                error=f"the gateway does not know this job ({exc}); was it submitted to "
                "another gateway?",
            )
            return
        except APIResponseError:  # the only answer wait() does not retry: no image URL
            state.record(
                row, state="failed", status="ERROR", error="the job COMPLETED without any image URL"
            )
            return
        except APIStatusError as exc:  # an answer the client does not retry (400, 410, ...)
            state.record(row, error=f"the status read failed ({exc}); rerun to keep waiting")
            state.settle(row)
            return
        state.record(
            row,
            state="completed",
            status="COMPLETED",
            image_urls=list(result.image_urls),
            # Images the gateway gave no URL for: kept in the line's error until it is saved
            # (the journal keeps it across reruns), then the line's save error.
            error="; ".join(result.unavailable) or None,
        )

    def _still_running(self, exc: JobTimeoutError, spent: float) -> str:
        # Counted against the line's job timeout since its submit, not what was left of it.
        limit = exc.waited_text(before=spent, allowed=self._job_timeout)
        if exc.reason:  # the last status read failed (what it answered, without advice)
            return f"still running after {limit} ({exc.reason}); rerun to keep waiting"
        last = exc.last_status.status.value if exc.last_status is not None else "running"
        return f"still {last} after {limit}; rerun to keep waiting"

    async def _until_stopped(self, work: Awaitable[T]) -> T:
        """``work``'s result, unless the run stops first: then it is cancelled (a cancelled
        wait sends nothing more) and :class:`Stopped` is raised."""
        stop = self._state.stop_event
        task = asyncio.ensure_future(work)
        stopper = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopper.cancel()
            if not task.done():
                task.cancel()
        if task.done() and not task.cancelled():
            return task.result()
        await asyncio.gather(task, return_exceptions=True)
        raise Stopped


def _job_status(job: Job) -> str:
    return job.status.value if job.status.value in ("QUEUED", "PROCESSING") else "QUEUED"


def _reason(exc: pydantic.ValidationError | InvalidArgumentError) -> str:
    if isinstance(exc, pydantic.ValidationError):
        exc = InvalidArgumentError.from_validation(exc)
    return str(exc)


def _unknown(exc: Exception) -> str:
    return (
        f"{exc} The gateway may have received this line: a job may exist (and be charged). "
        "It is not sent again unless you rerun with --resubmit-unknown."
    )
