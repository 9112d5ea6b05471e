"""``python -m mcp_server`` / ``mai-image-mcp``: serve the MCP server on stdio or HTTP."""

from __future__ import annotations

import contextlib
import dataclasses
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import click

from ._settings import LOG_LEVELS, Settings, SettingsError, check_auth_token, read_token_file

if TYPE_CHECKING:
    from mai_tools import WebhookReceiver


class _Refused(click.ClickException):
    """A configuration the server will not start with (exit status 2, like a usage error)."""

    exit_code = 2


def _allow_dir(
    ctx: click.Context, param: click.Parameter, values: tuple[str, ...]
) -> tuple[Path, ...]:
    if any(not v.strip() for v in values):
        raise click.BadParameter(
            "an empty directory name; name the directory (an empty one would mean the working "
            "directory)."
        )
    return tuple(Path(v) for v in values)


@contextlib.contextmanager
def _maybe_emulator(enabled: bool, settings: Settings) -> Iterator[Settings]:
    if not enabled:
        yield settings
        return
    from mai_tools.emulator import run_emulator

    with run_emulator() as emu:
        # stdout belongs to the MCP protocol on stdio: talk on stderr only.
        print(f"mai-image-mcp: using the offline emulator at {emu.base_url}", file=sys.stderr)
        yield dataclasses.replace(
            settings, api_key=emu.api_key, base_url=emu.base_url, durations_key="emulator"
        )


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
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
    "--auth-token",
    default=None,
    help="Bearer token HTTP clients must send [env MAI_MCP_AUTH_TOKEN]. A flag shows in ps: "
    "prefer the variable or --auth-token-file.",
)
@click.option(
    "--auth-token-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Read the bearer token from this file [env MAI_MCP_AUTH_TOKEN_FILE].",
)
@click.option(
    "--allowed-host",
    "allowed_hosts",
    multiple=True,
    help="Also accept this Host header (name, name:port or name:*); repeatable "
    "[env MAI_MCP_ALLOWED_HOSTS, comma-separated].",
)
@click.option(
    "--allowed-origin",
    "allowed_origins",
    multiple=True,
    help="Also accept this Origin header (https://name[:port]); repeatable "
    "[env MAI_MCP_ALLOWED_ORIGINS, comma-separated].",
)
@click.option(
    "--insecure-no-auth",
    is_flag=True,
    help="Serve HTTP on a non-loopback address without a token (only behind a proxy that "
    "authenticates).",
)
@click.option("--emulator", is_flag=True, help="Use an in-process offline emulator (no key).")
@click.option(
    "--max-wait",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Longest wait inside one tool call, s [env MAI_MCP_MAX_WAIT, default 45].",
)
@click.option(
    "--preview",
    type=click.Choice(["preview", "thumbnail", "off"]),
    default=None,
    help="Inline previews [env MAI_MCP_PREVIEW, default preview].",
)
@click.option(
    "--resource-links/--no-resource-links",
    default=None,
    help="Add a resource_link per image to results [env MAI_MCP_RESOURCE_LINKS, default off].",
)
@click.option(
    "--output-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Save images here [env MAI_MCP_OUTPUT_DIR].",
)
@click.option(
    "--allow-dir",
    "allow_dirs",
    multiple=True,
    type=click.Path(file_okay=False),
    callback=_allow_dir,
    help="Directory edit_image may read local files from; repeatable [env MAI_MCP_ALLOWED_DIRS].",
)
@click.option(
    "--webhook-public-url",
    metavar="URL",
    default=None,
    help="Push waiting (HTTP only): the URL the gateway reaches this server at (each replica "
    "its own); callbacks arrive at URL/mai-tools/webhooks/<token> on this app "
    "[env MAI_MCP_WEBHOOK_PUBLIC_URL].",
)
@click.option(
    "--log-level",
    type=click.Choice(LOG_LEVELS, case_sensitive=False),
    default=None,
    help="Server log level on stderr [env MAI_MCP_LOG_LEVEL, default WARNING].",
)
def cli(
    transport: str,
    host: str,
    port: int,
    stateless: bool,
    auth_token: str | None,
    auth_token_file: Path | None,
    allowed_hosts: tuple[str, ...],
    allowed_origins: tuple[str, ...],
    insecure_no_auth: bool,
    emulator: bool,
    max_wait: float | None,
    preview: str | None,
    resource_links: bool | None,
    output_dir: Path | None,
    allow_dirs: tuple[Path, ...],
    webhook_public_url: str | None,
    log_level: str | None,
) -> None:
    """MCP server for Microsoft MAI Image 2.5 (generate_image, edit_image, get_image_job)."""
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        raise click.UsageError(str(exc)) from None
    changes: dict[str, object] = {}
    if max_wait is not None:
        changes["max_wait"] = max_wait
    if preview is not None:
        changes["preview"] = preview
    if resource_links is not None:
        changes["resource_links"] = resource_links
    if output_dir is not None:
        changes["output_dir"] = output_dir
    if allow_dirs:
        changes["allowed_dirs"] = settings.allowed_dirs + allow_dirs
    if log_level is not None:
        changes["log_level"] = log_level.upper()
    try:
        if auth_token is not None and auth_token_file is not None:
            raise SettingsError("Give --auth-token or --auth-token-file, not both.")
        if auth_token is not None:
            changes["auth_token"] = check_auth_token(auth_token.strip(), "--auth-token")
        elif auth_token_file is not None:
            changes["auth_token"] = read_token_file(auth_token_file)
        if allowed_hosts:
            changes["allowed_hosts"] = settings.allowed_hosts + allowed_hosts
        if allowed_origins:
            changes["allowed_origins"] = settings.allowed_origins + allowed_origins
        if webhook_public_url is not None:
            changes["webhook_public_url"] = webhook_public_url
        changes["remember_durations"] = True  # a restarted server polls by what it learned
        settings = dataclasses.replace(settings, **changes)  # type: ignore[arg-type]
    except SettingsError as exc:
        raise click.UsageError(str(exc)) from None

    if settings.webhook_public_url is not None and transport != "streamable-http":
        raise click.UsageError(
            "--webhook-public-url (MAI_MCP_WEBHOOK_PUBLIC_URL) needs --transport "
            "streamable-http: the gateway's callbacks arrive on the server's HTTP app."
        )
    if transport == "streamable-http":
        from ._http import refusal

        if insecure_no_auth and settings.auth_token is not None:
            raise click.UsageError("--insecure-no-auth contradicts the auth token that is set.")
        problem = refusal(host, settings, insecure_no_auth=insecure_no_auth)
        if problem is not None:
            raise _Refused(problem)

    from ._resume import MemoryEventStore
    from ._server import create_server

    with _maybe_emulator(emulator, settings) as effective:
        if transport == "stdio":
            create_server(effective).run("stdio")
            return
        from ._http import http_app, serve, startup_notes

        events = None if stateless else MemoryEventStore()
        receiver = _receiver(effective)
        server = create_server(effective, event_store=events, webhooks=receiver)
        for note in startup_notes(host, port, effective, insecure_no_auth=insecure_no_auth):
            print(f"mai-image-mcp: {note}", file=sys.stderr)
        app = http_app(
            server, effective, host=host, port=port, stateless=stateless, event_store=events
        )
        if receiver is not None:
            # Callbacks bypass the bearer token and Host checks: the gateway sends neither,
            # and a callback only wakes a wait, which then reads the status with the key.
            app = receiver.wrap(app)
            print(
                f"mai-image-mcp: push waiting on: the gateway calls back at {receiver.url}/<token>",
                file=sys.stderr,
            )
        serve(app, host=host, port=port, log_level=effective.log_level)


def _receiver(settings: Settings) -> WebhookReceiver | None:
    if settings.webhook_public_url is None:
        return None
    from mai_tools import WebhookReceiver

    return WebhookReceiver(settings.webhook_public_url)


def main() -> None:
    """Console-script entry point."""
    from mai_tools._mcp_identity import exit_if_foreign_mcp_server  # python -m mcp_server too

    exit_if_foreign_mcp_server()
    cli(prog_name="mai-image-mcp")


if __name__ == "__main__":
    main()
