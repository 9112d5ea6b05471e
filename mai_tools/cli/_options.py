"""The options the ``mai-image`` commands share: connection, waiting, push, the job book.

Each is a decorator that adds its options to a command; the command receives them as keyword
arguments named as the options.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import click

from .._constants import API_KEY_ENV
from .._exceptions import ConfigurationError
from .._webhooks import WebhookReceiver
from ..jobbook import ENV as JOB_BOOK_ENV

F = TypeVar("F", bound=Callable[..., Any])

DEFAULT_OUT = Path("mai-images")


def connection_options(func: F) -> F:
    options = [
        click.option(
            "--emulator",
            is_flag=True,
            help="Run against a built-in offline emulator (no key, no network).",
        ),
        click.option(
            "--base-url",
            metavar="URL",
            default=None,
            help="Gateway origin (default: $PIXAZO_BASE_URL, else the Pixazo gateway).",
        ),
        click.option(
            "--api-key",
            metavar="KEY",
            default=None,
            help=f"Pixazo key. Prefer ${API_KEY_ENV}: arguments are visible in process lists.",
        ),
        click.option("--json", "as_json", is_flag=True, help="Print the result as JSON."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def wait_options(func: F) -> F:
    options = [
        click.option(
            "--out",
            "-o",
            type=click.Path(file_okay=False, path_type=Path),
            default=DEFAULT_OUT,
            show_default=True,
            help="Directory to save the images in.",
        ),
        click.option("--no-save", is_flag=True, help="Only print the URLs; save nothing."),
        click.option(
            "--timeout",
            type=click.FloatRange(min=0, min_open=True),
            default=None,
            metavar="SECONDS",
            help="Stop waiting after this long (default 300); the job may still finish.",
        ),
        click.option("--quiet", "-q", is_flag=True, help="No progress on stderr."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def job_book_option(func: F) -> F:
    """``--job-book``: which job book the command reads and writes (else ``$MAI_JOB_BOOK``)."""
    return click.option(
        "--job-book",
        metavar="PATH|URL|off",
        default=None,
        help=f"The job book: a file, a postgresql:// URL, or off (default: ${JOB_BOOK_ENV}, "
        "else jobs.sqlite3 in your state directory).",
    )(func)


def idempotency_option(func: F) -> F:
    return click.option(
        "--idempotency-key",
        metavar="KEY",
        default=None,
        help="Name this job: the same KEY again (any process, same job book) continues the "
        "same job instead of paying for a new one; with other arguments it is refused.",
    )(func)


def _host_port(
    ctx: click.Context, param: click.Parameter, value: str | None
) -> tuple[str, int] | None:
    """``HOST:PORT`` (``[::1]:PORT`` for IPv6; port 0 takes a free one)."""
    if value is None:
        return None
    host, sep, port = value.strip().rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise click.BadParameter(
            f"{value!r} is not HOST:PORT, e.g. 127.0.0.1:9000 (or [::1]:9000; port 0 takes a "
            "free port)."
        )
    return host, int(port)


def push_options(func: F) -> F:
    options = [
        click.option(
            "--webhook-listen",
            metavar="HOST:PORT",
            callback=_host_port,
            default=None,
            help="Push waiting: take the gateway's callback on HOST:PORT instead of polling "
            "(a few fallback reads remain).",
        ),
        click.option(
            "--webhook-public-url",
            metavar="URL",
            default=None,
            help="The URL the gateway reaches --webhook-listen at (a tunnel, a load balancer).",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


@contextlib.contextmanager
def receiver(
    listen: tuple[str, int] | None, public_url: str | None
) -> Iterator[WebhookReceiver | None]:
    """The command's webhook receiver, serving while the command runs (or None)."""
    if listen is None:
        if public_url is not None:
            raise click.UsageError(
                "--webhook-public-url needs --webhook-listen HOST:PORT (where the tunnel or "
                "load balancer forwards the callbacks to)."
            )
        yield None
        return
    host, port = listen
    try:
        receiver = WebhookReceiver(public_url, host=host, port=port)
    except ConfigurationError as exc:
        raise click.UsageError(str(exc)) from None
    with receiver:
        yield receiver


__all__ = [
    "DEFAULT_OUT",
    "connection_options",
    "idempotency_option",
    "job_book_option",
    "push_options",
    "receiver",
    "wait_options",
]
