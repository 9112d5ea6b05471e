"""``mai-image batch``: the batch engine (:mod:`mai_tools.batch`) on the command line.

Loaded only when the command runs (see ``_LAZY_COMMANDS`` in :mod:`._app`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shlex
import signal
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from .._async_client import AsyncMAIImageClient
from .._config import Secret, resolve_api_key
from .._constants import API_KEY_ENV
from .._exceptions import ConfigurationError
from ..batch import (
    DEFAULT_CONCURRENCY,
    BatchCounts,
    BatchEvent,
    BatchRun,
    BatchSummary,
    JournalError,
    LineOutcome,
    parse_shard,
    read_input,
)
from ..jobbook._limits import DEFAULT_CURRENCY, parse_amount, parse_currency
from ._app import CliState
from ._errors import ExitCode
from ._options import job_book_option

if TYPE_CHECKING:
    from rich.console import Console
    from rich.live import Live

BATCH_EPILOG = """\b
Exit codes (the most urgent when several apply, in this order):
  130  interrupted (Ctrl-C, SIGTERM): everything was recorded; rerun to resume
  3    key, balance or permission (401/402/403), a wrong base URL, or a
       job book that cannot be opened or written: submitting stopped,
       nothing is lost; fix it and rerun
  7    writing to DIR failed (disk full?) or some images are not saved:
       rerun to save them (no job is submitted again)
  6    the gateway or the connection failed: some lines are UNKNOWN (may be
       charged; --resubmit-unknown sends them again) or were not sent
  5    some lines are not finished: still running (--timeout) or held back
       by --max-images / --max-spend; rerun to continue
  4    some jobs ended FAILED or ERROR (not retried)
  2    bad input: options, unreadable INPUT, DIR holds another input's
       journal (--force), or some lines are INVALID (the rest ran)
  1    internal error (a bug: please report it)
  0    every line COMPLETED and its images saved
