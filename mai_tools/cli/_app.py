"""The ``mai-image`` click group and its commands.

Every command is a thin translation: options in, one core-client call, output out. All error
handling is in :meth:`_Group.invoke`, which maps any exception to one line on stderr and an
:class:`~mai_tools.cli._errors.ExitCode`.
"""

from __future__ import annotations

import contextlib
import importlib
import signal
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal, TypeVar, get_args, get_origin

import click
from pydantic.fields import FieldInfo

from .. import _duration_cache
from .._client import MAIImageClient
from .._config import Secret, resolve_api_key
from .._constants import API_KEY_ENV, API_KEY_FILE_SHOWN, DEFAULT_MAX_INPUT_BYTES
from .._exceptions import InvalidImageError, MissingAPIKeyError
from .._models import OPERATIONS, ImageResult
from .._version import __version__
from .._webhooks import WebhookReceiver
from ..jobbook import JobScope
from ._errors import ExitCode, Phase, Session, classify
from ._options import (
    DEFAULT_OUT,
    connection_options,
    idempotency_option,
    job_book_option,
    push_options,
    receiver,
    wait_options,
)
from ._output import Reporter, print_result, print_status

F = TypeVar("F", bound=Callable[..., Any])

ClientFactory = Callable[..., MAIImageClient]
"""Builds the client: called like ``MAIImageClient(api_key=..., base_url=...)``."""

CLI_SCOPE: Final = JobScope(surface="cli")
"""How the CLI's jobs are marked in the job book."""

_NO_KEY = (
    f"no API key. Set {API_KEY_ENV} to your Pixazo subscription key (or write it into "
    f"{API_KEY_FILE_SHOWN} with mode 600, or pass --api-key), or add --emulator to run against "
    "the built-in offline emulator (no key, no network)."
)

EPILOG = """\b
Exit codes:
  0    success
  1    internal error (a bug: please report it)
  2    bad input: usage, prompt, image, unknown request id, an
       --idempotency-key reused with other arguments
  3    configuration: no or wrong API key (401), no balance (402),
       no permission (403), bad base URL or route, a job book that
       cannot be opened (--job-book, MAI_JOB_BOOK)
  4    the job ended FAILED or ERROR (ERROR is documented as not charged)
  5    timed out waiting; the job may still finish: mai-image wait ID
  6    gateway or connection error, rate limit or used-up quota (retry later)
  7    the job finished but saving its images failed
  8    an earlier submit with this --idempotency-key may have created a job
       whose request id was never recorded: not sent again (a new key submits
       a new job)
  130  interrupted (Ctrl-C); the command to resume is printed
"""

SHORT_EPILOG = (
    "Exit codes: 0 ok, 2 bad input, 3 key/balance/permission, 4 job failed, 5 timed out, "
    "6 gateway error, 7 saving failed, 8 job of this key unknown, 130 Ctrl-C (details: "
    "mai-image --help)."
)


@dataclass
class CliState:
    """Per-run state held in ``click.Context.obj``.

    Tests may pass their own (``CliRunner().invoke(cli, args, obj=CliState(...))``) to build
    the client differently, for example over an ``httpx.MockTransport``.
    """

    client_factory: ClientFactory = MAIImageClient
    session: Session = field(default_factory=Session)


_LAZY_COMMANDS: Final = {
    "batch": "mai_tools.cli._batch:batch_command",
    "emulator": "mai_tools.emulator._cli:emulator_command",
    "jobs": "mai_tools.cli._jobs:jobs_group",
}


class _Group(click.Group):
    """Maps every failure to one line on stderr and a documented exit code.

    The ``emulator`` subcommand is imported only when used: its module pulls in the emulator's
    config models, and startup of the other commands should not pay for that.
    """

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *_LAZY_COMMANDS])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = _LAZY_COMMANDS.get(cmd_name)
        if target is None:
            return super().get_command(ctx, cmd_name)
        module, _, attr = target.partition(":")
        command = getattr(importlib.import_module(module), attr)
        if not isinstance(command, click.Command):  # pragma: no cover - a packaging mistake
            raise TypeError(f"{target} is not a click command")
        return command

    def invoke(self, ctx: click.Context) -> Any:
        state = ctx.ensure_object(CliState)
        state.session = Session()  # per run, also when a caller reuses its CliState
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise  # click prints these itself (usage errors exit 2)
        except (Exception, KeyboardInterrupt) as exc:
            if isinstance(exc, KeyboardInterrupt) and ctx.invoked_subcommand == "emulator":
                # Ctrl-C is how a foreground server is meant to stop: not a failure.
                click.echo("emulator stopped", err=True)
                raise click.exceptions.Exit(int(ExitCode.OK)) from None
            failure = classify(exc, state.session)
            click.echo(click.style("error:", fg="red", bold=True) + " " + failure.message, err=True)
            raise click.exceptions.Exit(int(failure.code)) from None


