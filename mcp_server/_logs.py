"""What ``mai-image-mcp`` writes on stderr: a start line, a line per job event, one line per
HTTP request, in text or JSON (``--log-format``).

- **The start line** (logger ``mcp_server.start``): transport, address, authentication mode,
  gateway host (or the emulator), job book location (a Postgres URL without its password),
  version. It is an INFO record, and that logger's level is INFO whenever the
  server's is WARNING or lower, so the default level (WARNING) shows it, with the warnings;
  ``--log-level ERROR`` silences it too. The start notes (no token on loopback, the audit
  log, push waiting) go to the same logger.
- **Job lines** (logger ``mcp_server.jobs``, INFO): :class:`JobLog` observes the server's job
  book (:attr:`~mai_tools.jobbook.JobBook.observers`, like the audit log), one line per change
  of a job's state: ``intent``, ``submitted``, ``finished``, ``unknown``, ``released``, with
  principal, tool, request id, status, seconds since the call began, images requested.
- **HTTP access lines**: uvicorn's ``uvicorn.access`` records, written by the same handler
  (one line each; callback tokens are already replaced by ``<token>``,
  :func:`mai_tools._webhook_server.hide_tokens_in_logs`).
- At INFO the libraries' own request chatter (httpx's line per status poll, the MCP SDK's
  "Processing request") is kept for DEBUG: at INFO a job is its job lines.

JSON (``--log-format json``): one object per line, ``time`` (UTC, ISO 8601), ``level``,
``logger``, ``message``, and for a job line its fields as keys (``event``, ``principal``,
``tool``, ``request_id``, ``status``, ``seconds``, ``images``); an access line adds
``client``, ``method``, ``path``, ``status_code`` (not ``status``: one key, one meaning, for
the shipper's index). The API key and the bearer token are replaced by ``[redacted]`` in any
line that would hold them (a last line of defence: nothing logs them).
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, Final, Literal
from urllib.parse import urlsplit

from mai_tools._constants import DEFAULT_BASE_URL
from mai_tools._tools import TOOLS
from mai_tools.jobbook._record import Event, JobRecord

LogFormat = Literal["text", "json"]

START: Final = logging.getLogger("mcp_server.start")
JOBS: Final = logging.getLogger("mcp_server.jobs")
CHATTY: Final = ("httpx", "httpx2", "httpcore", "mcp")
"""Loggers whose INFO records are per request or per poll: shown at DEBUG only."""
FIELDS: Final = "mai_fields"
"""The record attribute holding a line's fields (keys of its JSON object)."""
_REDACTED: Final = "[redacted]"
_OURS: Final = "_mai_image_mcp"
_TOOL_OF: Final = {spec.operation: spec.name for spec in TOOLS if spec.operation is not None}


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


class _Formatter(logging.Formatter):
    def __init__(self, redact: Iterable[str]) -> None:
        super().__init__()
        self._redact = sorted({s for s in redact if s}, key=len, reverse=True)

    def clean(self, text: str) -> str:
        for secret in self._redact:
            text = text.replace(secret, _REDACTED)
        return text


class TextFormatter(_Formatter):
    """``TIME LEVEL LOGGER: MESSAGE``, the message on one line (a traceback follows it)."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage().replace("\r", "\\r").replace("\n", "\\n")
        line = f"{_iso(record.created)} {record.levelname} {record.name}: {message}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return self.clean(line)


class JsonFormatter(_Formatter):
    """One JSON object per record, on one line (see the module docstring)."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "time": _iso(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, FIELDS, None)
        if isinstance(fields, Mapping):
            data.update({k: v for k, v in fields.items() if k not in data})
        elif (
            record.name == "uvicorn.access"
            and isinstance(record.args, tuple)
            and len(record.args) == 5  # uvicorn's: client, method, path, HTTP version, status
        ):
            client, method, path, _version, status = record.args
            data.update(client=client, method=method, path=path, status_code=status)
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        return self.clean(json.dumps(data, ensure_ascii=False, default=str))


