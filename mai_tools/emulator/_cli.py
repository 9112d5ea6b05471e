"""``python -m mai_tools.emulator`` / ``mai-image emulator``: serve the emulator on a port."""

from __future__ import annotations

import click

from ._config import DEFAULT_EMULATOR_KEY, EmulatorConfig, Faults


@click.command("emulator")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535))
@click.option(
    "--key",
    "keys",
    multiple=True,
    help=f"Accepted API key (default {DEFAULT_EMULATOR_KEY}); repeatable.",
)
@click.option(
    "--min-duration",
    default=1.5,
    show_default=True,
    type=click.FloatRange(0),
    help="Shortest job (s).",
)
@click.option(
    "--max-duration",
    default=3.0,
    show_default=True,
    type=click.FloatRange(0),
    help="Longest job (s).",
)
@click.option("--seed", type=int, default=None, help="Seed for durations and fault dice.")
@click.option(
    "--rate-limit-first", default=0, type=click.IntRange(0), help="429 the first N submissions."
)
@click.option(
    "--rate-limit-polls", default=0.0, type=click.FloatRange(0, 1), help="429 this share of polls."
)
@click.option(
    "--rate-limit-submits",
    default=0.0,
    type=click.FloatRange(0, 1),
    help="429 this share of submissions.",
)
@click.option(
    "--retry-after", default=1.0, type=click.FloatRange(0), help="Retry-After seconds on 429."
)
@click.option(
    "--retry-after-date", is_flag=True, help="Send Retry-After as an HTTP date, not seconds."
)
@click.option(
    "--error-500", default=0.0, type=click.FloatRange(0, 1), help="500 on this share of polls."
)
@click.option(
    "--error-502", default=0.0, type=click.FloatRange(0, 1), help="502 HTML on this share of polls."
)
@click.option(
    "--drop", default=0.0, type=click.FloatRange(0, 1), help="Drop this share of poll connections."
)
@click.option(
    "--submit-errors",
    default=0.0,
    type=click.FloatRange(0, 1),
    help="500 on this share of submits.",
)
@click.option(
    "--fail-rate", default=0.0, type=click.FloatRange(0, 1), help="Share of jobs ending FAILED."
)
@click.option(
    "--error-rate", default=0.0, type=click.FloatRange(0, 1), help="Share of jobs ending ERROR."
)
@click.option(
    "--slow", default=0.0, type=click.FloatRange(0, 1), help="Delay this share of API answers..."
)
@click.option(
    "--slow-seconds", default=0.0, type=click.FloatRange(0), help="...by this many seconds."
)
@click.option(
    "--poor-key",
    "poor_keys",
    multiple=True,
    help="Accept this key but answer its submissions 402 Insufficient Balance; repeatable.",
)
@click.option(
    "--forbidden-key",
    "forbidden_keys",
    multiple=True,
    help="Accept this key but answer it 403 Forbidden; repeatable.",
)
@click.option(
    "--foreign-polling-url",
    is_flag=True,
    help="Give a polling_url on another origin (a client must not send its key there).",
)
@click.option(
    "--log-level",
    default="warning",
    show_default=True,
    type=click.Choice(["debug", "info", "warning", "error"]),
)
def emulator_command(
    host: str,
    port: int,
    keys: tuple[str, ...],
    min_duration: float,
    max_duration: float,
    seed: int | None,
    rate_limit_first: int,
    rate_limit_polls: float,
    rate_limit_submits: float,
    retry_after: float,
    retry_after_date: bool,
    error_500: float,
    error_502: float,
    drop: float,
    submit_errors: float,
    fail_rate: float,
    error_rate: float,
    slow: float,
    slow_seconds: float,
    poor_keys: tuple[str, ...],
    forbidden_keys: tuple[str, ...],
    foreign_polling_url: bool,
    log_level: str,
) -> None:
    """Run the offline MAI Image 2.5 gateway emulator.

    Prompts containing [fail] or [error] end FAILED or ERROR. Faults can also be changed at run
    time: PUT /_emulator/faults (JSON), GET /_emulator/stats, POST /_emulator/reset.
    """
    import uvicorn  # the server stack loads only when the command runs

    from ._app import create_app
    from ._server import listening_socket, uvicorn_config
    from ._state import Emulator

    if max_duration < min_duration:
        raise click.BadParameter("--max-duration must be >= --min-duration")
    config = EmulatorConfig(
        api_keys=keys or (DEFAULT_EMULATOR_KEY,),
        min_duration=min_duration,
        max_duration=max_duration,
        seed=seed,
        faults=Faults(
            rate_limit_first_submits=rate_limit_first,
            rate_limit_poll_rate=rate_limit_polls,
            rate_limit_submit_rate=rate_limit_submits,
            retry_after=retry_after,
            retry_after_as_date=retry_after_date,
            error_500_rate=error_500,
            error_502_rate=error_502,
            drop_rate=drop,
            submit_error_rate=submit_errors,
            fail_rate=fail_rate,
            error_rate=error_rate,
            slow_rate=slow,
            slow_seconds=slow_seconds,
            insufficient_balance_keys=poor_keys,
            forbidden_keys=forbidden_keys,
            foreign_polling_url=foreign_polling_url,
        ),
    )
    try:
        sock = listening_socket(host, port)
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    bound = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    click.echo(f"MAI Image 2.5 gateway emulator listening on http://{shown}:{bound}")
    click.echo(f"  export PIXAZO_BASE_URL=http://{shown}:{bound}")
    click.echo(f"  export PIXAZO_API_KEY={config.api_keys[0]}")
    click.echo(
        f"API description: http://{shown}:{bound}/openapi.json; counters: /_emulator/stats. "
        "Press Ctrl-C to stop.",
        err=True,
    )
    server = uvicorn.Server(uvicorn_config(create_app(Emulator(config)), host, bound, log_level))
    server.run(sockets=[sock])
