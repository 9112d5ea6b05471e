"""``mai-image jobs``: the job book's history on the command line (the gateway keeps none).

``list`` and ``export`` read the book, newest first, filtered; ``show`` prints one job by its
request id; ``wait`` resumes one through :func:`._app.wait_and_save` (what ``mai-image wait``
does), so its outcome and the saved paths go back into the book. Loaded only when the
command runs (see ``_LAZY_COMMANDS`` in :mod:`._app`).

Errors take the CLI's usual way (:meth:`._app._Group.invoke`): a book that cannot be opened
is a ``JobBookError`` (exit 3), a request id the book does not hold an
:class:`~mai_tools.InvalidArgumentError` (exit 2, as an unknown request id elsewhere).
"""

from __future__ import annotations

import csv
import json
import re
import shutil
import sys
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Final, TypeVar

import click

from .._exceptions import InvalidArgumentError, JobBookError, JobUnknownError
from .._models import Status, short_url
from ..jobbook import ENV as JOB_BOOK_ENV
from ..jobbook import LOCAL_PRINCIPAL, STATES, SURFACES, JobBook, JobRecord, open_job_book
from ._app import SHORT_EPILOG, CliState, wait_and_save
from ._options import connection_options, job_book_option, wait_options

F = TypeVar("F", bound=Callable[..., Any])

DEFAULT_LIMIT: Final = 50
_UNITS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_AGO: Final = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])")
_STATUSES: Final = tuple(s.value for s in Status if s is not Status.UNKNOWN)


def _since(ctx: click.Context, param: click.Parameter, value: str | None) -> float | None:
    """``--since``: an age (``90m``, ``2h``, ``3d``, ``1w``) or an ISO date/time (UTC unless it
    names a zone); seconds since the epoch."""
    if value is None:
        return None
    text = value.strip().lower()
    found = _AGO.fullmatch(text)
    if found is not None:
        age = float(found.group(1)) * _UNITS[found.group(2)]
        return datetime.now(UTC).timestamp() - age
    try:
        when = datetime.fromisoformat(value.strip())
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is neither an age (30m, 2h, 3d, 1w) nor an ISO date or time "
            "(2026-12-01, 2026-12-01T08:30, 2026-12-01T08:30+01:00)."
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def _filter_options(*, limit: int | None) -> Callable[[F], F]:
    def wrap(func: F) -> F:
        options = [
            click.option(
                "--principal",
                metavar="NAME",
                default=None,
                help="Only the jobs of this principal (who made them: a team MCP server's "
                "caller; local for a single user's own jobs).",
            ),
            click.option(
                "--surface",
                type=click.Choice(SURFACES),
                default=None,
                help="Only jobs made by this front end.",
            ),
            click.option(
                "--status",
                type=click.Choice(_STATUSES, case_sensitive=False),
                default=None,
                help="Only jobs whose last known gateway status is this.",
            ),
            click.option(
                "--state",
                type=click.Choice(STATES),
                default=None,
                help="Only jobs in this book state (unknown: the submit may have arrived, its "
                "request id was never recorded).",
            ),
            click.option(
                "--since",
                metavar="AGE|DATE",
                callback=_since,
                default=None,
                help="Only jobs made since: an age (30m, 2h, 3d, 1w) or an ISO date or time "
                "(UTC unless a zone is given).",
            ),
            click.option(
                "--limit",
                type=click.IntRange(min=1),
                default=limit,
                show_default=limit is not None,
                help="At most this many jobs, the newest first"
                + ("." if limit is not None else " (default: all)."),
            ),
        ]
        for option in reversed(options):
            func = option(func)
        return func

    return wrap


def _book(spec: str | None) -> JobBook:
    """The job book ``--job-book`` (else ``$MAI_JOB_BOOK``, else the default file) names."""
    book = open_job_book(spec)
    if book is None:
        where = "--job-book" if spec is not None else JOB_BOOK_ENV
        raise JobBookError(
            f"The job book is off ({where}=off), so there is no job history to read. Point "
            f"{where} at the book's file or postgresql:// URL."
        )
    book.sweep()  # intents of processes that died show as unknown, not as in progress
    return book


def _records(book: JobBook, params: dict[str, Any]) -> list[JobRecord]:
    status = params["status"]
    return book.list(
        principal=params["principal"],
        surface=params["surface"],
        status=None if status is None else status.upper(),
        state=params["state"],
        since=params["since"],
        limit=params["limit"],
    )


