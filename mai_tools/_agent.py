"""One answer for every agent-facing adapter: done, still running, or failed (and who fixes it).

The LangChain tools, the MCP server and the CLI all run a client call through :func:`run` /
:func:`arun` (or classify an exception with :func:`outcome_of`) and only translate the typed
:data:`Outcome` into their medium: text + artifact, text + structuredContent + previews, an
exit code. Every sentence the adapters say about a job is written here, once.

Money rules that hold here for all of them: a finished (charged) job is always :class:`Done`,
also when saving it failed; a job that may still run is :class:`Running` with the step that
resumes it, never "try again"; a submit that may have reached the gateway is never called safe
to repeat.
"""

from __future__ import annotations

import dataclasses
import enum
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pydantic
from pydantic import BaseModel, Field

from ._async_client import AsyncMAIImageClient
from ._client import MAIImageClient
from ._exceptions import (
    APIError,
    APIStatusError,
    ConfigurationError,
    DownloadError,
    InvalidArgumentError,
    JobFailedError,
    JobTimeoutError,
    JobUnknownError,
    MAIImageError,
    MissingAPIKeyError,
    NotFoundError,
    OperatorError,
    RateLimitError,
    SpendingLimitError,
)
from ._models import ImageResult, Status, operation_of, short_url
from ._policies import DurationStats

RESUME_TOOL = "get_image_job"
"""The tool (LangChain and MCP alike) that resumes waiting for a job by its request id."""


class FailureKind(enum.Enum):
    """What kind of failure, which says who can fix it and whether a retry is safe."""

    INVALID_INPUT = "invalid_input"
    """The arguments are wrong; nothing was sent. The model (or user) fixes the request."""
    UNKNOWN_JOB = "unknown_job"
    """The gateway knows no job with this request id. The model checks the id."""
    OPERATOR = "operator"
    """Configuration, key, wallet or permission: only the operator can fix it."""
    JOB_FAILED = "job_failed"
    """The job ended FAILED (the model refused or failed): change the prompt."""
    JOB_ERROR = "job_error"
    """The job ended ERROR (a system error; the vendor documents it as not charged)."""
    RATE_LIMITED = "rate_limited"
    """The gateway refused the submit with 429: no job was made; retry later."""
    SERVICE = "service"
    """The gateway could not be reached or misbehaved; no job is known to exist."""
    MAY_EXIST = "may_exist"
    """A submit may have reached the gateway: a job may run (and be charged). Do not resend."""


Who = Literal["model", "operator", "service"]

_WHO: dict[FailureKind, Who] = {
    FailureKind.INVALID_INPUT: "model",
    FailureKind.UNKNOWN_JOB: "model",
    FailureKind.JOB_FAILED: "model",
    FailureKind.OPERATOR: "operator",
    FailureKind.JOB_ERROR: "service",
    FailureKind.RATE_LIMITED: "service",
    FailureKind.SERVICE: "service",
    FailureKind.MAY_EXIST: "service",
}


@dataclass(frozen=True)
class Done:
    """The job finished: its images, and where they were saved (or why they were not)."""

    result: ImageResult
    saved: list[Path] = field(default_factory=list)
    save_error: str | None = None


@dataclass(frozen=True)
class Running:
    """The wait ended but the job may still finish: resume it by ``request_id``."""

    request_id: str
    status: str
    waited: float
    reason: str | None = None
    typical: float | None = None
    """Seconds jobs like this one usually take in all (the client's learned median), if known."""

    @property
    def next_step(self) -> str:
        return next_step(self.request_id)

    def expecting(self, durations: DurationStats) -> Running:
        """This answer with the typical duration of its operation, learned in ``durations``."""
        operation = operation_of(self.request_id)
        if self.typical is not None or operation is None:
            return self
        typical = durations.typical(operation)
        return self if typical is None else dataclasses.replace(self, typical=typical)


@dataclass(frozen=True)
class Failed:
    """The call failed: what happened, what to do, and who can do it."""

    kind: FailureKind
    message: str
    error: BaseException
    request_id: str | None = None

    @property
    def who(self) -> Who:
        """Who must act: the ``model`` (or its user), the ``operator``, or nobody (``service``:
        wait and retry, or for :attr:`FailureKind.MAY_EXIST` check before resubmitting)."""
        return _WHO[self.kind]