FIELD_OPTIONS: Final[dict[str, tuple[tuple[str, ...], str]]] = {
    "num_images": (("-n", "--num-images"), "How many images (1-4)."),
    "aspect_ratio": (("--aspect-ratio", "-a"), "Width:height of the output."),
    "output_format": (("--format", "-f"), "Image file format."),
    "sync_mode": (
        ("--sync",),
        "Ask the gateway to answer inline (sync mode) instead of polling a job.",
    ),
}
"""How the commands spell request fields: (flags, help). Any other field of the request models
is offered as ``--its-name`` with its own description."""
FIELD_ARGUMENTS: Final = frozenset({"prompt", "image_urls"})
"""Request fields the commands take as arguments (PROMPT, IMAGE), not as options."""


def _field_option(name: str, field: FieldInfo) -> Callable[[F], F]:
    """The option of one request field: its type, range or choices and default are the field's."""
    first_sentence = (field.description or name).split(". ")[0].rstrip(".") + "."
    flags, text = FIELD_OPTIONS.get(name, ((f"--{name.replace('_', '-')}",), first_sentence))
    annotation = field.annotation
    if annotation is bool:
        return click.option(*flags, name, is_flag=True, help=text)
    optional = type(None) in get_args(annotation)
    if optional:
        (annotation,) = [a for a in get_args(annotation) if a is not type(None)]
    kind: click.ParamType[Any]
    if get_origin(annotation) is Literal:
        kind = click.Choice(get_args(annotation))
    elif annotation is int:
        bounds = {type(m).__name__: m for m in field.metadata}
        low, high = bounds.get("Ge"), bounds.get("Le")
        kind = click.IntRange(getattr(low, "ge", None), getattr(high, "le", None))
    elif annotation is str:
        kind = click.STRING
    else:  # a new kind of field: spell its option in FIELD_OPTIONS' way, by hand
        raise TypeError(f"no CLI option for request field {name!r} of type {annotation!r}")
    return click.option(
        *flags, name, type=kind, default=field.default, show_default=not optional, help=text
    )


def _image_options(operation: str) -> Callable[[F], F]:
    """The request fields of ``operation`` as options, named as the fields: the command passes
    them on as they are (``tests/architecture/test_field_agreement.py`` checks the commands)."""

    def wrap(func: F) -> F:
        fields = OPERATIONS[operation].model_fields
        for name in reversed([n for n in fields if n not in FIELD_ARGUMENTS]):
            func = _field_option(name, fields[name])(func)
        return func

    return wrap


@contextlib.contextmanager
def _open_client(
    state: CliState,
    *,
    emulator: bool,
    base_url: str | None,
    api_key: str | None,
    webhooks: WebhookReceiver | None = None,
    job_book: str | None = None,
) -> Iterator[MAIImageClient]:
    """The client for this command: on the in-process emulator, or on the configured gateway."""
    session = state.session
    extra: dict[str, Any] = {} if webhooks is None else {"webhooks": webhooks}
    if job_book is not None:
        extra["job_book"] = job_book
    if emulator:
        if base_url is not None or api_key is not None:
            raise click.UsageError("--emulator cannot be combined with --base-url or --api-key.")
        from ..emulator import run_emulator

        with run_emulator() as emu:
            session.emulator = True
            session.secret = Secret(emu.api_key)
            # Its port changes every run: remember its job durations under one name.
            with (
                state.client_factory(api_key=emu.api_key, base_url=emu.base_url, **extra) as client,
                _remembered_durations(client, "emulator"),
            ):
                yield client
        return
    try:  # the library's lookup: --api-key, then $PIXAZO_API_KEY, then the key file
        session.secret = resolve_api_key(api_key)
    except MissingAPIKeyError:
        raise MissingAPIKeyError(_NO_KEY) from None
    key = session.secret.get()
    with (
        state.client_factory(api_key=key, base_url=base_url, **extra) as client,
        _remembered_durations(client, client.base_url),
    ):
        yield client


