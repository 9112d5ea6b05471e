"""The run's gate: every API request of a run passes it, right before the client sends it.

The client calls :meth:`RunGate.admit` after it took one of its own request slots and just
before it sends (:class:`~mai_tools._actions.AsyncRequestGate`). There the run applies its
pace: the token bucket of ``rps`` (every request), the status-read budget (status reads only:
thousands of jobs in flight share it, so each polls less often), and the run-wide pause that a
429 starts. When the run stops, :meth:`RunGate.admit` refuses with :class:`Stopped`: nothing
more is sent. :meth:`RunGate.observe` hears every answer: a 429 (or a used-up call quota)
pauses the whole run.

:class:`LineGate` is the gate of one line's submit: it records the line's intent
("submitting") once the POST is admitted, immediately before it leaves, and takes it back
("pending") when the answer says nothing was created and the client may try again. A crash
leaves "submitting" (UNKNOWN to the next run) only the lines whose POST was then on the wire,
never a line still waiting for a request slot or for its next try.
"""

from __future__ import annotations

import httpx

from .._actions import NEVER_SENT, HTTPRequest
from .._policies import parse_retry_after
from .._wire import error_details, is_quota_error, quota_wait
from ._journal import Row
from ._pacing import Pacer
from ._state import RunState, Stopped

DEFAULT_PAUSE = 1.0
"""How long the run pauses for a 429 without a ``Retry-After``."""


def pause_for(reply: httpx.Response) -> float | None:
    """Seconds the whole run should pause for ``reply`` (None: not a throttling answer)."""
    asked = parse_retry_after(reply.headers.get("retry-after"))
    if reply.status_code == 429:
        return asked if asked is not None else DEFAULT_PAUSE
    if reply.status_code == 403:
        _, message, _ = error_details(reply)
        if is_quota_error(403, message):
            return asked if asked is not None else (quota_wait(message) or DEFAULT_PAUSE)
    return None


class RunGate:
    """The gate every request of one run passes (see the module docstring)."""

    def __init__(self, state: RunState, *, reads_per_second: float) -> None:
        self._state = state
        self._reads = Pacer(reads_per_second)

    async def admit(self, request: HTTPRequest) -> None:
        state = self._state
        if request.kind == "status" and not await self._reads.acquire(state.stop_event):
            raise Stopped
        await state.acquire()

    def observe(self, request: HTTPRequest, reply: httpx.Response | httpx.TransportError) -> None:
        if isinstance(reply, httpx.Response):
            seconds = pause_for(reply)
            if seconds is not None:
                what = "a submission" if request.kind == "submit" else "a status read"
                self._state.pause(seconds, f"{reply.status_code} to {what}")


class LineGate:
    """The gate of one line's submit: the run's pace, then the line's intent on disk."""

    def __init__(self, run: RunGate, state: RunState, row: Row, *, durable: bool) -> None:
        self._run = run
        self._state = state
        self._row = row
        self._durable = durable

    async def admit(self, request: HTTPRequest) -> None:
        await self._run.admit(request)
        if request.kind == "submit":
            # On disk before the POST leaves (and only then): a crash from here on leaves the
            # line "submitting", which the next run reports UNKNOWN instead of sending again.
            self._state.record(self._row, durable=self._durable, state="submitting", error=None)

    def observe(self, request: HTTPRequest, reply: httpx.Response | httpx.TransportError) -> None:
        self._run.observe(request, reply)
        if request.kind == "submit" and _did_nothing(reply):
            # The client may try again after a pause (its own retry): until it does, this
            # line has no POST on the wire, so a crash must not leave it UNKNOWN.
            self._state.record(self._row, state="pending")


def _did_nothing(reply: httpx.Response | httpx.TransportError) -> bool:
    """A submit's answer that certainly created no job, which the client may retry: a 429, or
    a connection never made (the rule of :mod:`mai_tools._flow` for retrying a POST)."""
    if isinstance(reply, httpx.Response):
        return reply.status_code == 429
    return isinstance(reply, NEVER_SENT)
