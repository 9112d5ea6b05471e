"""``python -m mcp_server`` / ``mai-image-mcp``: serve the MCP server on stdio or HTTP."""

from __future__ import annotations

import contextlib
import sys
import typing
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from pydantic import SecretStr

from ._settings import Settings, SettingsError, env_name, load, options

if TYPE_CHECKING:
    from mai_tools import WebhookReceiver

    from ._auth import Authenticator
    from ._metrics import Exposition


class _Refused(click.ClickException):
    """A configuration the server will not start with (exit status 2, like a usage error)."""

    exit_code = 2


_NOTHING_SENT = " The server did not start; no job was sent."


def _settings_options(command: Callable[..., None]) -> Callable[..., None]:
    """One click option per public :class:`Settings` field that has a flag.

    The help is the field's description, with its variable and default; a Literal field
    offers its values; a tuple field's flag is repeatable. Values reach the model as given
    (text), so the model is the one place that checks them, whichever way they came.
    """
    for name, info, option in reversed(list(options())):
        if option.flag is None:
            continue
        default = info.default
        if default in (None, ()):
            shown = ""
        elif isinstance(default, float):
            shown = f", default {default:g}"
        else:
            shown = f", default {'off' if default is False else default}"
        kwargs: dict[str, Any] = {
            "default": None,
            "help": f"{info.description} [env {env_name(name)}{shown}]",
        }
        decls = [option.flag if option.off is None else f"{option.flag}/{option.off}", name]
        choices = typing.get_args(info.annotation)
        if typing.get_origin(info.annotation) is typing.Literal:
            kwargs["type"] = click.Choice(choices, case_sensitive=False)
        elif typing.get_origin(info.annotation) is tuple:
            kwargs.update(multiple=True, default=())
        if option.metavar is not None:
            kwargs["metavar"] = option.metavar
        command = click.option(*decls, **kwargs)(command)
    return command


@contextlib.contextmanager
def _maybe_emulator(enabled: bool, settings: Settings) -> Iterator[Settings]:
    if not enabled:
        yield settings
        return
    from mai_tools.emulator import run_emulator

    with run_emulator() as emu:
        # The start line says "emulator" (stdout belongs to the MCP protocol on stdio).
        yield settings.model_copy(
            update={
                "api_key": SecretStr(emu.api_key),
                "base_url": emu.base_url,
                "durations_key": "emulator",
            }
        )