Outcome = Done | Running | Failed


def next_step(request_id: str) -> str:
    return f"Call {RESUME_TOOL} with request_id {request_id} to wait for the result."


# --------------------------------------------------------------------------- classification


def validation_text(error: pydantic.ValidationError | InvalidArgumentError) -> str:
    """The one wording of an argument error: each field and its problem; nothing was sent."""
    if isinstance(error, pydantic.ValidationError):
        error = InvalidArgumentError.from_validation(error)
    return f"Invalid arguments, nothing was sent. Fix and call again: {error}"


def outcome_of(exc: BaseException) -> Running | Failed:
    """Classify an exception from a client call (the table the adapters share)."""
    if isinstance(exc, JobTimeoutError):
        # No status read at all (a resumed wait whose reads failed): say so, don't guess.
        status = exc.last_status.status.value if exc.last_status else Status.UNKNOWN.value
        return Running(exc.request_id, status, exc.waited, reason=str(exc))
    return failure_of(exc)


def failure_of(exc: BaseException) -> Failed:
    """What failed and who must fix it, for any exception but a timeout (that is
    :class:`Running`). Exceptions that are not mai_tools' own are bugs: they are re-raised."""
    request_id = getattr(exc, "request_id", None)
    if isinstance(exc, pydantic.ValidationError):
        return Failed(FailureKind.INVALID_INPUT, validation_text(exc), exc)
    if isinstance(exc, InvalidArgumentError):
        if exc.errors():
            text = validation_text(exc)
        elif "Nothing was sent" in str(exc):
            text = str(exc)
        else:
            text = f"{exc} Nothing was sent."
        return Failed(FailureKind.INVALID_INPUT, text, exc)
    if isinstance(exc, SpendingLimitError):
        # Never "try again": the message says what the limit is, what is left and when it
        # resets. A call asking for more than one call may is the model's to fix.
        kind = (
            FailureKind.INVALID_INPUT
            if exc.limit_name == "max_images_per_call"
            else FailureKind.OPERATOR
        )
        return Failed(kind, str(exc), exc)
    if isinstance(exc, JobUnknownError):
        # The job book holds an earlier submit that may have created a job: never "try again".
        return Failed(FailureKind.MAY_EXIST, str(exc), exc)
    if isinstance(exc, MissingAPIKeyError):
        return Failed(
            FailureKind.OPERATOR,
            "The image tools have no API key: the operator must set PIXAZO_API_KEY where they "
            "run (for an MCP server: in the client's server configuration) or write the key "
            "into ~/.pixazo/api-key (mode 600), or run them on the offline emulator "
            "(mai-image-mcp --emulator). Retrying will not help.",
            exc,
        )
    if isinstance(exc, ConfigurationError):
        return Failed(
            FailureKind.OPERATOR,
            f"The image tools are misconfigured: {exc} The operator must fix this.",
            exc,
        )
    if isinstance(exc, OperatorError):
        return Failed(
            FailureKind.OPERATOR,
            f"{exc}. The operator of these tools must fix this; retrying will not help.",
            exc,
            request_id,
        )
    if isinstance(exc, JobFailedError):
        if exc.status is Status.FAILED:
            advice = (
                "Rephrase the prompt (for example remove content that may violate the content "
                "policy) and try again."
            )
            return Failed(FailureKind.JOB_FAILED, f"{exc} {advice}", exc, exc.request_id)
        advice = "This was a system error (documented as not charged); trying again may work."
        return Failed(FailureKind.JOB_ERROR, f"{exc} {advice}", exc, exc.request_id)
    if isinstance(exc, NotFoundError) and exc.request_id is not None:
        return Failed(
            FailureKind.UNKNOWN_JOB,
            f"{exc}. Use the request_id exactly as a tool returned it.",
            exc,
            request_id,
        )
    if isinstance(exc, APIError) and exc.may_have_arrived:
        return Failed(
            FailureKind.MAY_EXIST,
            f"{exc} Do not submit the same request again right away: the job may be running "
            "and charged. Tell the user; they can look it up in the Pixazo dashboard.",
            exc,
            request_id,
        )
    if isinstance(exc, RateLimitError):
        wait = f" in {exc.retry_after:.0f}s" if exc.retry_after else " in a minute"
        return Failed(
            FailureKind.RATE_LIMITED,
            f"The image service is busy ({exc}); no job was created. Try again{wait}.",
            exc,
            request_id,
        )
    if isinstance(exc, APIStatusError) and 400 <= exc.status_code < 500:
        if exc.request_id is None and isinstance(exc, NotFoundError):
            return Failed(
                FailureKind.OPERATOR,
                f"{exc}. The gateway has no such model route: the operator must check "
                "PIXAZO_BASE_URL. Retrying will not help.",
                exc,
            )
        return Failed(
            FailureKind.INVALID_INPUT,
            f"The image service rejected the request: {exc}",
            exc,
            request_id,
        )
    if isinstance(exc, MAIImageError):
        return Failed(
            FailureKind.SERVICE,
            f"The image service is unavailable right now ({exc}). Try again in a minute.",
            exc,
            request_id,
        )
    raise exc


