"""Waiting for a job: status reads, their retries, and the polling schedule.

The half of the sans-I/O flows that reads a job's status until it is terminal or the call's
deadline passes (:class:`WaitSteps`, a base of :class:`mai_tools._flow.FlowCore`), with the
per-request timeouts and retry delays both halves use.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from ._actions import Flow, HTTPRequest, Notify, Reply, Sleep, WaitForSignal
from ._config import ClientOptions, call_timeout
from ._constants import MAX_ANSWER_BYTES
from ._exceptions import (
    APIConnectionError,
    APIResponseError,
    APIStatusError,
    JobFailedError,
    JobTimeoutError,
    QuotaExceededError,
    transport_error,
)
from ._models import ImageResult, JobRequest, JobStatus, Status, operation_of
from ._policies import CallbackStats, Clock, DurationStats, PollPolicy, RetryPolicy
from ._wire import Wire

logger = logging.getLogger("mai_tools")


class _Transient(Exception):
    """A status read failed in a way that may pass (transport, 408, 429, 5xx, a garbled body)."""

    def __init__(self, failure: Exception, retry_after: float | None) -> None:
        super().__init__(str(failure))
        self.failure = failure
        self.retry_after = retry_after


class _OutOfTime(Exception):
    def __init__(self, last_error: Exception) -> None:
        super().__init__(str(last_error))
        self.last_error = last_error


@dataclass(frozen=True)
class _Wait:
    """One wait for a job: where to poll, until when, and what is known of it so far."""

    request_id: str
    polling_url: str | None
    timeout: float
    deadline: float
    origin: float
    """Monotonic time elapsed values count from (submission, or the start of a resumed wait)."""
    window: tuple[float, float] | None
    """The learned duration window, for a job this client just submitted."""
    submitted_here: bool
    initial: JobStatus | None = None
    request: JobRequest | None = None
    """The request the job was submitted with, when this client knows it (results carry it)."""
    push: bool = False
    """A callback will come (the submit carried our receiver's URL): sleep until it does."""


def _without_advice(error: BaseException) -> str:
    return error.summary() if isinstance(error, APIStatusError) else str(error)


def _reply(reply: Reply) -> httpx.Response | httpx.TransportError:
    if reply is None or isinstance(reply, bool):  # pragma: no cover - a driver bug
        raise RuntimeError("driver returned no reply to a request")
    return reply


class WaitSteps:
    """Status reads and the wait loop; the attributes are set by :class:`FlowCore`."""

    options: ClientOptions
    wire: Wire
    poll_policy: PollPolicy
    retry_policy: RetryPolicy
    clock: Clock
    durations: DurationStats
    callbacks: CallbackStats
    _rng: random.Random

    # ------------------------------------------------------------------ helpers

    def deadline_for(self, timeout: object) -> tuple[float, float]:
        """(timeout, absolute deadline) for a call; ``None`` means ``wait_timeout``."""
        value = call_timeout(timeout, self.options.wait_timeout)
        return value, self.clock.monotonic() + value

    def _request(
        self,
        method: str,
        url: str,
        json: Mapping[str, Any] | None,
        deadline: float,
        *,
        max_body: int = MAX_ANSWER_BYTES,
        webhook_url: str | None = None,
    ) -> HTTPRequest:
        return HTTPRequest(
            method,
            url,
            self.wire.headers(webhook_url),
            json,
            self._within(deadline),
            max_body,
            "submit" if method == "POST" else "status",
        )

    def _within(self, deadline: float) -> httpx.Timeout:
        """The per-request timeout, capped by the time left until ``deadline``."""
        t = self.options.request_timeout
        remaining = deadline - self.clock.monotonic()
        if not math.isfinite(remaining):
            return t
        remaining = max(remaining, 0.05)

        def cap(value: float | None) -> float:
            return remaining if value is None else min(value, remaining)

        return httpx.Timeout(
            connect=cap(t.connect), read=cap(t.read), write=cap(t.write), pool=cap(t.pool)
        )

    def _retry_delay(
        self, attempt: int, retry_after: float | None, deadline: float
    ) -> float | None:
        """Seconds before retry ``attempt``, or None when it must not happen: the gateway asked
        for a longer pause than ``max_retry_after``, or the retry would land past ``deadline``."""
        if retry_after is not None and retry_after > self.retry_policy.max_retry_after:
            return None
        delay = self.retry_policy.backoff(attempt, retry_after, self._rng)
        if self.clock.monotonic() + delay >= deadline:
            return None
        return delay

    def _read_status(self, request_id: str, url: str, deadline: float) -> Flow[JobStatus]:
        """One GET of the status URL. Transient failures raise :class:`_Transient`."""
        reply = _reply((yield self._request("GET", url, None, deadline)))
        if isinstance(reply, httpx.TransportError):
            failure: APIConnectionError = transport_error(
                reply, what=f"Reading the status of {request_id}", request_id=request_id
            )
            failure.__cause__ = reply
            raise _Transient(failure, None)
        if reply.is_success:
            try:
                return self.wire.job_status(reply, request_id, f"Status of {request_id}")
            except APIResponseError as exc:
                raise _Transient(exc, None) from None
        error = self.wire.status_error(reply, request_id)
        # Throttling (429, a used-up call quota) and gateway trouble pass; the job runs on.
        if reply.status_code in (408, 429) or reply.status_code >= 500:
            raise _Transient(error, error.retry_after)
        if isinstance(error, QuotaExceededError):
            raise _Transient(error, error.retry_after)
        raise error

    def _poll(self, request_id: str, url: str, deadline: float) -> Flow[JobStatus]:
        """A status read during a wait: transient failures are retried while there is time.

        When there is none left (or the gateway asks for a longer pause than
        ``max_retry_after``), :class:`_OutOfTime` ends the wait as still running.
        """
        failures = 0
        while True:
            try:
                return (yield from self._read_status(request_id, url, deadline))
            except _Transient as exc:
                failures += 1
                delay = self._retry_delay(failures, exc.retry_after, deadline)
                if delay is None:
                    raise _OutOfTime(exc.failure) from None
                logger.info(
                    "status read for %s failed (%s); retrying in %.2fs",
                    request_id,
                    exc.failure,
                    delay,
                )
                yield Sleep(delay)

    def _wait(self, plan: _Wait) -> Flow[ImageResult]:
        """Poll until the job is terminal or the deadline passes.

        With ``plan.push`` the sleeps are :class:`WaitForSignal`: the job's callback ends one
        early and the flow reads the status once. The callback is never the result: a forged
        or replayed one costs one read and ends nothing. Reads woken by callbacks stay at
        least ``min_interval`` apart, however many arrive.
        """
        request_id = plan.request_id
        operation = operation_of(request_id)
        window = plan.window if operation is not None else None
        # Decide once per wait whether the gateway's polling_url may carry the key.
        status_url = self.wire.status_url(request_id, plan.polling_url)
        last = plan.initial
        reported: Status | None = None
        if plan.initial is not None:
            reported = plan.initial.status
            yield Notify(plan.initial, self.clock.monotonic() - plan.origin)
        gap: float | None = None
        polls = 0
        last_read: float | None = None
        read_gap: float | None = None  # between the last two reads (push waits)
        while True:
            now = self.clock.monotonic()
            if polls == 0 and not plan.submitted_here:
                delay = 0.0  # a resumed wait: the job may be long done
            elif plan.push:
                delay = self.poll_policy.push_delay(
                    elapsed=now - plan.origin,
                    last_gap=read_gap,
                    window=window,
                    lossy=self.callbacks.lossy(),
                )
            else:
                delay = self.poll_policy.next_delay(
                    elapsed=now - plan.origin, last_gap=gap, window=window
                )
            final = now + delay >= plan.deadline
            if final:
                delay = max(plan.deadline - now, 0.0)
            woke = False
            if delay > 0 and plan.push:
                woke = (yield WaitForSignal(request_id, delay)) is True
            elif delay > 0:
                yield Sleep(delay)
            if woke:
                final = False
                rest = 0.0 if last_read is None else last_read + self.poll_policy.min_interval
                rest = min(rest, plan.deadline) - self.clock.monotonic()
                if rest > 0:
                    yield Sleep(rest)
            gap = delay if polls else max(delay, self.poll_policy.first_delay)
            try:
                status = yield from self._poll(request_id, status_url, plan.deadline)
            except _OutOfTime as exc:
                raise JobTimeoutError(
                    request_id=request_id,
                    polling_url=plan.polling_url,
                    last_status=last,
                    timeout=plan.timeout,
                    # What the gateway answered, not its advice ("retry later"): the job runs on.
                    reason=f"The last status read failed: {_without_advice(exc.last_error)}",
                    waited=self._waited(plan),
                ) from exc.last_error
            polls += 1
            last = status
            previous, last_read = last_read, self.clock.monotonic()
            read_gap = last_read - (plan.origin if previous is None else previous)
            elapsed = last_read - plan.origin
            if status.status is not reported:
                reported = status.status
                yield Notify(status, elapsed)
            logger.debug("poll %d of %s: %s after %.2fs", polls, request_id, status.status, elapsed)
            if plan.push and status.status.is_terminal:
                self._callback_outcome(request_id, arrived=woke)
            if status.status is Status.COMPLETED:
                self._learn(operation, status, elapsed if plan.submitted_here else None)
                result = ImageResult.from_status(status, plan.request)
                if not status.has_output:
                    raise APIResponseError(
                        f"Job {request_id} COMPLETED without output.media_url",
                        request_id=request_id,
                    )
                return result
            if status.status.is_failure:
                raise JobFailedError(status)
            if final or self.clock.monotonic() >= plan.deadline:
                raise JobTimeoutError(
                    request_id=request_id,
                    polling_url=plan.polling_url,
                    last_status=status,
                    timeout=plan.timeout,
                    waited=self._waited(plan),
                )

    def _waited(self, plan: _Wait) -> float:
        """Seconds since the call started (its deadline is ``timeout`` after that)."""
        started = plan.deadline - plan.timeout
        return max(self.clock.monotonic() - started, 0.0)

    def _callback_outcome(self, request_id: str, *, arrived: bool) -> None:
        self.callbacks.record(arrived)
        if not arrived:
            logger.info(
                "no callback for %s before a fallback read found it finished; fallback reads "
                "are denser while callbacks get lost (is the receiver reachable?)",
                request_id,
            )

    def _learn(self, operation: str | None, status: JobStatus, observed: float | None) -> None:
        if operation is not None:
            self.durations.learn(operation, server=status.server_seconds, observed=observed)
