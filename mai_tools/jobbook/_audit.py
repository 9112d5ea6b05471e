"""The audit log: one JSON line per change of a job's state, in a file an operator ships.

An :class:`AuditLog` observes a job book (:attr:`JobBook.observers`): every intent written,
submit answered, outcome recorded, intent marked unknown (a peer's stale one too, by
:meth:`JobBook.sweep`) and intent released becomes one record; :meth:`AuditLog.refused` adds a
call a limit stopped before anything was sent. A record holds who (``principal``), where
(``surface``, ``tool``), which job (``request_id``, the book's ``job_id``), how much
(``num_images``, ``estimated_cost`` when a price per image is set), and the prompt's sha256;
the prompt's text only when the operator opts in (``prompts=True``).

**What is never in it:** no API key, token, JWT or data URI. A record is built from the
book's row, which holds none (inline images are digests there); free text (the prompt, an
error) is scrubbed of ``data:`` URIs and of anything shaped like a JWT, and every value of
``redact`` (the server passes its key and tokens) is replaced, as a last line of defence.

**Appending:** the file is opened once with ``O_APPEND`` (created with mode 600) and each
record is one ``write(2)`` of at most :data:`MAX_RECORD_BYTES` bytes, ending in a newline. On
a local POSIX file system the kernel moves to the end and writes in one step, so processes and
replicas appending to one file never interleave or overwrite each other's lines; a pipe or
FIFO (``/dev/stdout`` under a container runtime) keeps a write of at most ``PIPE_BUF`` bytes
(4096 on Linux: the record cap) whole. NFS and other network file systems do not honour
``O_APPEND`` across machines: give each replica a local file and ship them. Records are not
fsynced: a killed process loses none (they are in the kernel at once), a power cut may lose the
last ones.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import threading
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Final

from .._exceptions import ConfigurationError
from ._book import JobBook
from ._record import Event, JobRecord, now, owner

logger = logging.getLogger("mai_tools.jobbook")

MAX_RECORD_BYTES: Final = 4096
"""The longest record (PIPE_BUF on Linux): a longer prompt or error is cut to fit."""
MAX_ERROR_CHARS: Final = 500
AGENT_SURFACES: Final = frozenset({"mcp", "langchain"})
"""Surfaces whose jobs are made by a named tool (``tool_names`` maps operations to it)."""

# What the book keeps of a prompt it shortened (jobbook._record._short): a digest alone, the
# head of a long one, or (a value starting with "data:") the part before its first comma.
_DIGEST_FORMS: Final = (
    re.compile(r"sha256:([0-9a-f]{64})"),
    re.compile(r"(?s).{200}… \(\d+ characters, sha256:([0-9a-f]{64})\)"),
    re.compile(r"(?is)data:[^,]{0,75},… \(\d+ characters, sha256:([0-9a-f]{64})\)"),
)
_DATA_URI: Final = re.compile(r"data:[^\s,]{0,200},[A-Za-z0-9+/=%_\-.]*", re.IGNORECASE)
_JWT: Final = re.compile(r"eyJ[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]*")
_REDACTED: Final = "[redacted]"
_FREE_TEXT: Final = ("prompt", "error", "reason", "principal")
"""The values that come from people or other systems: scrubbed, and cut when a record is long
(the others are this library's names, ids and times)."""


def _iso(epoch: float) -> str:
    stamp = datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds")
    return stamp.replace("+00:00", "Z")


def prompt_sha256(stored: object) -> str | None:
    """The sha256 (hex) of a prompt, from the value the book keeps in a row's ``fields``: the
    prompt itself, or (long, or hidden with ``MAI_JOB_BOOK_PROMPTS=off``) its digest."""
    if not isinstance(stored, str):
        return None
    for form in _DIGEST_FORMS:
        found = form.fullmatch(stored)
        if found is not None:
            return found.group(1)
    return hashlib.sha256(stored.encode("utf-8")).hexdigest()


def _prompt_text(stored: object, listed: str | None) -> str | None:
    """The prompt's text as the book keeps it: whole (up to 1000 characters), else the short
    form it lists (200 characters), else None (the book keeps only digests)."""
    if isinstance(stored, str) and not any(f.fullmatch(stored) for f in _DIGEST_FORMS):
        return stored
    return listed


class AuditLog:
    """An append-only JSONL file of job state changes; attach it to a job book.

    Args:
        path: the file (created with mode 600 if missing; its directory must exist).
        prompts: also write each prompt's text (as the book keeps it: up to 1000 characters
            whole, a longer one's first 200; none when the book keeps only digests,
            ``MAI_JOB_BOOK_PROMPTS=off``). Off: only its sha256.
        price_per_image: adds ``estimated_cost`` (``num_images`` times this, as a decimal
            string) to each record; None leaves it out.
        currency: written beside ``estimated_cost`` (e.g. ``"USD"``).
        tool_names: operation -> tool name for the agent surfaces (MCP, LangChain); other
            surfaces' records name the operation.
        redact: secrets replaced by ``[redacted]`` wherever they would appear (a last line of
            defence: records are built from data that holds none).
        clock: wall-clock seconds (tests inject one).

    Raises:
        ConfigurationError: the file cannot be opened for appending (the message says why).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        prompts: bool = False,
        price_per_image: Decimal | None = None,
        currency: str | None = None,
        tool_names: Mapping[str, str] | None = None,
        redact: Iterable[str] = (),
        clock: Callable[[], float] = now,
    ) -> None:
        self.path = Path(path).expanduser()
        self.prompts = prompts
        if price_per_image is not None and not (
            price_per_image.is_finite() and price_per_image >= 0
        ):
            raise ConfigurationError(
                f"The audit log's price per image must be a number of 0 or more; got "
                f"{price_per_image}."
            )
        self.price_per_image = price_per_image
        self.currency = currency
        self.tool_names = dict(tool_names or {})
        self._redact = sorted({s for s in redact if s}, key=len, reverse=True)
        self.clock = clock
        self._lock = threading.Lock()
        self._owner = owner()
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)
        try:
            self._fd: int | None = os.open(self.path, flags, 0o600)
        except OSError as exc:
            raise ConfigurationError(
                f"Cannot open the audit log {self.path} for appending: "
                f"{exc.strerror or type(exc).__name__}. Give a file whose directory exists "
                "and that this user may write (it is created with mode 600)."
            ) from None

    def __repr__(self) -> str:
        return f"AuditLog({str(self.path)!r}, prompts={self.prompts})"

    # ------------------------------------------------------------------ a book's observer

    def attach(self, book: JobBook) -> None:
        """Record every change of a job's state made through ``book``."""
        if self not in book.observers:
            book.observers.append(self)

    def detach(self, book: JobBook) -> None:
        if self in book.observers:
            book.observers.remove(self)

    def __call__(self, event: Event, record: JobRecord) -> None:
        """The book's observer: one record for ``event`` on ``record`` (the committed row)."""
        self.write(self.entry(event, record))

    def entry(self, event: Event, record: JobRecord) -> dict[str, Any]:
        """The record the change ``event`` of ``record`` makes (not yet written)."""
        stored = record.fields.get("prompt")
        num = record.fields.get("num_images", 1)
        num_images = num if isinstance(num, int) and not isinstance(num, bool) else 1
        charged = event != "released" and not (event == "finished" and record.status == "ERROR")
        return self._entry(
            event=event,
            principal=record.principal,
            surface=record.surface,
            tool=self._tool(record.surface, record.operation),
            operation=record.operation,
            request_id=record.request_id,
            job_id=record.id,
            num_images=num_images,
            status=record.status,
            charged=charged,
            sha=prompt_sha256(stored),
            prompt=_prompt_text(stored, record.prompt),
            error=record.error if event in ("finished", "unknown") else None,
        )

    # ------------------------------------------------------------------ refusals

    def refused(
        self,
        *,
        principal: str,
        surface: str,
        tool: str,
        num_images: int,
        reason: str,
        operation: str | None = None,
        prompt: str | None = None,
    ) -> None:
        """Record a call refused before anything was sent (a limit, a declined confirmation):
        ``reason`` says which, in words; its ``estimated_cost`` is 0."""
        self.write(
            self._entry(
                event="refused",
                principal=principal,
                surface=surface,
                tool=tool,
                operation=operation,
                request_id=None,
                job_id=None,
                num_images=num_images,
                status=None,
                charged=False,
                sha=None if prompt is None else prompt_sha256(prompt),
                prompt=prompt,
                reason=reason,
            )
        )

    # ------------------------------------------------------------------ writing

    def _tool(self, surface: str, operation: str) -> str:
        if surface in AGENT_SURFACES:
            return self.tool_names.get(operation, operation)
        return operation

    def _entry(
        self,
        *,
        event: str,
        principal: str,
        surface: str,
        tool: str,
        operation: str | None,
        request_id: str | None,
        job_id: str | None,
        num_images: int,
        status: str | None,
        charged: bool,
        sha: str | None,
        prompt: str | None,
        error: str | None = None,
        reason: str | None = None,
    ) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "time": _iso(self.clock()),
            "event": event,
            "principal": principal,
            "surface": surface,
            "tool": tool,
            "operation": operation,
            "request_id": request_id,
            "job_id": job_id,
            "num_images": num_images,
            "status": status,
        }
        if self.price_per_image is not None:
            cost = self.price_per_image * num_images if charged else Decimal(0)
            entry["estimated_cost"] = str(cost)
            if self.currency is not None:
                entry["currency"] = self.currency
        entry["prompt_sha256"] = sha
        if self.prompts:
            entry["prompt"] = prompt
        if error is not None:
            entry["error"] = error[:MAX_ERROR_CHARS]
        if reason is not None:
            entry["reason"] = reason
        entry["by"] = self._owner
        for name in _FREE_TEXT:
            if isinstance(entry.get(name), str):
                entry[name] = self._clean(entry[name])
        return entry

    def _clean(self, text: str) -> str:
        for secret in self._redact:
            text = text.replace(secret, _REDACTED)
        text = _DATA_URI.sub(lambda m: f"data:… ({len(m.group(0))} characters)", text)
        return _JWT.sub(_REDACTED, text)

    def line(self, entry: Mapping[str, Any]) -> bytes:
        """``entry`` as one line of at most ``MAX_RECORD_BYTES`` (4096) bytes (free text cut).

        Raises:
            ValueError: it cannot be made to fit (no free text left to cut).
        """
        data = dict(entry)
        while True:
            encoded = (json.dumps(data, ensure_ascii=False, separators=(",", ":")) + "\n").encode()
            excess = len(encoded) - MAX_RECORD_BYTES
            if excess <= 0:
                return encoded
            name = next((n for n in _FREE_TEXT if len(data.get(n) or "") > 1), None)
            if name is None:
                raise ValueError(f"an audit record of {len(encoded)} bytes does not fit")
            value: str = data[name]
            # Each character dropped is at least one byte; the ellipsis takes three.
            data[name] = value[: max(len(value) - excess - 3, 0)] + "…"

    def write(self, entry: Mapping[str, Any]) -> None:
        """Append ``entry`` as one line, in one ``write(2)``. A failure (a full disk) is
        logged, never raised: the job it describes goes on."""
        event = entry.get("event")
        try:
            data = self.line(entry)
        except ValueError as exc:
            logger.error("audit log %s: a %s record was lost: %s", self.path, event, exc)
            return
        with self._lock:
            if self._fd is None:
                logger.error("audit log %s is closed: a %s record was lost", self.path, event)
                return
            try:
                written = os.write(self._fd, data)
                if written < len(data):  # a full disk: finish the line rather than leave half
                    os.write(self._fd, data[written:])
            except OSError as exc:
                logger.error(
                    "audit log %s: a %s record was lost (%s)",
                    self.path,
                    event,
                    exc.strerror or type(exc).__name__,
                )

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