# --------------------------------------------------------------------------- running a call


def save_or_report(
    client: MAIImageClient,
    result: ImageResult,
    directory: str | os.PathLike[str] | None,
    *,
    timeout: float | None = None,
) -> tuple[list[Path], str | None]:
    """Save ``result`` into ``directory`` (if given) within ``timeout`` seconds: (paths, why
    not saved).

    The job is finished (and charged) whatever happens on disk, so a failed or late save is
    reported next to the URLs instead of failing the call, which would invite a second, paid
    job.
    """
    if directory is None:
        return [], _unavailable(result)
    if timeout is not None and timeout <= 0:
        return [], _NO_TIME_LEFT
    try:
        return client.save(result, directory, timeout=timeout), None
    except DownloadError as exc:
        return [], str(exc)


async def asave_or_report(
    client: AsyncMAIImageClient,
    result: ImageResult,
    directory: str | os.PathLike[str] | None,
    *,
    timeout: float | None = None,
) -> tuple[list[Path], str | None]:
    """Async twin of :func:`save_or_report`."""
    if directory is None:
        return [], _unavailable(result)
    if timeout is not None and timeout <= 0:
        return [], _NO_TIME_LEFT
    try:
        return await client.save(result, directory, timeout=timeout), None
    except DownloadError as exc:
        return [], str(exc)


def _unavailable(result: ImageResult) -> str | None:
    """Why images cannot be fetched, when nothing is saved (an empty URL from the gateway)."""
    return "; ".join(result.unavailable) or None


_NO_TIME_LEFT = "the wait used up the call's time; no time was left to download them"


def _expecting(outcome: Running | Failed, durations: DurationStats) -> Running | Failed:
    return outcome.expecting(durations) if isinstance(outcome, Running) else outcome


def _time_left(budget: float | None, started: float) -> float | None:
    return None if budget is None else budget - (time.monotonic() - started)


def run(
    client: MAIImageClient,
    call: Callable[[MAIImageClient], ImageResult],
    *,
    save_to: str | os.PathLike[str] | None = None,
    budget: float | None = None,
) -> Outcome:
    """Run ``call(client)`` and save its images: the call's :data:`Outcome`, never an exception
    from mai_tools (anything else is a bug and propagates).

    ``budget`` (seconds) bounds the call and the save together: saving gets what the wait
    left of it, and a save that cannot finish in that time is reported as not saved.
    """
    started = time.monotonic()
    try:
        result = call(client)
    except MAIImageError as exc:
        return _expecting(outcome_of(exc), client.durations)
    left = _time_left(budget, started)
    return Done(result, *save_or_report(client, result, save_to, timeout=left))


async def arun(
    client: AsyncMAIImageClient,
    call: Callable[[AsyncMAIImageClient], Awaitable[ImageResult]],
    *,
    save_to: str | os.PathLike[str] | None = None,
    budget: float | None = None,
) -> Outcome:
    """Async twin of :func:`run`."""
    started = time.monotonic()
    try:
        result = await call(client)
    except MAIImageError as exc:
        return _expecting(outcome_of(exc), client.durations)
    left = _time_left(budget, started)
    return Done(result, *(await asave_or_report(client, result, save_to, timeout=left)))


# --------------------------------------------------------------------------- rendering


