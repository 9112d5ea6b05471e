"""What ``mai-image`` prints: progress on stderr, results on stdout.

Progress is a live rich display on a terminal and one plain line per status change otherwise
(logs, pipes, CI). Results are plain ``key: value`` lines or, with ``--json``, one JSON object.
Inline ``data:`` URIs are always shortened: a result never floods a terminal or a log with
base64.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import click

from .._models import ImageResult, JobStatus, Status, short_url
from ._errors import Phase, Session

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress, TaskID

_COLORS = {
    Status.COMPLETED: "green",
    Status.FAILED: "red",
    Status.ERROR: "red",
}


class Reporter:
    """The ``on_status`` callback of a wait, and its display.

    It also records the request id in the :class:`Session` as soon as the gateway gives one,
    so that Ctrl-C or a timeout can print the command that resumes the wait.

    Args:
        session: the command's session (request id and phase are updated here).
        label: what is running, shown on the live line ("generate", "edit", "wait").
        quiet: show nothing.
        console: where the live display goes; default a stderr console. It is live only when
            that console is an interactive terminal.
    """

    def __init__(
        self, session: Session, *, label: str, quiet: bool, console: Console | None = None
    ) -> None:
        self.session = session
        self.label = label
        self.quiet = quiet
        self._console = console
        self._progress: Progress | None = None
        self._task: TaskID | None = None

    @property
    def live(self) -> bool:
        return self._progress is not None

    def __enter__(self) -> Reporter:
        if self.quiet:
            return self
        from rich.console import Console

        console = self._console or Console(stderr=True)
        if not console.is_terminal or console.is_dumb_terminal:
            return self
        from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
        from rich.table import Column

        # One line per job that never wraps: a narrow terminal cuts the end of the request id.
        line = Column(no_wrap=True, overflow="ellipsis", ratio=1)
        self._progress = Progress(
            SpinnerColumn(finished_text="•"),
            TimeElapsedColumn(),
            TextColumn("{task.description}", table_column=line),
            console=console,
            expand=True,
        )
        self._progress.start()
        self._task = self._progress.add_task(self._describe(self.session.request_id, None), total=1)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def _describe(self, request_id: str | None, status: JobStatus | None) -> str:
        # Status first: on a narrow terminal the long request id is what gets cut.
        from rich.markup import escape

        if request_id is None:
            return f"[yellow]{'SUBMITTING':<10}[/] [bold]{self.label}[/]"
        if status is None:
            text, color = "WAITING", "yellow"
        else:
            text, color = _status_text(status), _COLORS.get(status.status, "yellow")
        return f"[{color}]{escape(text):<10}[/] [bold]{self.label}[/] {escape(request_id)}"

    def __call__(self, status: JobStatus, elapsed: float) -> None:
        self.session.request_id = status.request_id
        self.session.phase = Phase.WAITING
        if self.quiet:
            return
        if self._progress is not None and self._task is not None:
            self._progress.update(
                self._task,
                description=self._describe(status.request_id, status),
                completed=1 if status.status.is_terminal else 0,
            )
            return
        click.echo(f"{status.request_id}: {_status_text(status)} ({elapsed:.1f}s)", err=True)


def _status_text(status: JobStatus) -> str:
    if status.status is Status.UNKNOWN and status.raw_status:
        return f"{status.raw_status} (unknown status)"
    return status.status.value


def print_result(result: ImageResult, saved: list[Path], *, as_json: bool) -> None:
    """The result on stdout: each image's URL, and where it was saved."""
    if as_json:
        data: dict[str, Any] = result.summary()
        data["saved_paths"] = [str(p) for p in saved]
        click.echo(json.dumps(data, indent=2))
        return
    click.echo(f"request_id: {result.request_id}")
    for index, url in enumerate(result.image_urls):
        click.echo(f"image {index + 1}: {short_url(url)}")
        if index < len(saved):
            click.echo(f"  saved: {saved[index]}")


def print_status(job: JobStatus, *, as_json: bool) -> None:
    """One status read on stdout."""
    if as_json:
        data = job.model_dump(mode="json", exclude_none=True)
        if job.output is not None:
            data["output"]["media_url"] = [short_url(u) for u in job.image_urls]
        click.echo(json.dumps(data, indent=2))
        return
    click.echo(f"request_id: {job.request_id}")
    click.echo(f"status: {_status_text(job)}")
    if job.error:
        click.echo(f"error: {job.error}")
    for index, url in enumerate(job.image_urls):
        click.echo(f"image {index + 1}: {short_url(url)}")
