"""The job book's part of a flow: write the intent before a submit, note what came of it,
and decide what a call does when the book already holds its job.

These are pieces of the sans-I/O flows (:mod:`mai_tools._flow`): they yield
:class:`~mai_tools._actions.BookIO` and :class:`~mai_tools._actions.Sleep`; the drivers run
them. A failure to *record* something after a submit never fails the job (the request id is
logged instead); a failure before a submit stops it: nothing is sent without its intent.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from operator import methodcaller
from typing import Any, cast

from ._actions import Abandoned, BookIO, Flow, Sleep
from ._exceptions import (
    APIError,
    IdempotencyKeyReusedError,
    InvalidArgumentError,
    JobBookError,
    JobUnknownError,
)
from ._models import Job, JobRequest, JobStatus
from ._policies import Clock
from .jobbook import JobBook, JobRecord, JobScope
from .jobbook._limits import SpendingLimits, per_call_refusal
from .jobbook._record import (
    Claim,
    Described,
    check_idempotency_key,
    describe,
    first_difference,
    new_id,
    owner,
    short_value,
)

logger = logging.getLogger("mai_tools.jobbook")

MAX_LEASE = 120.0
"""Longest an intent's owner is trusted to still be sending its submit (seconds); a peer on
another machine waits at most this long before calling an intent whose owner vanished
"unknown" (on the same machine a dead owner is seen at once)."""
_FIRST_PAUSE = 0.05
_MAX_PAUSE = 0.5


@dataclass(frozen=True)
class BookCall:
    """What one call writes into the book: its keys and its request's description."""

    job_id: str
    key: str | None
    scope: JobScope
    described: Described
    gateway: str
    limits: SpendingLimits | None = None
    """The operator's spending limits: the claim reserves the call's images within them."""

    def record(self) -> JobRecord:
        d = self.described
        return JobRecord(
            id=self.job_id,
            principal=self.scope.principal,
            surface=self.scope.surface,
            operation=d.operation,
            fingerprint=d.fingerprint,
            fields=d.fields,
            prompt=d.prompt,
            gateway=self.gateway,
            idempotency_key=self.key,
            twin_key=self.scope.twin_key,
            owner=owner(),
        )


def plan_call(
    book: JobBook | None,
    gateway: str,
    request: JobRequest,
    extra_body: Mapping[str, Any] | None,
    key: str | None,
    scope: JobScope | None,
    limits: SpendingLimits | None = None,
) -> BookCall | None:
    """The call's book entry (checked before anything is sent), or None without a book.

    Raises:
        SpendingLimitError: the call asks for more images than one call may.
    """
    if limits is not None:
        refused = per_call_refusal(limits, request.num_images)
        if refused is not None:
            raise refused
    if key is not None:
        key = check_idempotency_key(key)
    if scope is not None and not isinstance(scope, JobScope):
        raise InvalidArgumentError(
            f"job_scope must be a mai_tools.jobbook.JobScope; got {type(scope).__name__}."
        )
    if book is None:
        if key is not None:
            raise InvalidArgumentError(
                "idempotency_key= needs a job book, and this client has none (job_book='off' "
                "or MAI_JOB_BOOK=off): the key could not be remembered. Turn the book on, or "
                "drop idempotency_key=. Nothing was sent."
            )
        return None
    described = describe(request, extra_body, store_prompts=book.store_prompts)
    return BookCall(new_id(), key, scope or JobScope(), described, gateway, limits)