class ImageJobResult(BaseModel):
    """The structured answer of every image tool (MCP structuredContent, LangChain artifact)."""

    request_id: str = Field(description="The gateway's id of the job.")
    status: str = Field(
        description="COMPLETED, or QUEUED/PROCESSING while running (UNKNOWN: no status read yet)."
    )
    image_urls: list[str] = Field(description="URLs of the images (empty while running).")
    media_type: str | None = Field(default=None, description="MIME type of the images.")
    saved_paths: list[str] = Field(
        default_factory=list, description="Local files, if the images were saved."
    )
    save_error: str | None = Field(
        default=None, description="Why saving failed, if it did (the images are still ready)."
    )
    done: bool = Field(description=f"False if the job is still running: call {RESUME_TOOL}.")
    typical_seconds: float | None = Field(
        default=None,
        description="While running: how long jobs like it usually take in all (seconds), if known.",
    )
    next_step: str | None = Field(
        default=None,
        description=f"What to do next (while the job runs: call {RESUME_TOOL}); null when the "
        "images are ready.",
    )


def structured_failure(failed: Failed) -> ImageJobResult | None:
    """The structured answer of a failure that concerns a job (None when no job is known):
    its id, its status and the next step, so a client that shows only structured data still
    tells the model what to do."""
    if failed.request_id is None or failed.kind is FailureKind.UNKNOWN_JOB:
        return None
    ended = failed.kind in (FailureKind.JOB_FAILED, FailureKind.JOB_ERROR)
    status = failed.error.status.value if isinstance(failed.error, JobFailedError) else "UNKNOWN"
    if failed.kind is FailureKind.JOB_FAILED:
        step = "The job failed: rephrase the prompt, then start a new job."
    elif failed.kind is FailureKind.JOB_ERROR:
        step = "The job ended with a system error (documented as not charged): a new job may work."
    else:
        step = next_step(failed.request_id)
    return ImageJobResult(
        request_id=failed.request_id, status=status, image_urls=[], done=ended, next_step=step
    )


def not_saved_note(save_error: str) -> str:
    """The line a tool adds to its answer when saving failed."""
    return f"not saved to disk ({save_error}); the images above are ready."


def structured(outcome: Done | Running, *, full_urls: bool = False) -> ImageJobResult:
    """The structured answer. ``data:`` URIs are shortened unless ``full_urls`` (an artifact
    that stays with the application, never shown to a model)."""
    if isinstance(outcome, Running):
        return ImageJobResult(
            request_id=outcome.request_id,
            status=outcome.status,
            image_urls=[],
            done=False,
            typical_seconds=None if outcome.typical is None else round(outcome.typical, 1),
            next_step=outcome.next_step,
        )
    result = outcome.result
    return ImageJobResult(
        request_id=result.request_id,
        status=result.status.value,
        image_urls=list(result.image_urls)
        if full_urls
        else [short_url(u) for u in result.image_urls],
        media_type=result.media_type,
        saved_paths=[str(p) for p in outcome.saved],
        save_error=outcome.save_error,
        done=True,
    )


def _usually(running: Running) -> str:
    if running.typical is None:
        return ""
    return f"; jobs like it usually take about {max(round(running.typical), 1)}s in all"


def answer_text(outcome: Done | Running, *, inline_shown: str = "kept in the tool artifact") -> str:
    """The plain-text answer for a model: image URLs first, one per line; never base64.

    Args:
        inline_shown: where sync-mode (inline) images can be seen when they were not saved.
    """
    if isinstance(outcome, Running):
        return (
            f"The image job is still running (status {outcome.status}) after "
            f"{round(outcome.waited, 1):g}s{_usually(outcome)}.\nrequest_id: {outcome.request_id}\n"
            f"{outcome.next_step}"
        )
    result = outcome.result
    inline = result.has_data_uris
    lines = [] if inline else list(result.image_urls)
    lines.append(f"request_id: {result.request_id}")
    if inline:
        where = "saved to the paths below" if outcome.saved else inline_shown
        lines.append(f"{len(result.image_urls)} image(s) returned inline; {where}.")
    lines.extend(f"saved: {p}" for p in outcome.saved)
    if outcome.save_error is not None:
        lines.append(not_saved_note(outcome.save_error))
    return "\n".join(lines)