@contextlib.contextmanager
def _remembered_durations(client: MAIImageClient, gateway: str) -> Iterator[None]:
    """Poll by the job durations earlier runs learned on this gateway; save what this run adds."""
    _duration_cache.restore(client.durations, gateway)
    try:
        yield
    finally:
        _duration_cache.store(client.durations, gateway)


def _save(
    state: CliState,
    client: MAIImageClient,
    result: ImageResult,
    out: Path,
    no_save: bool,
    as_json: bool,
) -> list[Path]:
    state.session.phase = Phase.SAVING
    state.session.request_id = result.request_id
    saved = [] if no_save else client.save(result, out)
    print_result(result, saved, as_json=as_json)
    return saved


@dataclass(frozen=True)
class _Where:
    """Where a job command sends its job: the connection and push options it was given."""

    job_book: str | None
    webhook_listen: tuple[str, int] | None
    webhook_public_url: str | None
    emulator: bool
    base_url: str | None
    api_key: str | None


@dataclass(frozen=True)
class _Output:
    """How a job command waits for its job and what it does with the result."""

    out: Path
    no_save: bool
    quiet: bool
    as_json: bool
    timeout: float | None
    idempotency_key: str | None


def _run_job(
    state: CliState,
    operation: Literal["generate", "edit"],
    args: tuple[Any, ...],
    fields: dict[str, Any],
    where: _Where,
    how: _Output,
) -> None:
    """What ``generate`` and ``edit`` do: open the client (and the push receiver), call its
    ``operation`` method with ``args`` and ``fields``, with progress, then save and print the
    result."""
    with (
        receiver(where.webhook_listen, where.webhook_public_url) as webhooks,
        _open_client(
            state,
            emulator=where.emulator,
            base_url=where.base_url,
            api_key=where.api_key,
            webhooks=webhooks,
            job_book=where.job_book,
        ) as client,
    ):
        submit = client.generate if operation == "generate" else client.edit
        with Reporter(state.session, label=operation, quiet=how.quiet) as reporter:
            state.session.phase = Phase.SUBMITTING
            result = submit(
                *args,
                **fields,
                timeout=how.timeout,
                on_status=reporter,
                idempotency_key=how.idempotency_key,
                job_scope=CLI_SCOPE,
            )
        _save(state, client, result, how.out, how.no_save, how.as_json)
    _emulator_note(state, how.quiet or how.as_json)


def _emulator_note(state: CliState, quiet: bool) -> None:
    if state.session.emulator and not quiet:
        click.echo(
            "note: these images came from the offline emulator; its URLs stop working now that "
            "this command ends, the saved files stay.",
            err=True,
        )


def _read_image(image: str) -> str | bytes:
    if image != "-":
        return image
    # Never more than the largest image the gateway takes (+1 byte to tell it was more).
    data = sys.stdin.buffer.read(DEFAULT_MAX_INPUT_BYTES + 1)
    if not data:
        raise InvalidImageError("IMAGE is '-' but standard input is empty.")
    if len(data) > DEFAULT_MAX_INPUT_BYTES:
        raise InvalidImageError(
            f"Standard input holds more than {DEFAULT_MAX_INPUT_BYTES // (1024 * 1024)} MiB, "
            "the largest image an edit takes; downscale or recompress it first."
        )
    return data


@click.group(
    "mai-image",
    cls=_Group,
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog=EPILOG,
)
@click.version_option(__version__, prog_name="mai-image")
def cli() -> None:
    """Generate and edit images with Microsoft MAI Image 2.5 (Pixazo gateway).

    Set PIXAZO_API_KEY, or add --emulator to try any command offline without a key:

        mai-image generate "a lighthouse at dawn, watercolor" --emulator

    Images are saved to ./mai-images/ (--out to change, --no-save to skip); their paths and
    URLs are printed on stdout, progress on stderr.
    """


@cli.command(epilog=SHORT_EPILOG)
@click.argument("prompt")
@_image_options("generate")
@wait_options
@idempotency_option
@job_book_option
@push_options
@connection_options
@click.pass_obj
def generate(
    state: CliState,
    /,
    prompt: str,
    out: Path,
    no_save: bool,
    timeout: float | None,
    quiet: bool,
    idempotency_key: str | None,
    job_book: str | None,
    webhook_listen: tuple[str, int] | None,
    webhook_public_url: str | None,
    emulator: bool,
    base_url: str | None,
    api_key: str | None,
    as_json: bool,
    **fields: Any,
) -> None:
    """Generate images from PROMPT, wait for them and save them."""
    _run_job(
        state,
        "generate",
        (prompt,),
        fields,
        _Where(job_book, webhook_listen, webhook_public_url, emulator, base_url, api_key),
        _Output(out, no_save, quiet, as_json, timeout, idempotency_key),
    )