def _when(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _unknown(call: BookCall, earlier: JobRecord) -> JobUnknownError:
    if earlier.idempotency_key is not None and earlier.idempotency_key == call.key:
        what = f"A job for idempotency key {call.key!r}"
        forward = (
            "If no image came of it (the Pixazo dashboard lists your requests), call again "
            "with a new idempotency_key."
        )
    else:
        what = "A job for an identical call (the same arguments)"
        forward = "Calling again now makes a new job."
    return JobUnknownError(
        f"{what} may have been created at {_when(earlier.created)}: its submit was sent, but "
        "its process stopped (or lost the answer) before the gateway's request id was "
        "recorded. It was not sent again, to avoid paying twice. "
        f"{forward}",
        idempotency_key=earlier.idempotency_key,
        created_at=earlier.created,
    )


def _key_reused(call: BookCall, earlier: JobRecord) -> IdempotencyKeyReusedError:
    assert call.key is not None
    diff = first_difference(earlier.fields, earlier.operation, call.described)
    field_text = (
        "its request differs"
        if diff is None
        else f"{diff[0]} was {diff[1]!r} there and is {diff[2]!r} here"
    )
    field, was, now = diff if diff is not None else (None, None, None)
    return IdempotencyKeyReusedError(
        f"idempotency_key {call.key!r} was used at {_when(earlier.created)} for another "
        f"request ({field_text}). A key names one job: use a new key for a different request, "
        "or repeat the first request exactly. Nothing was sent.",
        idempotency_key=call.key,
        field=field,
        earlier=was,
        given=now,
        created_at=earlier.created,
    )


def claim(call: BookCall, clock: Clock, deadline: float) -> Flow[Claim]:
    """Write the call's intent, or return the earlier job it should continue.

    Waits (sleeping) while another call is sending the same job's submit; raises
    :class:`JobUnknownError` for an earlier submit that may have arrived without a request
    id, and :class:`InvalidArgumentError` for a key reused with other arguments.
    """
    pause = _FIRST_PAUSE
    while True:
        lease = min(max(deadline - clock.monotonic(), 0.0), MAX_LEASE) + 10.0
        record = call.record()
        try:
            if call.limits is not None and call.limits.daily:
                reply = yield BookIO(methodcaller("claim", record, lease, limits=call.limits))
            else:
                reply = yield BookIO(methodcaller("claim", record, lease))
            got = cast(Claim, reply)
        except Abandoned:
            yield from note(lambda book: book.release(call.job_id))
            raise
        except JobBookError as exc:
            raise JobBookError(
                f"{exc} Nothing was sent: a job is submitted only once its intent is recorded."
            ) from None
        if got.created:
            return got
        earlier = got.record
        by_key = call.key is not None and earlier.idempotency_key == call.key
        if earlier.fingerprint != call.described.fingerprint:
            if by_key:
                raise _key_reused(call, earlier)
            # The same call's arguments name other content (an edited file changed): a new job.
            yield BookIO(methodcaller("untwin", earlier.id))
            continue
        if earlier.state == "unknown" or got.stale:
            if got.stale:
                yield from note(methodcaller("unknown", earlier.id, "its process stopped"))
            raise _unknown(call, earlier)
        if earlier.state != "intent":
            return got
        if clock.monotonic() + pause >= deadline:
            raise JobUnknownError(
                f"Another call (process {earlier.owner}) has been sending this same job's "
                f"submit since {_when(earlier.created)} and has no answer yet; it was not sent "
                "twice. Try again in a moment.",
                idempotency_key=earlier.idempotency_key,
                created_at=earlier.created,
            )
        yield Sleep(pause)
        pause = min(pause * 2, _MAX_PAUSE)


def note(op: Callable[[JobBook], object]) -> Flow[None]:
    """Record something in the book; a failure is logged, never raised (the job goes on)."""
    try:
        yield BookIO(op)
    except JobBookError as exc:
        logger.warning("job book: %s", exc)


def submitted(call: BookCall, job: Job | JobStatus) -> Flow[None]:
    try:
        yield BookIO(
            lambda book: book.submitted(
                call.job_id, job.request_id, job.polling_url, job.status.value
            )
        )
    except JobBookError as exc:
        # The job exists and is paid for: its id must reach someone even if the book is gone.
        logger.warning(
            "job book: could not record request id %s (the job exists): %s", job.request_id, exc
        )


def submit_failed(call: BookCall, exc: BaseException) -> Flow[None]:
    """Settle the intent of a submit that raised: forget it, or mark it unknown."""
    if isinstance(exc, Abandoned):
        may_have_arrived = exc.sent
    else:
        may_have_arrived = isinstance(exc, APIError) and exc.may_have_arrived
    if may_have_arrived:
        reason = f"{type(exc).__name__}: {exc}"[:500]
        yield from note(lambda book: book.unknown(call.job_id, reason))
    else:
        yield from note(lambda book: book.release(call.job_id))


def finished(request_id: str, status: str, urls: list[str], error: str | None) -> Flow[None]:
    # Inline (sync mode) images are data: URIs: the book keeps a digest, not the base64.
    kept = [short_value(u) for u in urls]
    yield from note(lambda book: book.finished(request_id, status, kept, error))
