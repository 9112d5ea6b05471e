"""The submit -> wait -> result logic, written once as sans-I/O generators.

A flow is a generator that yields actions (:class:`HTTPRequest`, :class:`Sleep`,
:class:`WaitForSignal`, :class:`Notify`) and receives what the driver got back: an
``httpx.Response`` or the ``httpx.TransportError`` raised while sending, for a request; for a
:class:`WaitForSignal`, True if the job's callback cut the wait short; ``None`` otherwise.
The sync and the async clients each run a flow with a ~20-line driver, so every decision
(retries, deadlines, polling schedule) lives here and is shared. How the gateway spells things
(headers, bodies, answers, errors) is :mod:`mai_tools._wire`'s.

Entry points, one per public operation: :meth:`FlowCore.run_flow` (generate / edit),
:meth:`FlowCore.submit_only_flow`, :meth:`FlowCore.status_flow` (one status read) and
:meth:`FlowCore.resume_flow` (wait for a job by id).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Mapping
from typing import Any, TypeVar

import httpx

from . import _bookkeeping as bk
from ._actions import (
    NEVER_SENT,
    Flow,
    Notify,
    Sleep,
)
from ._config import ClientOptions
from ._constants import MAX_ANSWER_BYTES, MAX_INLINE_ANSWER_BYTES
from ._exceptions import (
    APIResponseError,
    InvalidArgumentError,
    JobFailedError,
    transport_error,
)
from ._models import ImageResult, Job, JobRequest, JobStatus, Status, request_body
from ._policies import (
    CallbackStats,
    Clock,
    DurationStats,
    PollPolicy,
    RetryPolicy,
    SystemClock,
)
from ._recent import RecentJobs
from ._status import parse_status
from ._urls import check_request_id, check_webhook_url
from ._waiting import WaitSteps, _reply, _Transient, _Wait
from ._wire import Wire
from .jobbook import JobBook
from .jobbook._record import Claim

logger = logging.getLogger("mai_tools")

T = TypeVar("T")


class FlowCore(WaitSteps):
    """Every decision of the client, shared by the sync and async drivers."""

    def __init__(
        self,
        options: ClientOptions,
        *,
        poll_policy: PollPolicy | None = None,
        retry_policy: RetryPolicy | None = None,
        clock: Clock | None = None,
        durations: DurationStats | None = None,
        book: JobBook | None = None,
    ) -> None:
        self.options = options
        self.book = book
        """The job book every submit is written into (None: off)."""
        self.wire = Wire(options.api_key, options.base_url)
        self.poll_policy = poll_policy or PollPolicy()
        self.retry_policy = retry_policy or RetryPolicy()
        self.clock: Clock = clock or SystemClock()
        self.durations = (
            durations if durations is not None else DurationStats(history=self.poll_policy.history)
        )
        self.callbacks = CallbackStats()
        """Whether recent push waits got their callback (the fallback schedule follows it)."""
        self._rng = random.Random()
        self.recent = RecentJobs()
        """The jobs this client submitted (``wait`` polls them by their age)."""

    def _remember(self, job: Job | JobStatus, request: JobRequest) -> None:
        self.recent.remember(job.request_id, request, self.clock.monotonic())

    # ------------------------------------------------------------------ entry points

    def run_flow(
        self,
        body: JobRequest,
        *,
        webhook_url: str | None,
        timeout: float | None,
        push: bool = False,
        extra_body: Mapping[str, Any] | None = None,
        book_call: bk.BookCall | None = None,
    ) -> Flow[ImageResult]:
        """Submit, then wait: the whole of ``run`` (and ``generate`` / ``edit``).

        With ``push``, ``webhook_url`` is the driver's receiver URL for this job, and the wait
        sleeps until its callback (:class:`WaitForSignal`), reading the status sparsely.
        With ``book_call``, the intent is written to the job book first; when the book
        already holds this call's job, that job is waited for instead of a new submit.
        """
        webhook = check_webhook_url(webhook_url)
        payload = request_body(body, extra_body)
        timeout_value, deadline = self.deadline_for(timeout)
        call_started = self.clock.monotonic()
        if book_call is not None:
            claim = yield from bk.claim(book_call, self.clock, deadline)
            if not claim.created:
                return (yield from self._continue(claim, body, timeout_value, deadline))
        submitted = yield from self._submit_booked(body, payload, webhook, deadline, book_call)
        started_at = self.clock.monotonic()
        if isinstance(submitted, JobStatus):
            # Answered inline (sync_mode): the whole job ran inside the POST.
            if submitted.status is Status.COMPLETED and submitted.has_output:
                yield Notify(submitted, started_at - call_started)
                yield from self._note_final(submitted)
                return ImageResult.from_status(submitted, body)
            if submitted.status.is_failure:
                yield Notify(submitted, started_at - call_started)
                yield from self._note_final(submitted)
                raise JobFailedError(submitted)
            initial = submitted
        else:
            initial = JobStatus(
                request_id=submitted.request_id,
                status=submitted.status,
                raw_status=submitted.status.value,
                polling_url=submitted.polling_url,
            )
        self._remember(initial, body)
        return (
            yield from self._wait_noted(
                _Wait(
                    request_id=initial.request_id,
                    polling_url=initial.polling_url,
                    timeout=timeout_value,
                    deadline=deadline,
                    origin=started_at,
                    window=self.durations.window(body.operation, self.poll_policy),
                    submitted_here=True,
                    initial=initial,
                    request=body,
                    push=push,
                )
            )
        )

    def submit_only_flow(
        self,
        body: JobRequest,
        *,
        webhook_url: str | None,
        extra_body: Mapping[str, Any] | None = None,
        book_call: bk.BookCall | None = None,
    ) -> Flow[Job]:
        """Submit without waiting (``submit``); an earlier job the book holds is returned."""
        webhook = check_webhook_url(webhook_url)
        payload = request_body(body, extra_body)
        _, deadline = self.deadline_for(None)
        if book_call is not None:
            claim = yield from bk.claim(book_call, self.clock, deadline)
            if not claim.created:
                earlier = claim.record
                assert earlier.request_id is not None
                self.recent.remember(earlier.request_id, body, self.clock.monotonic() - claim.age)
                return Job(
                    request_id=earlier.request_id,
                    status=parse_status(earlier.status or "QUEUED"),
                    polling_url=earlier.polling_url,
                )
        submitted = yield from self._submit_booked(body, payload, webhook, deadline, book_call)
        if isinstance(submitted, JobStatus) and submitted.status.is_terminal:
            yield from self._note_final(submitted)
        self._remember(submitted, body)
        if isinstance(submitted, JobStatus):
            return Job(
                request_id=submitted.request_id,
                status=submitted.status,
                polling_url=submitted.polling_url,
            )
        return submitted

    def status_flow(self, request_id: str) -> Flow[JobStatus]:
        """One status read (``get_status``), retried up to ``max_retries`` on transient failures."""
        check_request_id(request_id)
        _, deadline = self.deadline_for(None)
        url = self.wire.status_url(request_id, None)
        failures = 0
        while True:
            try:
                return (yield from self._read_status(request_id, url, deadline))
            except _Transient as exc:
                failures += 1
                delay = (
                    self._retry_delay(failures, exc.retry_after, deadline)
                    if failures <= self.options.max_retries
                    else None
                )
                if delay is None:
                    raise exc.failure from exc.failure.__cause__
                logger.info("status read for %s failed (%s); retrying", request_id, exc.failure)
                yield Sleep(delay)

    def resume_flow(
        self,
        request_id: str,
        polling_url: str | None,
        *,
        timeout: float | None,
        push: bool = False,
    ) -> Flow[ImageResult]:
        """Wait for a job by id (``wait``): poll at once, then as for a job of unknown age.

        ``push``: the job was submitted with this client's receiver URL (``submit_*``, or a
        wait that ran out of time); after the first read, wait for its callback.
        """
        check_request_id(request_id)
        timeout_value, deadline = self.deadline_for(timeout)
        known = self.recent.get(request_id)
        if known is not None:
            # Submitted by this client: its age and the learned window are known, as in run.
            plan = _Wait(
                request_id=request_id,
                polling_url=polling_url,
                timeout=timeout_value,
                deadline=deadline,
                origin=known.at,
                window=self.durations.window(known.request.operation, self.poll_policy),
                submitted_here=True,
                request=known.request,
                push=push,
            )
        else:
            plan = _Wait(
                request_id=request_id,
                polling_url=polling_url,
                timeout=timeout_value,
                deadline=deadline,
                origin=self.clock.monotonic(),
                window=None,
                submitted_here=False,
                push=push,
            )
        return (yield from self._wait_noted(plan))

    # ------------------------------------------------------------------ the job book

    def _submit_booked(
        self,
        body: JobRequest,
        payload: Mapping[str, Any],
        webhook_url: str | None,
        deadline: float,
        book_call: bk.BookCall | None,
    ) -> Flow[Job | JobStatus]:
        """:meth:`_submit`, settling the call's intent in the book by how it ended."""
        if book_call is None:
            return (yield from self._submit(body, payload, webhook_url, deadline))
        try:
            submitted = yield from self._submit(body, payload, webhook_url, deadline)
        except GeneratorExit:
            raise
        except BaseException as exc:
            yield from bk.submit_failed(book_call, exc)
            raise
        yield from bk.submitted(book_call, submitted)
        return submitted

    def _continue(
        self, claim: Claim, body: JobRequest, timeout: float, deadline: float
    ) -> Flow[ImageResult]:
        """Wait for the earlier job the book holds for this call (it is not sent again)."""
        earlier = claim.record
        assert earlier.request_id is not None
        running = earlier.state == "submitted"
        origin = self.clock.monotonic() - claim.age
        self.recent.remember(earlier.request_id, body, origin)
        logger.info(
            "continuing job %s (the job book holds this call's job; not sent again)",
            earlier.request_id,
        )
        plan = _Wait(
            request_id=earlier.request_id,
            polling_url=earlier.polling_url,
            timeout=timeout,
            deadline=deadline,
            origin=origin,
            window=self.durations.window(body.operation, self.poll_policy),
            # A finished job is read at once; a running one is polled by its age.
            submitted_here=running,
            request=body,
        )
        return (yield from self._wait_noted(plan))

    def _note_final(self, status: JobStatus) -> Flow[None]:
        if self.book is not None:
            yield from bk.finished(
                status.request_id, status.status.value, list(status.image_urls), status.error
            )

    def _wait_noted(self, plan: _Wait) -> Flow[ImageResult]:
        """:meth:`_wait`, recording the job's outcome in the book."""
        try:
            result = yield from self._wait(plan)
        except JobFailedError as exc:
            yield from self._note_final(exc.job)
            raise
        if self.book is not None:
            yield from bk.finished(result.request_id, "COMPLETED", list(result.image_urls), None)
        return result

    # ------------------------------------------------------------------ steps

    def _submit(
        self, body: JobRequest, payload: Mapping[str, Any], webhook_url: str | None, deadline: float
    ) -> Flow[Job | JobStatus]:
        """POST the job. Retried only when the gateway certainly did nothing (429, no connect).

        Returns a :class:`Job`, or a :class:`JobStatus` when the gateway answered inline
        (sync mode).
        """
        operation = body.operation
        url = self.wire.submit_url(body)
        # Inline (sync mode) answers carry the images themselves.
        cap = MAX_INLINE_ANSWER_BYTES if body.sync_mode else MAX_ANSWER_BYTES
        attempt = 0
        while True:
            request = self._request(
                "POST", url, payload, deadline, max_body=cap, webhook_url=webhook_url
            )
            reply = _reply((yield request))
            failure: Exception
            retry_after: float | None = None
            if isinstance(reply, httpx.TransportError):
                if not isinstance(reply, NEVER_SENT):
                    err = transport_error(reply, what=f"Submitting the {operation} request")
                    err.message += (
                        " The gateway may have received it: a job may exist; it was not "
                        "re-sent to avoid a duplicate (charged) job."
                    )
                    err.args = (err.message,)
                    err.may_have_arrived = True
                    raise err from reply
                failure = transport_error(reply, what=f"Submitting the {operation} request")
                failure.__cause__ = reply
            elif reply.status_code == 429:
                throttled = self.wire.status_error(reply, None)
                failure, retry_after = throttled, throttled.retry_after
            elif not reply.is_success:
                raise self.wire.status_error(reply, None)
            else:
                return self._submitted(self._parse_submit(reply))
            attempt += 1
            delay = (
                self._retry_delay(attempt, retry_after, deadline)
                if attempt <= self.options.max_retries
                else None
            )
            if delay is None:
                raise failure from failure.__cause__
            logger.info(
                "submit attempt %d failed (%s); retrying in %.2fs",
                attempt,
                type(failure).__name__,
                delay,
            )
            yield Sleep(delay)

    def _parse_submit(self, reply: httpx.Response) -> Job | JobStatus:
        try:
            return self.wire.parse_submit(reply)
        except APIResponseError as exc:
            if exc.may_have_arrived:
                exc.message += (
                    " A job may have been created; the request was not re-sent to avoid a "
                    "duplicate (charged) job."
                )
                exc.args = (exc.message,)
            raise

    @staticmethod
    def _submitted(job: Job | JobStatus) -> Job | JobStatus:
        """The gateway's answer, if its request id is one we can poll; the job exists now.

        A finished answer (sync mode: the images inline, or FAILED/ERROR) needs no poll: its
        id is kept as sent, never a reason to throw the images away.
        """
        if isinstance(job, JobStatus) and (
            job.status.is_failure or (job.status is Status.COMPLETED and job.has_output)
        ):
            return job
        try:
            check_request_id(job.request_id)
        except InvalidArgumentError:
            raise APIResponseError(
                f"The gateway created a job with an id that cannot be used to poll it "
                f"({job.request_id[:80]!r}); the job may run and be charged. Look it up in the "
                "Pixazo dashboard's request history.",
                may_have_arrived=True,
            ) from None
        return job


def job_ref(job_or_request_id: Job | JobStatus | str) -> tuple[str, str | None]:
    """(request_id, polling_url) from a Job, a JobStatus or a bare id."""
    if isinstance(job_or_request_id, Job | JobStatus):
        return job_or_request_id.request_id, job_or_request_id.polling_url
    if isinstance(job_or_request_id, str):
        return check_request_id(job_or_request_id.strip()), None
    raise InvalidArgumentError(
        f"Expected a Job or a request id string, got {type(job_or_request_id).__name__}."
    )