"""


def _exit_code(summary: BatchSummary, interrupted: bool) -> ExitCode:
    counts = summary.counts
    if interrupted:
        return ExitCode.INTERRUPTED
    if summary.disk_trouble or summary.manifest_error:
        return ExitCode.SAVE_FAILED
    if summary.fatal or summary.balance:
        return ExitCode.CONFIG
    if summary.unsaved:
        return ExitCode.SAVE_FAILED
    if counts.get("UNKNOWN") or (summary.not_submitted and summary.gateway_trouble):
        return ExitCode.GATEWAY
    if summary.running or summary.not_submitted:
        return ExitCode.TIMEOUT
    if counts.get("FAILED") or counts.get("ERROR"):
        return ExitCode.JOB_FAILED
    if counts.get("INVALID"):
        return ExitCode.USAGE
    return ExitCode.OK


class _Progress:
    """A live multi-line display on a terminal; one plain line per event otherwise."""

    def __init__(self, *, quiet: bool, console: Console | None = None) -> None:
        self.quiet = quiet
        self._console = console
        self._live: Live | None = None
        self.run: BatchRun | None = None

    @contextlib.contextmanager
    def showing(self, run: BatchRun) -> Iterator[None]:
        self.run = run
        if self.quiet:
            yield
            return
        from rich.console import Console

        console = self._console or Console(stderr=True)
        if not console.is_terminal or console.is_dumb_terminal:
            yield
            return
        from rich.live import Live

        self._live = Live(
            get_renderable=self._render, console=console, refresh_per_second=4, transient=False
        )
        with self._live:
            yield
        self._live = None

    def _render(self) -> Any:
        from rich.table import Table

        table = Table.grid(padding=(0, 2))
        if self.run is None:
            return table
        c = self.run.counts()
        table.add_row(
            "[bold]batch[/]",
            f"{c.settled}/{c.total} lines settled",
            f"{c.elapsed:.0f}s elapsed",
        )
        table.add_row(
            f"submitted [bold]{c.submitted_now}[/]",
            f"running [yellow]{c.running + c.submitting}[/]",
            f"saving {c.downloading}",
            f"waiting to submit {c.pending}",
        )
        table.add_row(
            f"completed [green]{c.completed}[/]",
            f"failed [red]{c.failed}[/]",
            f"unknown [magenta]{c.unknown}[/]",
            f"invalid [red]{c.invalid}[/]",
        )
        table.add_row(f"images/min {_per_minute(c):.0f}", f"ETA {_eta(c)}", "", "")
        return table

    def event(self, event: BatchEvent) -> None:
        if self.quiet:
            if event.kind == "warning":  # not progress: e.g. the request id of a job
                click.echo(f"{event.kind}: {event.message}", err=True)
            return
        if self._live is not None:
            if event.kind not in ("submitted", "retrying"):
                self._live.console.print(f"[yellow]{event.kind}[/]: {event.message}", markup=True)
            return
        click.echo(f"{event.kind}: {event.message}", err=True)

    def outcome(self, outcome: LineOutcome) -> None:
        if self.quiet or outcome.resumed:
            return
        text = f"{outcome.id}: {outcome.status.value}"
        if outcome.paths:
            text += f" ({len(outcome.paths)} image{'s' if len(outcome.paths) > 1 else ''} saved)"
        if outcome.error:
            text += f": {outcome.error}"
        if self._live is not None:
            if not outcome.saved:
                self._live.console.print(text, markup=False, highlight=False)
            return
        click.echo(text, err=True)


def _per_minute(c: BatchCounts) -> float:
    return c.images_saved_now / c.elapsed * 60 if c.elapsed > 0 else 0.0


def _eta(c: BatchCounts) -> str:
    left = c.total - c.settled
    if left == 0:
        return "done"
    if c.elapsed <= 0 or c.settled_now == 0:
        return "-"
    seconds = left / (c.settled_now / c.elapsed)
    return f"{seconds / 60:.0f} min" if seconds >= 120 else f"{seconds:.0f}s"


def _resume_command(params: dict[str, Any]) -> str:
    """The same command (never the key), to print for a rerun."""
    args = ["mai-image", "batch", params["input"], "--out", os.fspath(params["out"])]
    for name in (
        "concurrency",
        "rps",
        "max_images",
        "price_per_image",
        "max_spend",
        "shard",
        "timeout",
    ):
        value = params.get(name)
        if value is not None and not (name == "concurrency" and value == DEFAULT_CONCURRENCY):
            args += [
                f"--{name.replace('_', '-')}",
                f"{value:g}" if isinstance(value, float) else str(value),
            ]
    for flag in ("resubmit_unknown", "force", "emulator", "quiet", "as_json"):
        if params.get(flag):
            args.append("--json" if flag == "as_json" else f"--{flag.replace('_', '-')}")
    if params.get("currency", DEFAULT_CURRENCY) != DEFAULT_CURRENCY:
        args += ["--currency", params["currency"]]
    if params.get("base_url"):
        args += ["--base-url", params["base_url"]]
    if params.get("job_book"):
        args += ["--job-book", _without_password(params["job_book"])]
    return shlex.join(args)


def _without_password(spec: str) -> str:
    """A --job-book value fit to print: a URL's password (user part or query) masked."""
    if "://" not in spec:
        return spec
    spec = re.sub(r"(://[^/:@]*:)[^@/]*@", r"\1***@", spec)
    return re.sub(r"([?&]password=)[^&]*", r"\1***", spec)