def _found(book: JobBook, request_id: str) -> JobRecord:
    """The job ``request_id`` names: a request id, or the book's own id (``id`` in
    ``list --json``) of a job that has none (its submit's answer was never recorded)."""
    wanted = request_id.strip()
    record = book.find(wanted) or book.get(wanted)
    if record is None:
        raise InvalidArgumentError(
            f"No job with request id {wanted!r} in the job book at {book.location}. "
            "`mai-image jobs list` shows the jobs it holds; a job made with another book "
            f"needs --job-book (or {JOB_BOOK_ENV}) pointing there."
        )
    return record


def _when(epoch: float | None) -> str:
    if epoch is None:
        return "-"
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _shown(record: JobRecord) -> dict[str, Any]:
    """:meth:`JobRecord.to_dict` with inline (``data:``) image URLs shortened: no base64 flood."""
    data = record.to_dict()
    data["image_urls"] = [short_url(u) for u in record.image_urls]
    return data


def _state_text(record: JobRecord) -> str:
    """One word for the table: the gateway status once known, else the book's state."""
    if record.state in ("submitted", "finished") and record.status:
        return record.status
    return record.state


def _table(records: list[JobRecord], *, width: int | None) -> Iterable[str]:
    """The rows under a header; the prompt is cut to ``width`` columns (None: never cut).

    A PRINCIPAL column appears when a job of someone other than the local user is listed (a
    book a team server writes into)."""
    who = any(r.principal != LOCAL_PRINCIPAL for r in records)
    rows = [
        (
            datetime.fromtimestamp(r.created, UTC).strftime("%Y-%m-%d %H:%M"),
            *((r.principal,) if who else ()),
            r.surface,
            _state_text(r),
            r.request_id or "-",
            r.prompt or "",
        )
        for r in records
    ]
    header = (
        "CREATED (UTC)",
        *(("PRINCIPAL",) if who else ()),
        "SURFACE",
        "STATUS",
        "REQUEST ID",
        "PROMPT",
    )
    last = len(header) - 1
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(last)]
    for row in [header, *rows]:
        head = "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=False))
        prompt = " ".join(row[last].split())
        if width is not None:
            room = max(width - len(head) - 2, 20)
            if len(prompt) > room:
                prompt = prompt[: room - 1] + "…"
        yield f"{head}  {prompt}".rstrip()


@click.group("jobs", epilog=SHORT_EPILOG)
def jobs_group() -> None:
    """Your job history: list, show, wait for and export the jobs of the job book.

    The gateway keeps no list of your jobs; the job book holds every job this installation
    submitted. It is a SQLite file in your state directory (or what --job-book / MAI_JOB_BOOK
    names: a file, or a postgresql:// URL shared by several machines). Every surface writes
    into it: the client, the CLI, batch runs, the LangChain tools and the MCP server.
    """


@jobs_group.command("list", epilog=SHORT_EPILOG)
@_filter_options(limit=DEFAULT_LIMIT)
@job_book_option
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line per job.")
@click.pass_obj
def list_command(state: CliState, /, job_book: str | None, as_json: bool, **params: Any) -> None:
    """List jobs, the newest first.

    A table (created, principal when not only yours, surface, status, request id, prompt),
    or with --json one JSON object per line with every field the book holds (full request
    ids, times in seconds since the epoch). STATUS is the gateway's (QUEUED, PROCESSING,
    COMPLETED, FAILED, ERROR) once a request id is known, else the book's state: intent
    (being sent) or unknown (the submit may have reached the gateway, its request id was
    never recorded: it may be charged).
    """
    records = _records(_book(job_book), params)
    if as_json:
        for record in records:
            click.echo(json.dumps(_shown(record), ensure_ascii=False))
        return
    if not records:
        click.echo("no jobs in the job book" + (" match" if _filtered(params) else ""), err=True)
        return
    # On a terminal one line per job; piped (grep, awk), the whole prompt.
    terminal = sys.stdout.isatty()
    width = shutil.get_terminal_size().columns if terminal else None
    for line in _table(records, width=width):
        click.echo(line)


def _filtered(params: dict[str, Any]) -> bool:
    return any(
        params[name] is not None for name in ("principal", "surface", "status", "state", "since")
    )