def setup(level: str, log_format: LogFormat, redact: Iterable[str] = ()) -> logging.Handler:
    """Send every log record of the process to stderr, one line each, at ``level``.

    Done before the MCP server is made (the SDK then leaves the root logger alone) and before
    uvicorn starts (served with ``log_config=None``: its records come here too). A handler an
    earlier call installed is replaced; others are left alone. Returns the handler.
    """
    handler = logging.StreamHandler(sys.stderr)
    formatter = JsonFormatter(redact) if log_format == "json" else TextFormatter(redact)
    handler.setFormatter(formatter)
    setattr(handler, _OURS, True)
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, _OURS, False)]:
        root.removeHandler(old)
    root.addHandler(handler)
    numeric = logging.getLevelName(level.upper())
    root.setLevel(numeric)
    START.setLevel(logging.INFO if numeric <= logging.WARNING else numeric)
    for name in CHATTY:  # their INFO only at DEBUG (a logger's own level is the one checked)
        quiet = numeric if numeric < logging.INFO else max(numeric, logging.WARNING)
        logging.getLogger(name).setLevel(quiet)
    return handler


def adopt_uvicorn() -> None:
    """uvicorn's records (its access lines too) go to the process's handler, whatever an
    earlier uvicorn configured (``--emulator`` runs one in this process, with uvicorn's
    default logging and no access log)."""
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi"):
        named = logging.getLogger(name)
        for handler in list(named.handlers):
            named.removeHandler(handler)
        named.propagate = True


# ---------------------------------------------------------------------- the start line


def auth_mode(*, token: bool, tokens_file: bool, oauth_issuer: str | None, transport: str) -> str:
    """How HTTP callers are told apart: none, token, named tokens, OAuth (issuer)."""
    if transport == "stdio":
        return "none (stdio: the client that started it)"
    modes = [
        *(["token"] if token else []),
        *(["named tokens"] if tokens_file else []),
        *([f"OAuth ({oauth_issuer})"] if oauth_issuer else []),
    ]
    return " + ".join(modes) or "none"


def gateway_host(base_url: str | None, *, emulator: bool) -> str:
    """The gateway's host (never a path, a query or credentials); ``emulator`` for it."""
    if emulator:
        return "emulator (offline, in this process)"
    parts = urlsplit(base_url or DEFAULT_BASE_URL)
    host = parts.hostname or "?"
    return f"{host}:{parts.port}" if parts.port else host


def start_line(
    *,
    version: str,
    transport: str,
    address: str,
    auth: str,
    gateway: str,
    book: str,
) -> tuple[str, dict[str, Any]]:
    """The start line's text and fields."""
    fields = {
        "event": "start",
        "transport": transport,
        "address": address,
        "auth": auth,
        "gateway": gateway,
        "job_book": book,
        "version": version,
    }
    text = (
        f"mai-image-mcp {version} serving {transport} at {address}; auth: {auth}; "
        f"gateway: {gateway}; job book: {book}"
    )
    return text, fields


def log_start(text: str, fields: Mapping[str, Any]) -> None:
    START.info("%s", text, extra={FIELDS: dict(fields)})


def note(text: str) -> None:
    """A start note (``WARNING: ...`` ones at WARNING)."""
    if text.startswith("WARNING: "):
        START.warning("%s", text.removeprefix("WARNING: "))
    else:
        START.info("%s", text.removeprefix("note: "))


# ---------------------------------------------------------------------- job lines


class JobLog:
    """A job book observer: one INFO line on ``mcp_server.jobs`` per change of a job's state."""

    def __init__(self, logger: logging.Logger = JOBS) -> None:
        self.logger = logger

    def __repr__(self) -> str:
        return f"JobLog({self.logger.name!r})"

    def __call__(self, event: Event, record: JobRecord) -> None:
        if not self.logger.isEnabledFor(logging.INFO):
            return
        fields = job_fields(event, record)
        text = " ".join(f"{k}={'-' if v is None else v}" for k, v in fields.items() if k != "event")
        self.logger.info("job %s: %s", event, text, extra={FIELDS: fields})


def job_fields(event: Event, record: JobRecord) -> dict[str, Any]:
    """A job line's fields: who, which tool and job, its status, seconds since the call's
    intent was written (the call began), images requested."""
    num = record.fields.get("num_images", 1)
    images = num if isinstance(num, int) and not isinstance(num, bool) else 1
    end = {
        "intent": record.created,
        "submitted": record.submitted_at,
        "finished": record.finished_at,
    }.get(event, record.updated)
    seconds = None if end is None else round(max(end - record.created, 0.0), 3)
    status = record.status or ("UNKNOWN" if event == "unknown" else None)
    return {
        "event": event,
        "principal": record.principal,
        "tool": _TOOL_OF.get(record.operation, record.operation),
        "request_id": record.request_id,
        "status": status,
        "seconds": seconds,
        "images": images,
    }