def _print_summary(
    summary: BatchSummary, params: dict[str, Any], code: ExitCode, *, as_json: bool
) -> None:
    resume = _resume_command(params)
    unknown = summary.counts.get("UNKNOWN", 0)
    advice: list[str] = []
    if code is not ExitCode.OK and (
        summary.running or summary.not_submitted or summary.unsaved or code is ExitCode.INTERRUPTED
    ):
        advice.append(f"resume with: {resume}")
    if unknown and not params.get("resubmit_unknown"):
        advice.append(
            f"{unknown} UNKNOWN line(s) may have been charged; to send them again: "
            f"{resume} --resubmit-unknown"
        )
    if params.get("input") == "-" and advice:
        advice.append("(feed the same input on stdin again)")
    if params.get("emulator") and advice:
        advice.append(
            "(--emulator jobs end with the command: a rerun cannot wait for them; run "
            "`mai-image emulator` to keep one running)"
        )
    if as_json:
        data = summary.to_dict()
        data["exit_code"] = int(code)
        data["resume_command"] = resume
        click.echo(json.dumps(data, indent=2))
        return
    order = ["COMPLETED", "FAILED", "ERROR", "INVALID", "UNKNOWN", "PROCESSING", "QUEUED"]
    parts = [f"{name} {summary.counts[name]}" for name in order if summary.counts.get(name)]
    click.echo(f"lines: {summary.total} ({', '.join(parts) or 'none'})")
    click.echo(
        f"images saved: {summary.images_saved} ({summary.images_saved_now} in this run) "
        f"in {summary.manifest.parent / 'images'}"
    )
    click.echo(f"time: {summary.elapsed:.1f}s; submitted in this run: {summary.submitted_now}")
    click.echo(f"manifest: {summary.manifest}")
    if summary.hold_reason:
        click.echo(f"submitting stopped: {summary.hold_reason}")
    if summary.spend:
        click.echo(f"estimated spend: {summary.spend}")
    if summary.unsaved:
        click.echo(f"{summary.unsaved} completed line(s) not saved yet")
    if summary.running:
        click.echo(f"{summary.running} line(s) still running on the gateway")
    if summary.not_submitted:
        click.echo(f"{summary.not_submitted} line(s) not submitted")
    for line in advice:
        click.echo(line)


async def _run(
    client_args: dict[str, Any],
    lines: list[Any],
    base: Path,
    options: dict[str, Any],
    progress: _Progress,
) -> tuple[BatchSummary, bool]:
    interrupted = False
    async with AsyncMAIImageClient(**client_args) as client:
        run = BatchRun(
            client, lines, options.pop("out"), base_dir=base, on_event=progress.event, **options
        )
        loop = asyncio.get_running_loop()

        def on_signal(name: str) -> None:
            nonlocal interrupted
            if interrupted:  # a second signal: stop at once (still consistent)
                run.stop(f"interrupted again ({name})", now=True)
                return
            interrupted = True
            run.stop(f"interrupted ({name}): finishing what is in flight and recording it")

        installed = []
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, on_signal, sig.name)
                installed.append(sig)
            except (NotImplementedError, RuntimeError, ValueError):  # Windows, or not main thread
                pass
        try:
            async with run:
                with progress.showing(run):
                    async for outcome in run:
                        progress.outcome(outcome)
                summary = run.summary()
        finally:
            for sig in installed:
                loop.remove_signal_handler(sig)
    return summary, interrupted


def _amount(ctx: click.Context, param: click.Parameter, value: str | None) -> Decimal | None:
    """An amount flag as an exact Decimal; a bad one is a usage error naming the flag."""
    if value is None:
        return None
    try:
        return parse_amount(value, f"--{param.name or 'amount'}".replace("_", "-"))
    except ConfigurationError as exc:
        raise click.BadParameter(str(exc)) from None


def _currency(ctx: click.Context, param: click.Parameter, value: str) -> str:
    try:
        return parse_currency(value)
    except ConfigurationError as exc:
        raise click.BadParameter(str(exc)) from None