@click.group(context_settings={"help_option_names": ["-h", "--help"]}, invoke_without_command=True)
@click.option(
    "--transport",
    type=click.Choice(["stdio", "streamable-http"]),
    default="stdio",
    show_default=True,
)
@click.option("--host", default="127.0.0.1", show_default=True, help="HTTP interface.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535))
@click.option("--stateless", is_flag=True, help="Stateless HTTP (any replica can answer).")
@click.option(
    "--insecure-no-auth",
    is_flag=True,
    help="Serve HTTP on a non-loopback address without a token (only behind a proxy that "
    "authenticates).",
)
@click.option("--emulator", is_flag=True, help="Use an in-process offline emulator (no key).")
@_settings_options
@click.pass_context
def cli(
    ctx: click.Context,
    /,
    transport: str,
    host: str,
    port: int,
    stateless: bool,
    insecure_no_auth: bool,
    emulator: bool,
    **flags: object,
) -> None:
    """MCP server for Microsoft MAI Image 2.5 (generate_image, edit_image, get_image_job).

    Each setting below is also read from its environment variable; a flag overrides it.
    Without a command, serves; `mai-image-mcp tokens --help` manages named tokens.
    """
    if ctx.invoked_subcommand is not None:
        return
    given = {name: value for name, value in flags.items() if value is not None and value != ()}
    try:
        # A restarted server polls by what it learned.
        settings = load(given, remember_durations=True)
    except SettingsError as exc:
        raise click.UsageError(str(exc)) from None

    if settings.webhook_public_url is not None and transport != "streamable-http":
        raise click.UsageError(
            "--webhook-public-url (MAI_MCP_WEBHOOK_PUBLIC_URL) needs --transport "
            "streamable-http: the gateway's callbacks arrive on the server's HTTP app."
        )
    if settings.metrics and transport != "streamable-http":
        raise click.UsageError(
            "--metrics (MAI_MCP_METRICS) needs --transport streamable-http: /metrics is served "
            "on the server's HTTP app (a stdio server has none)."
        )
    verifier = None
    if transport == "streamable-http":
        from ._auth import configured
        from ._http import refusal

        if insecure_no_auth and configured(settings):
            raise click.UsageError(
                "--insecure-no-auth contradicts the authentication that is set (a token, "
                "--tokens-file or --oauth-*)."
            )
        problem = refusal(host, settings, insecure_no_auth=insecure_no_auth)
        if problem is not None:
            raise _Refused(problem)
        verifier = _authenticator(settings)
    exposition = _metrics(settings)

    from mai_tools._exceptions import JobBookError
    from mai_tools.jobbook import open_job_book

    try:
        # Opened here so that a bad book stops the server at once, in words; the server's
        # lifespan then finds it open (one book object per place and process).
        book = open_job_book(settings.job_book)
    except JobBookError as exc:
        raise _Refused(f"{exc} (--job-book / MAI_JOB_BOOK){_NOTHING_SENT}") from None
    audit = _check_audit_log(settings)

    from . import _logs
    from ._resume import MemoryEventStore
    from ._server import create_server

    # Before the server is made: the MCP SDK then leaves the root logger to us.
    secrets = [v.get_secret_value() for v in (settings.api_key, settings.auth_token) if v]
    _logs.setup(settings.log_level, settings.log_format, redact=secrets)
    # Replicas adopt each other's jobs only through one shared (Postgres) book: say which.
    where = "off (this process only)" if book is None else book.location
    with _maybe_emulator(emulator, settings) as effective:
        _logs.adopt_uvicorn()  # after the emulator's uvicorn set up logging its own way
        _logs.log_start(*_start_line(transport, host, port, effective, emulator, where))
        if audit is not None:
            _logs.note(f"audit log: {audit}")
        if transport == "stdio":
            create_server(effective).run("stdio")
            return
        from ._http import connection_guard, http_app, serve, startup_notes

        events = None if stateless else MemoryEventStore()
        receiver = _receiver(effective)
        server = create_server(effective, event_store=events, webhooks=receiver)
        for note in startup_notes(host, port, effective, insecure_no_auth=insecure_no_auth):
            _logs.note(note)
        if exposition is not None:
            from ._http import _host_form

            _logs.note(f"Prometheus metrics at http://{_host_form(host)}:{port}/metrics")
        app = http_app(
            server,
            effective,
            host=host,
            port=port,
            stateless=stateless,
            event_store=events,
            authenticator=verifier,
            metrics=exposition,
        )
        if receiver is not None:
            # Callbacks bypass the bearer token and Host checks: the gateway sends neither,
            # and a callback only wakes a wait, which then reads the status with the key.
            app = receiver.wrap(app)
            _logs.note(f"push waiting on: the gateway calls back at {receiver.url}/<token>")
        guard = connection_guard(effective)
        serve(app, host=host, port=port, log_level=effective.log_level, guard=guard)


def _start_line(
    transport: str, host: str, port: int, settings: Settings, emulator: bool, book: str
) -> tuple[str, dict[str, object]]:
    """The start line (:func:`mcp_server._logs.start_line`) of this run."""
    from mai_tools import __version__

    from ._http import _host_form
    from ._logs import auth_mode, gateway_host, start_line

    http = transport == "streamable-http"
    return start_line(
        version=__version__,
        transport=transport,
        address=f"http://{_host_form(host)}:{port}/mcp" if http else "stdin/stdout",
        auth=auth_mode(
            token=settings.auth_token is not None,
            tokens_file=settings.tokens_file is not None,
            oauth_issuer=settings.oauth_issuer,
            transport=transport,
        ),
        gateway=gateway_host(settings.base_url, emulator=emulator),
        book=book,
    )


def _check_audit_log(settings: Settings) -> Path | None:
    """The audit log's path, once it is known to open (the server's lifespan opens its own)."""
    from mai_tools._exceptions import ConfigurationError

    from ._state import open_audit_log

    try:
        audit = open_audit_log(settings)
    except ConfigurationError as exc:
        raise _Refused(f"{exc} (--audit-log / MAI_MCP_AUDIT_LOG){_NOTHING_SENT}") from None
    if audit is None:
        return None
    audit.close()
    return audit.path


def _authenticator(settings: Settings) -> Authenticator | None:
    """The HTTP server's authenticator, its tokens file read and its OAuth key set fetched:
    a bad file or a key set that is down stops the server here, never opens it."""
    import asyncio

    from ._auth import AuthSetupError, authenticator

    try:
        verifier = authenticator(settings)
        if verifier is not None:
            asyncio.run(verifier.prepare())
    except AuthSetupError as exc:
        raise _Refused(f"{exc}{_NOTHING_SENT}") from None
    return verifier


def _metrics(settings: Settings) -> Exposition | None:
    """The registry ``/metrics`` serves, the process's meter provider set to export to it
    (None without ``--metrics``: then nothing of OpenTelemetry's SDK is imported)."""
    if not settings.metrics:
        return None
    from ._metrics import MetricsSetupError, install

    try:
        return install()
    except MetricsSetupError as exc:
        raise _Refused(f"{exc}{_NOTHING_SENT}") from None


def _receiver(settings: Settings) -> WebhookReceiver | None:
    if settings.webhook_public_url is None:
        return None
    from mai_tools import WebhookReceiver

    return WebhookReceiver(settings.webhook_public_url)


def _add_commands() -> None:
    from ._tokens import tokens_command

    cli.add_command(tokens_command)


_add_commands()


def main() -> None:
    """Console-script entry point (``mai-image-mcp`` checks the package first: _mcp_entry).
    Its help names the command it was started as (``mai-tools`` is the same server)."""
    called = Path(sys.argv[0]).name
    cli(prog_name=called if called in ("mai-tools", "mai-image-mcp") else "mai-image-mcp")


if __name__ == "__main__":
    main()
