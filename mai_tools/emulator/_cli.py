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
    "--quota-calls",
    default=None,
    type=click.IntRange(0),
    help="Allow each key N API calls per --quota-period, then 403 'Out of call volume quota'.",
)
@click.option(
    "--quota-period",
    default=3600.0,
    show_default=True,
    type=click.FloatRange(0, min_open=True),
    help="Length of a quota period (s).",
)
@click.option(
    "--cdn-rate-limit-first",
    default=0,
    type=click.IntRange(0),
    help="429 the first N image downloads (the CDN).",
)
@click.option(
    "--cdn-rate-limit",
    default=0.0,
    type=click.FloatRange(0, 1),
    help="429 this share of image downloads.",
)
@click.option(
    "--webhook-drop",
    default=0.0,
    type=click.FloatRange(0, 1),
    help="Never send this share of webhook callbacks.",
)
@click.option(
    "--webhook-delay",
    default=0.0,
    type=click.FloatRange(0, 1),
    help="Send this share of webhook callbacks late...",
)
@click.option(
    "--webhook-delay-seconds",
    default=0.0,
    type=click.FloatRange(0),
    help="...by this many seconds after the job ends.",
)
@click.option(
    "--webhook-duplicate",
    default=0.0,
    type=click.FloatRange(0, 1),
    help="Send this share of webhook callbacks twice.",
)
@click.option(
    "--webhook-only-to",
    "webhook_only_to",
    multiple=True,
    metavar="URL",
    help="Send callbacks only to URLs under this one (others get none); repeatable.",
)
@click.option(
    "--allow-remote-webhooks",
    is_flag=True,
    help="Send webhook callbacks to any host (default: loopback addresses only).",
)
@click.option(
    "--max-jobs",
    default=10_000,
    show_default=True,
    type=click.IntRange(1),
    help="Jobs kept; the oldest are forgotten beyond it.",
)
@click.option(
    "--job-ttl",
    default=3600.0,
    show_default=True,
    type=click.FloatRange(0, min_open=True),
    help="Seconds a job is kept after it ends (then its id answers 404).",
)
@click.option(
    "--long-side",
    default=1024,
    show_default=True,
    type=click.IntRange(16, 4096),
    help="Long side of the images made, in pixels (smaller is cheaper to render).",
)
@click.option(
    "--public-url",
    default=None,
    metavar="URL",
    help="Origin put in polling_url/media_url (default: the Host the client used).",
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
    quota_calls: int | None,
    quota_period: float,
    cdn_rate_limit_first: int,
    cdn_rate_limit: float,
    webhook_drop: float,
    webhook_delay: float,
    webhook_delay_seconds: float,
    webhook_duplicate: float,
    webhook_only_to: tuple[str, ...],
    allow_remote_webhooks: bool,
    max_jobs: int,
    job_ttl: float,
    long_side: int,
    public_url: str | None,
    log_level: str,
) -> None:
    """Run the offline MAI Image 2.5 gateway emulator.

    Prompts containing [fail] or [error] end FAILED or ERROR. Faults can also be changed at run
    time: PUT /_emulator/faults (JSON), GET /_emulator/stats, POST /_emulator/reset (each with
    an accepted key in the Ocp-Apim-Subscription-Key header). Webhook callbacks go only to
    loopback addresses unless --allow-remote-webhooks is given.
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
        allow_remote_webhooks=allow_remote_webhooks,
        max_jobs=max_jobs,
        job_ttl=job_ttl,
        long_side=long_side,
        public_url=public_url,
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
            quota_calls=quota_calls,
            quota_period=quota_period,
            cdn_rate_limit_first=cdn_rate_limit_first,
            cdn_rate_limit_rate=cdn_rate_limit,
            webhook_drop_rate=webhook_drop,
            webhook_delay_rate=webhook_delay,
            webhook_delay_seconds=webhook_delay_seconds,
            webhook_duplicate_rate=webhook_duplicate,
            webhook_only_to=webhook_only_to,
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
        f"API description: http://{shown}:{bound}/openapi.json; counters: /_emulator/stats "
        "(send the key). Press Ctrl-C to stop.",
        err=True,
    )
    server = uvicorn.Server(uvicorn_config(create_app(Emulator(config)), host, bound, log_level))
    server.run(sockets=[sock])