@click.command("batch", epilog=BATCH_EPILOG)
@click.argument("input", metavar="INPUT")
@click.option(
    "--out",
    "-o",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory for the images (DIR/images/), manifest.jsonl and the journal.",
)
@click.option(
    "--concurrency",
    "-c",
    type=click.IntRange(1, 100_000),
    default=DEFAULT_CONCURRENCY,
    show_default=True,
    help="Jobs in flight at once.",
)
@click.option(
    "--rps",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="At most this many API requests per second (submits and status reads together).",
)
@click.option(
    "--max-images",
    type=click.IntRange(min=0),
    default=None,
    help="Stop submitting once this many images were requested (earlier runs included).",
)
@click.option(
    "--price-per-image",
    metavar="AMOUNT",
    default=None,
    callback=_amount,
    help="What one image costs (e.g. 0.04, in --currency): needed by --max-spend, and the "
    "summary estimates the spend.",
)
@click.option(
    "--max-spend",
    metavar="AMOUNT",
    default=None,
    callback=_amount,
    help="Stop submitting before the images requested would cost more than this (earlier "
    "runs included; images times --price-per-image).",
)
@click.option(
    "--currency",
    metavar="CODE",
    default=DEFAULT_CURRENCY,
    show_default=True,
    callback=_currency,
    help="ISO 4217 code of --price-per-image and --max-spend.",
)
@click.option("--shard", metavar="K/N", default=None, help="Take every N-th line from the K-th.")
@click.option(
    "--resubmit-unknown",
    is_flag=True,
    help="Send UNKNOWN lines again (their first POST may have been received and charged).",
)
@click.option("--force", is_flag=True, help="Reuse a DIR whose journal is of another input.")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    metavar="SECONDS",
    help="Stop waiting for one job after this long (default 300); a rerun waits again.",
)
@click.option("--quiet", "-q", is_flag=True, help="No progress on stderr.")
@click.option(
    "--emulator", is_flag=True, help="Run against a built-in offline emulator (no key, no network)."
)
@click.option("--base-url", metavar="URL", default=None, help="Gateway origin.")
@click.option(
    "--api-key",
    metavar="KEY",
    default=None,
    help=f"Pixazo key. Prefer ${API_KEY_ENV}: arguments are visible in process lists.",
)
@job_book_option
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.pass_obj
def batch_command(state: CliState, /, **params: Any) -> None:
    """Run every prompt of INPUT (thousands are fine), resumably, into DIR.

    INPUT is JSONL (one object per line: id, prompt, and optional image, num_images,
    aspect_ratio, output_format; an image makes the line an edit) or plain text (one prompt
    per line), or - for stdin. Rerunning the same command resumes: saved lines are skipped,
    submitted ones are waited for (never sent again), unsaved images are downloaded again.
    DIR/manifest.jsonl has one line per input id. Every job is also written into the job book
    (surface "batch"; see mai-image jobs), where the rest of your jobs are.
    """
    session = state.session
    shard = parse_shard(params["shard"]) if params["shard"] is not None else None
    if params["max_spend"] is not None and params["price_per_image"] is None:
        raise click.UsageError(
            "--max-spend needs --price-per-image: the price of one image (e.g. 0.04) turns the "
            "amount into images."
        )
    lines, base = read_input(params["input"])
    progress = _Progress(quiet=params["quiet"])
    options: dict[str, Any] = {
        "out": params["out"],
        "concurrency": params["concurrency"],
        "rps": params["rps"],
        "max_images": params["max_images"],
        "price_per_image": params["price_per_image"],
        "max_spend": params["max_spend"],
        "currency": params["currency"],
        "shard": shard,
        "resubmit_unknown": params["resubmit_unknown"],
        "force": params["force"],
    }
    if params["timeout"] is not None:
        options["job_timeout"] = params["timeout"]
    # The client's own retries: every try passes the run's gate (its pace, and the pause a 429
    # starts for the whole run).
    client_args: dict[str, Any] = {}
    if params["job_book"] is not None:
        client_args["job_book"] = params["job_book"]
    with contextlib.ExitStack() as stack:
        if params["emulator"]:
            if params["base_url"] is not None or params["api_key"] is not None:
                raise click.UsageError(
                    "--emulator cannot be combined with --base-url or --api-key."
                )
            from ..emulator import run_emulator

            emu = stack.enter_context(run_emulator())
            session.emulator = True
            session.secret = Secret(emu.api_key)
            client_args.update(api_key=emu.api_key, base_url=emu.base_url)
        else:
            try:  # the client's own lookup (--api-key, $PIXAZO_API_KEY, the key file)
                session.secret = resolve_api_key(params["api_key"])
            except ConfigurationError:
                session.secret = None  # the client refuses the key itself, in its own words
            client_args.update(api_key=params["api_key"], base_url=params["base_url"])
        try:
            summary, interrupted = asyncio.run(_run(client_args, lines, base, options, progress))
        except JournalError as exc:
            click.echo(click.style("error:", fg="red", bold=True) + f" {exc}", err=True)
            raise click.exceptions.Exit(int(ExitCode.SAVE_FAILED)) from None
    code = _exit_code(summary, interrupted)
    if summary.stop_reason and (summary.fatal or interrupted):
        click.echo(
            click.style("error:", fg="red", bold=True) + " " + session.scrub(summary.stop_reason),
            err=True,
        )
    _print_summary(summary, params, code, as_json=params["as_json"])
    raise click.exceptions.Exit(int(code))
