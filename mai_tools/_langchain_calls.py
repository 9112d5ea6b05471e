"""The LangChain job tools' part of the job book: how a call is keyed, and when its answer
counts as delivered (an identical call is then a new job). See ``mai_tools.langchain``."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ._agent import Done, Failed, FailureKind, Outcome, Running
from ._async_client import AsyncMAIImageClient
from ._client import MAIImageClient
from ._exceptions import IdempotencyKeyReusedError, JobBookError, JobUnknownError
from .jobbook import LOCAL_PRINCIPAL, JobBook, JobScope
from .jobbook._record import MAX_KEY_LENGTH

logger = logging.getLogger("mai_tools")


@dataclass(frozen=True)
class Invocation:
    """What LangChain says about one call besides its arguments."""

    tool_call_id: str | None = None
    thread_id: str | None = None


INVOCATION: ContextVar[Invocation | None] = ContextVar(
    "mai_tools_langchain_invocation", default=None
)
"""Set by a job tool's ``run``/``arun`` for its ``_run``/``_arun``: BaseTool passes the
``tool_call_id`` of a ToolCall input to ``run`` (and to the callbacks) but not to ``_run``."""


def invocation_of(run_kwargs: Mapping[str, Any]) -> Invocation:
    call_id = run_kwargs.get("tool_call_id")
    config = run_kwargs.get("config") or {}
    thread = (config.get("configurable") or {}).get("thread_id")
    return Invocation(
        call_id if isinstance(call_id, str) and call_id else None,
        str(thread) if thread is not None and str(thread) else None,
    )


def tool_call_key(tool: str, tool_call_id: str, thread_id: str | None = None) -> str:
    """The ``idempotency_key`` of a job tool's call: ``langchain:<tool>:<tool_call_id>``, or
    ``langchain:<tool>:<thread_id>:<tool_call_id>`` inside a LangGraph thread (so two threads
    whose model reuses ids never share a job). Hashed when longer than a key may be."""
    key = ":".join(
        ["langchain", tool, *([thread_id] if thread_id is not None else []), tool_call_id]
    )
    if len(key) > MAX_KEY_LENGTH:
        digest = hashlib.sha256(f"{tool}\0{thread_id}\0{tool_call_id}".encode()).hexdigest()
        key = f"langchain:sha256:{digest}"
    return key


@dataclass(frozen=True)
class BookKeys:
    """How one job tool call is known to the job book."""

    tool: str
    tool_call_id: str | None
    idempotency_key: str | None
    digest: str
    """The exact call (:func:`~mai_tools._tools.call_digest`)."""

    def key(self, client: MAIImageClient | AsyncMAIImageClient) -> str | None:
        """The call's ``idempotency_key=`` (none when the client keeps no book)."""
        return None if client.job_book is None else self.idempotency_key

    def scope(self, client: MAIImageClient | AsyncMAIImageClient) -> JobScope | None:
        """The call's ``job_scope=``. Its twin key names the gateway too: a job of one gateway
        (an emulator of a test run) is never adopted by a call to another."""
        if client.job_book is None:
            return None
        twin = hashlib.sha256(f"{client.base_url}\0{self.digest}".encode()).hexdigest()
        return JobScope(
            principal=LOCAL_PRINCIPAL, surface="langchain", twin_key=f"langchain:{twin}"
        )


def delivers(outcome: Outcome) -> tuple[bool, str | None]:
    """(does returning this answer settle the call, the job it is about).

    Images, "still running" and an error the model reads are delivered: an identical call is
    then a new job. An error raised to the application is not (the job stays adoptable)."""
    if isinstance(outcome, Done):
        return True, outcome.result.request_id
    if isinstance(outcome, Running):
        return True, outcome.request_id
    if outcome.who == "operator":
        return False, None
    if outcome.request_id is not None:
        return True, outcome.request_id
    # A submit that may have arrived (no request id): its entry is the one to settle.
    return outcome.kind is FailureKind.MAY_EXIST, None


def deliver(book: JobBook, scope: JobScope, request_id: str | None) -> None:
    assert scope.twin_key is not None
    try:
        book.delivered(scope.principal, scope.twin_key, request_id)
    except JobBookError as exc:  # the answer matters more than the bookkeeping
        logger.warning("job book: could not mark an answer delivered: %s", exc)


def _when(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def tool_call_message(failed: Failed, keys: BookKeys) -> str | None:
    """What the model is told when the failure is about this call's tool call id."""
    error, tool, call_id = failed.error, keys.tool, keys.tool_call_id
    if keys.idempotency_key is None or getattr(error, "idempotency_key", None) != (
        keys.idempotency_key
    ):
        return None
    if isinstance(error, IdempotencyKeyReusedError):
        detail = (
            "the request differs"
            if error.field is None
            else f"{error.field} was {error.earlier!r} there and is {error.given!r} here"
        )
        return (
            f"Nothing was sent: tool call id {call_id!r} already named a {tool} call with other "
            f"arguments at {_when(error.created_at)} ({detail}). A tool call id names one job "
            "(that is what keeps a resumed graph from paying twice), so the same id with new "
            f"arguments is refused. Call {tool} again as a new tool call, with a new id."
        )
    if isinstance(error, JobUnknownError):
        return (
            f"This {tool} call (tool call id {call_id!r}) may already have created a job at "
            f"{_when(error.created_at)}: its submit was sent, but the process stopped before "
            "the gateway's request id was recorded. It was not sent again, to avoid paying "
            "twice. Tell the user; they can find the job in the Pixazo dashboard. Calling "
            f"{tool} again starts a new, paid job."
        )
    return None


__all__ = [
    "INVOCATION",
    "BookKeys",
    "Invocation",
    "deliver",
    "delivers",
    "invocation_of",
    "tool_call_key",
    "tool_call_message",
]
