"""``mai-image``: generate and edit images with MAI Image 2.5 from the shell.

Exit codes: 0 success, 2 bad input, 3 configuration/authentication/balance/permission,
4 the job failed, 5 timed out waiting (the job may still finish: ``mai-image wait ID``),
6 gateway or connection error, 130 interrupted.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click
import pydantic

from .._client import MAIImageClient
from .._exceptions import (
    APIError,
    AuthenticationError,
    ConfigurationError,
    DownloadError,
    InsufficientBalanceError,
    InvalidArgumentError,
    JobFailedError,
    JobTimeoutError,
    PermissionDeniedError,
)
from .._models import (
    EDIT_ASPECT_RATIOS,
    GENERATE_ASPECT_RATIOS,
    OUTPUT_FORMATS,
    ImageResult,
    Job,
    JobStatus,
)

EXIT_OK = 0
EXIT_BAD_INPUT = 2
EXIT_CONFIG = 3
EXIT_JOB_FAILED = 4
EXIT_TIMEOUT = 5
EXIT_GATEWAY = 6
EXIT_INTERRUPTED = 130

T = TypeVar("T")


class _Progress:
    """Status changes on stderr: a live line on a terminal, plain lines otherwise."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.live = not quiet and sys.stderr.isatty()
        self._progress: Any = None
        self._task: Any = None
        self.request_id: str | None = None

    def __enter__(self) -> _Progress:
        if self.live:
            from rich.console import Console
            from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

            self._progress = Progress(
                SpinnerColumn(),
                TextColumn("{task.description}"),
                TimeElapsedColumn(),
                console=Console(stderr=True),
                transient=False,
            )
            self._progress.__enter__()
            self._task = self._progress.add_task("submitting...", total=None)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.__exit__(None, None, None)

    def __call__(self, status: JobStatus, elapsed: float) -> None:
        self.request_id = status.request_id
        text = f"{status.request_id}: {status.status.value}"
        if self._progress is not None:
            self._progress.update(self._task, description=text)
        elif not self.quiet:
            click.echo(f"{text} ({elapsed:.1f}s)", err=True)