@cli.command(epilog=SHORT_EPILOG)
@click.argument("image")
@click.argument("prompt")
@_image_options("edit")
@wait_options
@idempotency_option
@job_book_option
@push_options
@connection_options
@click.pass_obj
def edit(
    state: CliState,
    /,
    image: str,
    prompt: str,
    out: Path,
    no_save: bool,
    timeout: float | None,
    quiet: bool,
    idempotency_key: str | None,
    job_book: str | None,
    webhook_listen: tuple[str, int] | None,
    webhook_public_url: str | None,
    emulator: bool,
    base_url: str | None,
    api_key: str | None,
    as_json: bool,
    **fields: Any,
) -> None:
    """Edit IMAGE following PROMPT, wait and save the result.

    IMAGE is a file path, an http(s) URL, a data: URI, or - to read the image from stdin.
    """
    source = _read_image(image)
    _run_job(
        state,
        "edit",
        (prompt, source),
        fields,
        _Where(job_book, webhook_listen, webhook_public_url, emulator, base_url, api_key),
        _Output(out, no_save, quiet, as_json, timeout, idempotency_key),
    )


@cli.command(epilog=SHORT_EPILOG)
@click.argument("request_id")
@connection_options
@click.pass_obj
def status(
    state: CliState,
    request_id: str,
    emulator: bool,
    base_url: str | None,
    api_key: str | None,
    as_json: bool,
) -> None:
    """Show the status of job REQUEST_ID once, without waiting."""
    with _open_client(state, emulator=emulator, base_url=base_url, api_key=api_key) as client:
        print_status(client.get_status(request_id.strip()), as_json=as_json)


@cli.command(epilog=SHORT_EPILOG)
@click.argument("request_id")
@wait_options
@job_book_option
@push_options
@connection_options
@click.pass_obj
def wait(
    state: CliState,
    /,
    request_id: str,
    webhook_listen: tuple[str, int] | None,
    webhook_public_url: str | None,
    **options: Any,
) -> None:
    """Wait for job REQUEST_ID (submitted earlier, anywhere) to finish, then save its images.

    With --webhook-listen, the wait is pushed only for a job submitted with this receiver's
    URL (by this process); a job submitted by another command sends its callback to that
    command's receiver, so this wait reads its status as usual.
    """
    with receiver(webhook_listen, webhook_public_url) as webhooks:
        wait_and_save(state, request_id.strip(), webhooks=webhooks, **options)


def wait_and_save(
    state: CliState,
    request_id: str,
    *,
    out: Path,
    no_save: bool,
    timeout: float | None,
    quiet: bool,
    job_book: str | None,
    emulator: bool,
    base_url: str | None,
    api_key: str | None,
    as_json: bool,
    webhooks: WebhookReceiver | None = None,
) -> None:
    """``mai-image wait`` (and ``jobs wait``): wait for a job by id, save it, print the paths.

    The job's outcome and the saved paths are written into the client's job book.
    """
    with _open_client(
        state,
        emulator=emulator,
        base_url=base_url,
        api_key=api_key,
        webhooks=webhooks,
        job_book=job_book,
    ) as client:
        if webhooks is not None and not quiet:
            click.echo(
                f"note: {request_id} was submitted by another command: its callback goes to "
                "that command's receiver, so this wait reads the status as usual.",
                err=True,
            )
        state.session.request_id = request_id
        state.session.phase = Phase.WAITING
        with Reporter(state.session, label="wait", quiet=quiet) as reporter:
            result = client.wait(request_id, timeout=timeout, on_status=reporter)
        _save(state, client, result, out, no_save, as_json)
    _emulator_note(state, quiet or as_json)


def _terminated(signum: int, frame: object) -> None:
    # A service manager's stop (SIGTERM) is a Ctrl-C: the same resume hint, no .part left.
    raise KeyboardInterrupt


def main() -> None:
    """Console-script entry point (``mai-image``)."""
    signal.signal(signal.SIGTERM, _terminated)
    cli.main(prog_name="mai-image")


__all__ = [
    "CLI_SCOPE",
    "DEFAULT_OUT",
    "EPILOG",
    "CliState",
    "ClientFactory",
    "ExitCode",
    "cli",
    "job_book_option",
    "main",
    "wait_and_save",
]