@jobs_group.command("show", epilog=SHORT_EPILOG)
@click.argument("request_id")
@job_book_option
@click.option("--json", "as_json", is_flag=True, help="Print the job as one JSON object.")
@click.pass_obj
def show_command(state: CliState, /, request_id: str, job_book: str | None, as_json: bool) -> None:
    """Show everything the job book holds about job REQUEST_ID.

    REQUEST_ID may also be the book's own id of a job without a request id (``id`` in
    ``jobs list --json``): one whose submit may have reached the gateway unanswered.
    """
    record = _found(_book(job_book), request_id)
    data = _shown(record)
    if as_json:
        click.echo(json.dumps(data, indent=2, ensure_ascii=False))
        return
    lines = [
        ("request_id", record.request_id),
        ("state", record.state),
        ("status", record.status),
        ("operation", record.operation),
        ("surface", record.surface),
        ("principal", record.principal),
        ("idempotency_key", record.idempotency_key),
        ("created", _when(record.created)),
        ("submitted", _when(record.submitted_at)),
        ("finished", _when(record.finished_at)),
        ("prompt", record.prompt),
        ("request", json.dumps(record.fields, ensure_ascii=False)),
        ("error", record.error),
    ]
    for key, value in lines:
        if value is not None:
            click.echo(f"{key}: {value}")
    for index, url in enumerate(data["image_urls"]):
        click.echo(f"image {index + 1}: {url}")
    for path in record.paths:
        click.echo(f"saved: {path}")


@jobs_group.command("wait", epilog=SHORT_EPILOG)
@click.argument("request_id")
@wait_options
@job_book_option
@connection_options
@click.pass_obj
def wait_command(state: CliState, /, request_id: str, job_book: str | None, **options: Any) -> None:
    """Wait for job REQUEST_ID of the job book, then save its images (as mai-image wait).

    The job must be in the book (else exit 2) and have a request id (else exit 8: its submit
    may have arrived unanswered); its outcome and the saved paths are written back into it.
    """
    record = _found(_book(job_book), request_id)
    if record.request_id is None:
        raise JobUnknownError(
            f"Job {record.id} of the job book has no request id (state {record.state}): "
            + (
                "its submit may have reached the gateway, but the answer was never recorded, "
                "so there is nothing to wait for; it may be charged (the Pixazo dashboard "
                "lists your requests)."
                if record.state == "unknown"
                else "its submit was being sent and no answer is recorded yet (if the process "
                "sending it stopped, it may have reached the gateway and be charged). Wait by "
                "request id once `mai-image jobs show` lists one."
            ),
            idempotency_key=None,
            created_at=record.created,
        )
    wait_and_save(state, record.request_id, job_book=job_book, **options)


CSV_FIELDS: Final = tuple(
    JobRecord(id="", principal="", surface="", operation="", fingerprint="", fields={}, prompt=None)
    .to_dict()
    .keys()
)
"""The export's columns: :meth:`JobRecord.to_dict`'s keys."""
_TIMES: Final = frozenset({"created", "submitted_at", "finished_at", "updated"})


def _csv_cell(name: str, value: Any) -> Any:
    if value is None:
        return ""
    if name in _TIMES:
        return datetime.fromtimestamp(value, UTC).isoformat(timespec="milliseconds")
    if isinstance(value, list | dict):
        return json.dumps(value, ensure_ascii=False)
    return value


def _write_csv(records: list[JobRecord], stream: IO[str]) -> None:
    writer = csv.DictWriter(stream, fieldnames=CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    for record in records:
        data = _shown(record)
        writer.writerow({name: _csv_cell(name, data[name]) for name in CSV_FIELDS})


@jobs_group.command("export", epilog=SHORT_EPILOG)
@_filter_options(limit=None)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(("jsonl", "csv")),
    default="jsonl",
    show_default=True,
    help="jsonl: one JSON object per job (as list --json); csv: the same fields, one row per "
    "job, times as ISO 8601 (UTC), lists as JSON.",
)
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write here (atomically) instead of stdout.",
)
@job_book_option
@click.pass_obj
def export_command(
    state: CliState,
    /,
    fmt: str,
    output: Path | None,
    job_book: str | None,
    **params: Any,
) -> None:
    """Export the jobs of the book (every one unless filtered), the newest first.

    Every principal's jobs unless --principal names one; each row carries its principal.
    """
    records = _records(_book(job_book), params)
    target = "-" if output is None else str(output)
    with click.open_file(target, "w", encoding="utf-8", atomic=output is not None) as stream:
        if fmt == "csv":
            _write_csv(records, stream)
        else:
            for record in records:
                stream.write(json.dumps(_shown(record), ensure_ascii=False) + "\n")
    if output is not None:
        click.echo(f"{len(records)} job(s) written to {output}", err=True)


__all__ = ["CSV_FIELDS", "jobs_group"]
