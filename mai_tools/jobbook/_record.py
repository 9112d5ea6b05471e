"""What the job book holds of one job, and how a request is described in it.

A row is written *before* the submit is sent (state ``intent``), gets its request id right
after (``submitted``), then its outcome (``finished``), or is marked ``unknown`` when the submit
may have reached the gateway but its answer was never recorded (it may be charged).
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from .._models import JobRequest, request_body

State = Literal["intent", "submitted", "finished", "unknown"]
STATES: Final[tuple[State, ...]] = ("intent", "submitted", "finished", "unknown")
"""The states of a job in the book: about to be sent, sent (has a request id), finished, and
unknown (a submit that may have created a job whose request id was never recorded)."""

Event = Literal["intent", "submitted", "finished", "unknown", "released"]
EVENTS: Final[tuple[Event, ...]] = ("intent", "submitted", "finished", "unknown", "released")
"""The changes of a job's state the book tells its observers of (``released``: an intent whose
submit certainly created nothing was forgotten)."""

Surface = Literal["client", "langchain", "mcp", "batch", "cli"]
SURFACES: Final[tuple[Surface, ...]] = ("client", "langchain", "mcp", "batch", "cli")
"""The front ends a job can come from; each record names its surface."""

LOCAL_PRINCIPAL: Final = "local"
"""The principal of a single local user (the client, the CLI, a stdio MCP server)."""

RETENTION_DAYS: Final = 30.0
"""Rows older than this are deleted (when a book is opened, and then once a day)."""

ADOPT_WINDOW: Final = 600.0
"""Seconds after its last change during which an undelivered job is adopted by an identical
call (the same window an MCP server kept in memory before the book)."""

RUNNING_ADOPT_WINDOW: Final = 3600.0
"""A job still running (submitted, no outcome recorded) is adoptable this long after its
submit: its waiter may have died without recording anything."""

MAX_KEY_LENGTH: Final = 255
PROMPT_CHARS: Final = 200
"""Characters of the prompt the book keeps for listings."""
_LONG_VALUE: Final = 1000


def now() -> float:
    return time.time()


def new_id() -> str:
    return uuid.uuid4().hex


_HOST: Final = socket.gethostname()


def owner() -> str:
    """This process, as written into an intent: ``host:pid``."""
    return f"{_HOST}:{os.getpid()}"


def owner_is_dead(owner_of_intent: str) -> bool:
    """True when the process that wrote an intent is known to be gone (same host, no pid).

    Across hosts nothing is known: the intent's lease decides.
    """
    host, _, pid_text = owner_of_intent.rpartition(":")
    if host != _HOST or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # EPERM: it exists, owned by another user
        return False
    return False


def check_idempotency_key(key: object) -> str:
    """``key`` if usable as an idempotency key, else InvalidArgumentError (nothing sent)."""
    from .._exceptions import InvalidArgumentError

    if not isinstance(key, str) or not key.strip():
        raise InvalidArgumentError(
            f"idempotency_key must be a non-empty string (e.g. your workflow's step id); "
            f"got {key!r}."
        )
    if len(key) > MAX_KEY_LENGTH:
        raise InvalidArgumentError(
            f"idempotency_key is {len(key)} characters long; the limit is {MAX_KEY_LENGTH} "
            "(hash a longer one)."
        )
    return key


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


def _short(value: Any, *, hide: bool = False) -> Any:
    """A value as the book stores it: data URIs and long text replaced by a digest.

    Two values get the same short form only if they are equal (the digest is whole), so the
    short forms still tell which field differs.
    """
    if isinstance(value, list):
        return [_short(v, hide=hide) for v in value]
    if isinstance(value, str):
        if hide:
            return f"sha256:{_digest(value)}"
        if value[:5].lower() == "data:":
            head = value.split(",", 1)[0][:80]
            return f"{head},… ({len(value)} characters, sha256:{_digest(value)})"
        if len(value) > _LONG_VALUE:
            return f"{value[:200]}… ({len(value)} characters, sha256:{_digest(value)})"
    return value


def short_value(value: str) -> str:
    """``value`` as the book keeps it: a ``data:`` URI or a long text as a digest."""
    short: str = _short(value)
    return short


@dataclass(frozen=True)
class Described:
    """A request as the book knows it."""

    operation: str
    fingerprint: str
    """sha256 of the operation and the JSON body with large values as their digests (what
    makes two submits the same job)."""
    fields: dict[str, Any]
    """The body's fields, short (see :func:`_short`), in the request model's order."""
    prompt: str | None


def describe(
    request: JobRequest, extra_body: Mapping[str, Any] | None = None, *, store_prompts: bool
) -> Described:
    body = request_body(request, extra_body)
    # Digest each large value once (an edit's data URI can be megabytes): the short forms keep a
    # whole digest, so they are equal only when the values are, and the fingerprint is taken
    # over them rather than over the body serialized again.
    shown = {name: _short(value) for name, value in body.items()}
    canonical = json.dumps(
        [request.operation, shown], sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )
    fields = shown if store_prompts else {**shown, "prompt": _short(request.prompt, hide=True)}
    prompt = None
    if store_prompts:
        prompt = " ".join(request.prompt.split())
        if len(prompt) > PROMPT_CHARS:
            prompt = prompt[: PROMPT_CHARS - 1] + "…"
    return Described(request.operation, _digest(canonical), fields, prompt)


def first_difference(
    old: Mapping[str, Any], old_operation: str, new: Described
) -> tuple[str, Any, Any] | None:
    """(field, earlier value, new value) of the first field that differs, or None."""
    if old_operation != new.operation:
        return ("operation", old_operation, new.operation)
    for name in [*new.fields, *(k for k in old if k not in new.fields)]:
        if old.get(name) != new.fields.get(name):
            return (name, old.get(name), new.fields.get(name))
    return None


@dataclass
class JobRecord:
    """One job in the book (a row). Times are seconds since the epoch."""

    id: str
    principal: str
    surface: str
    operation: str
    fingerprint: str
    fields: dict[str, Any]
    prompt: str | None
    gateway: str = ""
    """The gateway origin the job was sent to: keys and twins match only on the same one (an
    emulator's job id means nothing to the real gateway)."""
    state: State = "intent"
    idempotency_key: str | None = None
    twin_key: str | None = None
    """The exact call's arguments (MCP, LangChain): set while its answer is undelivered."""
    request_id: str | None = None
    polling_url: str | None = None
    status: str | None = None
    image_urls: list[str] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    error: str | None = None
    owner: str = ""
    lease: float = 0.0
    """Until when the intent's owner may still send its submit (then it is stale)."""
    delivered: bool = False
    created: float = 0.0
    submitted_at: float | None = None
    finished_at: float | None = None
    updated: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """The row as JSON-ready data (``mai-image jobs --json``), without internal keys."""
        return {
            "request_id": self.request_id,
            "state": self.state,
            "status": self.status,
            "operation": self.operation,
            "surface": self.surface,
            "principal": self.principal,
            "gateway": self.gateway,
            "idempotency_key": self.idempotency_key,
            "prompt": self.prompt,
            "request": self.fields,
            "image_urls": list(self.image_urls),
            "paths": list(self.paths),
            "error": self.error,
            "delivered": self.delivered,
            "created": self.created,
            "submitted_at": self.submitted_at,
            "finished_at": self.finished_at,
            "updated": self.updated,
            "id": self.id,
        }


@dataclass(frozen=True)
class Claim:
    """What :meth:`JobBook.claim` found."""

    record: JobRecord
    created: bool
    """True: the new intent was written (the caller submits). False: ``record`` is an earlier
    job with the same idempotency key, or an undelivered one with the same arguments."""
    stale: bool = False
    """An intent whose owner is gone or whose lease ran out: its submit may have arrived."""
    age: float = 0.0
    """Seconds since the earlier job was submitted (0 when not submitted)."""


@dataclass(frozen=True)
class JobScope:
    """Who a call is for and how it may be matched, as a front end tells the client.

    Attributes:
        principal: the identity the job belongs to (``"local"`` for a single local user).
        surface: which front end made the job (client, langchain, mcp, batch, cli).
        twin_key: the exact call (tool name and arguments); an identical call adopts the
            job while its answer is undelivered (see :meth:`JobBook.delivered`).
    """

    principal: str = LOCAL_PRINCIPAL
    surface: str = "client"
    twin_key: str | None = None