def _fail(code: int, message: str) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def _validation_message(exc: pydantic.ValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "input"
        parts.append(f"{where}: {err['msg']}")
    return "invalid argument: " + "; ".join(parts)


@contextlib.contextmanager
def _errors(resume_id: Callable[[], str | None]) -> Iterator[None]:
    """Turn every failure into one line on stderr and a documented exit code."""
    try:
        yield
    except KeyboardInterrupt:
        rid = resume_id()
        if rid:
            _fail(
                EXIT_INTERRUPTED,
                f"interrupted; job {rid} keeps running on the gateway. Resume with: "
                f"mai-image wait {rid}",
            )
        _fail(EXIT_INTERRUPTED, "interrupted")
    except pydantic.ValidationError as exc:
        _fail(EXIT_BAD_INPUT, _validation_message(exc))
    except (InvalidArgumentError, ConfigurationError) as exc:
        code = EXIT_CONFIG if isinstance(exc, ConfigurationError) else EXIT_BAD_INPUT
        _fail(code, str(exc))
    except (AuthenticationError, InsufficientBalanceError, PermissionDeniedError) as exc:
        _fail(EXIT_CONFIG, str(exc))
    except JobFailedError as exc:
        _fail(EXIT_JOB_FAILED, str(exc))
    except JobTimeoutError as exc:
        _fail(
            EXIT_TIMEOUT,
            f"{exc} Resume with: mai-image wait {exc.request_id}",
        )
    except DownloadError as exc:
        _fail(EXIT_GATEWAY, f"saving images failed: {exc}")
    except APIError as exc:
        _fail(EXIT_GATEWAY, str(exc))


@contextlib.contextmanager
def _client(emulator: bool, base_url: str | None) -> Iterator[MAIImageClient]:
    if emulator:
        from ..emulator import run_emulator

        with run_emulator() as emu, MAIImageClient(emu.api_key, base_url=emu.base_url) as client:
            yield client
        return
    try:
        client = MAIImageClient(base_url=base_url)
    except ConfigurationError as exc:
        if "PIXAZO_API_KEY" in str(exc):
            _fail(
                EXIT_CONFIG,
                "no API key. Set PIXAZO_API_KEY to your Pixazo subscription key, or add "
                "--emulator to run against the built-in offline emulator (no key needed).",
            )
        _fail(EXIT_CONFIG, str(exc))
    with client:
        yield client


def _short(url: str) -> str:
    return url.split(",", 1)[0] + ",..." if url.startswith("data:") else url


def _report(result: ImageResult, out: Path | None, as_json: bool, emulator: bool = False) -> None:
    saved: list[Path] = result.save(out) if out is not None else []
    if emulator and not as_json:
        click.echo(
            "note: emulator URLs stop working when this command exits; saved files stay.", err=True
        )
    if as_json:
        data = result.summary()
        data["saved_paths"] = [str(p) for p in saved]
        click.echo(json.dumps(data, indent=2))
        return
    click.echo(f"request_id: {result.request_id}")
    for index, url in enumerate(result.image_urls):
        click.echo(f"image {index + 1}: {_short(url)}")
        if index < len(saved):
            click.echo(f"  saved: {saved[index]}")


def _common(func: Callable[..., T]) -> Callable[..., T]:
    options = [
        click.option(
            "--emulator", is_flag=True, help="Run against a built-in offline emulator (no key)."
        ),
        click.option("--base-url", envvar="PIXAZO_BASE_URL", default=None, help="Gateway origin."),
        click.option(
            "--timeout",
            type=click.FloatRange(min=0, min_open=True),
            default=None,
            help="Give up waiting after this many seconds (default 300).",
        ),
        click.option("--json", "as_json", is_flag=True, help="Print the result as JSON."),
        click.option("--quiet", "-q", is_flag=True, help="No progress on stderr."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _save_options(func: Callable[..., T]) -> Callable[..., T]:
    func = click.option(
        "--no-save", is_flag=True, help="Only print the URLs; do not download the images."
    )(func)
    return click.option(
        "--out",
        "-o",
        type=click.Path(file_okay=False, path_type=Path),
        default=Path("mai-images"),
        show_default=True,
        help="Directory to save images into.",
    )(func)


def _image_options(ratios: tuple[str, ...]) -> Callable[[Callable[..., T]], Callable[..., T]]:
    def wrap(func: Callable[..., T]) -> Callable[..., T]:
        for option in reversed(
            [
                click.option(
                    "-n",
                    "--num-images",
                    type=click.IntRange(1, 4),
                    default=1,
                    show_default=True,
                    help="How many images (1-4).",
                ),
                click.option(
                    "--aspect-ratio",
                    "-a",
                    type=click.Choice(ratios),
                    default="auto",
                    show_default=True,
                    help="Width:height of the output.",
                ),
                click.option(
                    "--format",
                    "-f",
                    "output_format",
                    type=click.Choice(OUTPUT_FORMATS),
                    default="png",
                    show_default=True,
                    help="Output file format.",
                ),
                click.option(
                    "--sync",
                    "sync_mode",
                    is_flag=True,
                    help="Ask for the images inline (sync mode) instead of polling.",
                ),
            ]
        ):
            func = option(func)
        return func

    return wrap


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="mai-tools", prog_name="mai-image")
def cli() -> None:
    """Generate and edit images with Microsoft MAI Image 2.5 (Pixazo gateway).

    Set PIXAZO_API_KEY, or add --emulator to try everything offline without a key.
    """


def _run_job(
    client: MAIImageClient,
    submit: Callable[[], Job],
    direct: Callable[[_Progress], ImageResult] | None,
    *,
    timeout: float | None,
    quiet: bool,
) -> ImageResult:
    with _Progress(quiet) as progress, _errors(lambda: progress.request_id):
        if direct is not None:
            return direct(progress)
        job = submit()
        progress.request_id = job.request_id
        return client.wait(job, timeout=timeout, on_status=progress)
    raise AssertionError("unreachable")  # pragma: no cover


@cli.command()
@click.argument("prompt")
@_image_options(GENERATE_ASPECT_RATIOS)
@_save_options
@_common
def generate(
    prompt: str,
    num_images: int,
    aspect_ratio: Any,
    output_format: Any,
    sync_mode: bool,
    out: Path,
    no_save: bool,
    emulator: bool,
    base_url: str | None,
    timeout: float | None,
    as_json: bool,
    quiet: bool,
) -> None:
    """Generate images from PROMPT and save them."""
    with _client(emulator, base_url) as client:
        kwargs: dict[str, Any] = {
            "num_images": num_images,
            "aspect_ratio": aspect_ratio,
            "output_format": output_format,
        }
        direct = None
        if sync_mode:

            def direct(progress: _Progress) -> ImageResult:
                return client.generate(
                    prompt, sync_mode=True, timeout=timeout, on_status=progress, **kwargs
                )

        result = _run_job(
            client,
            lambda: client.submit_generate(prompt, **kwargs),
            direct,
            timeout=timeout,
            quiet=quiet,
        )
        with _errors(lambda: result.request_id):
            _report(result, None if no_save else out, as_json, emulator)


@cli.command()
@click.argument("image")
@click.argument("prompt")
@_image_options(EDIT_ASPECT_RATIOS)
@_save_options
@_common
def edit(
    image: str,
    prompt: str,
    num_images: int,
    aspect_ratio: Any,
    output_format: Any,
    sync_mode: bool,
    out: Path,
    no_save: bool,
    emulator: bool,
    base_url: str | None,
    timeout: float | None,
    as_json: bool,
    quiet: bool,
) -> None:
    """Edit IMAGE (a path, an http(s) URL or a data: URI) following PROMPT."""
    with _client(emulator, base_url) as client:
        kwargs: dict[str, Any] = {
            "num_images": num_images,
            "aspect_ratio": aspect_ratio,
            "output_format": output_format,
        }
        direct = None
        if sync_mode:

            def direct(progress: _Progress) -> ImageResult:
                return client.edit(
                    prompt, image, sync_mode=True, timeout=timeout, on_status=progress, **kwargs
                )

        result = _run_job(
            client,
            lambda: client.submit_edit(prompt, image, **kwargs),
            direct,
            timeout=timeout,
            quiet=quiet,
        )
        with _errors(lambda: result.request_id):
            _report(result, None if no_save else out, as_json, emulator)


@cli.command()
@click.argument("request_id")
@_common
def status(
    request_id: str,
    emulator: bool,
    base_url: str | None,
    timeout: float | None,
    as_json: bool,
    quiet: bool,
) -> None:
    """Show the status of REQUEST_ID once."""
    with _client(emulator, base_url) as client, _errors(lambda: None):
        job = client.get_status(request_id)
        if as_json:
            data = job.model_dump(mode="json", exclude_none=True)
            if job.output is not None:
                data["output"]["media_url"] = [_short(u) for u in job.image_urls]
            click.echo(json.dumps(data, indent=2))
            return
        click.echo(f"{job.request_id}: {job.status.value}")
        if job.error:
            click.echo(f"error: {job.error}")
        for index, url in enumerate(job.image_urls):
            click.echo(f"image {index + 1}: {_short(url)}")


@cli.command()
@click.argument("request_id")
@_save_options
@_common
def wait(
    request_id: str,
    out: Path,
    no_save: bool,
    emulator: bool,
    base_url: str | None,
    timeout: float | None,
    as_json: bool,
    quiet: bool,
) -> None:
    """Wait for REQUEST_ID to finish, then save its images."""
    with _client(emulator, base_url) as client:
        with _Progress(quiet) as progress, _errors(lambda: request_id):
            result = client.wait(request_id, timeout=timeout, on_status=progress)
        with _errors(lambda: request_id):
            _report(result, None if no_save else out, as_json)


def _attach_emulator() -> None:
    from ..emulator._cli import emulator_command

    cli.add_command(emulator_command, "emulator")


_attach_emulator()


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="mai-image")


__all__ = [
    "EXIT_BAD_INPUT",
    "EXIT_CONFIG",
    "EXIT_GATEWAY",
    "EXIT_INTERRUPTED",
    "EXIT_JOB_FAILED",
    "EXIT_OK",
    "EXIT_TIMEOUT",
    "cli",
    "main",
]
