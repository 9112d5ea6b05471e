"""Exit codes, and the one place that turns an exception into an exit code and a message.

Scripts branch on the exit code, so each code names who can fix the problem and whether the
job may still be running (and billed): a timeout or a failed save must not be "fixed" by
submitting again.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from .._agent import FailureKind, failure_of
from .._config import Secret
from .._exceptions import (
    DownloadError,
    InvalidArgumentError,
    JobTimeoutError,
    JobUnknownError,
    MAIImageError,
    NotFoundError,
)


class ExitCode(enum.IntEnum):
    """``mai-image`` exit codes (documented in ``mai-image --help``)."""

    OK = 0
    INTERNAL = 1  # a bug in mai-image: please report it
    USAGE = 2  # bad input: options, prompt, image, unknown request id (click uses 2 too)
    CONFIG = 3  # no/wrong key, no balance, no permission, bad base URL
    JOB_FAILED = 4  # the job ended FAILED or ERROR
    TIMEOUT = 5  # gave up waiting; the job may still finish: `mai-image wait ID`
    GATEWAY = 6  # the gateway could not be reached or answered with an error
    SAVE_FAILED = 7  # the job finished but its images could not be saved
    JOB_UNKNOWN = 8  # an earlier submit of this --idempotency-key may exist, id unknown
    INTERRUPTED = 130  # Ctrl-C


class Phase(enum.Enum):
    """Where a command is, so an interruption can say what happened to the job."""

    SETUP = "setup"
    SUBMITTING = "submitting"
    WAITING = "waiting"
    SAVING = "saving"


@dataclass
class Session:
    """What one command run knows that an error message may need.

    ``secret`` is the API key in use, kept only to scrub it from any text we print.
    """

    phase: Phase = Phase.SETUP
    request_id: str | None = None
    emulator: bool = False
    secret: Secret | None = None

    def scrub(self, text: str) -> str:
        """``text`` without the API key in use (the library's own :meth:`Secret.scrub`)."""
        return text if self.secret is None else self.secret.scrub(text)


@dataclass(frozen=True)
class Failure:
    code: ExitCode
    message: str


_EMULATOR_GONE = (
    "the in-process --emulator stopped with this command, so the job is gone; run "
    "`mai-image emulator` in another shell to keep jobs between commands"
)


def _resume(session: Session, request_id: str) -> str:
    if session.emulator:
        return _EMULATOR_GONE
    return f"Resume with: mai-image wait {request_id}"


def _interrupted(session: Session) -> str:
    rid = session.request_id
    if session.phase is Phase.SUBMITTING and rid is None:
        return (
            "interrupted while submitting; if the gateway received the request, a job may "
            "still run (and be charged) without its id being known here"
        )
    if rid is None:
        return "interrupted"
    if session.phase is Phase.SAVING:
        return f"interrupted while saving; job {rid} finished. " + (
            _EMULATOR_GONE if session.emulator else f"Save it again with: mai-image wait {rid}"
        )
    return f"interrupted; job {rid} keeps running on the gateway. {_resume(session, rid)}"


def _timeout(exc: JobTimeoutError, session: Session) -> str:
    state = exc.last_status.status.value if exc.last_status else "unknown"
    text = (
        f"timed out after {exc.waited_text()} waiting for job {exc.request_id} "
        f"(last status: {state}); it may still finish. {_resume(session, exc.request_id)}"
    )
    # What the gateway answered, without its advice ("Slow down or retry later"): the job runs.
    if exc.reason:
        text += f" ({exc.reason})"
    elif exc.__cause__ is not None:
        text += f" (last error: {exc.__cause__})"
    return text


def classify(exc: BaseException, session: Session) -> Failure:
    """The exit code and the one-line message for ``exc``; the API key is scrubbed."""
    failure = _classify(exc, session)
    return Failure(failure.code, session.scrub(failure.message).replace("\n", " "))


_CODES: dict[FailureKind, ExitCode] = {
    FailureKind.INVALID_INPUT: ExitCode.USAGE,
    FailureKind.UNKNOWN_JOB: ExitCode.USAGE,
    FailureKind.OPERATOR: ExitCode.CONFIG,
    FailureKind.JOB_FAILED: ExitCode.JOB_FAILED,
    FailureKind.JOB_ERROR: ExitCode.JOB_FAILED,
    FailureKind.RATE_LIMITED: ExitCode.GATEWAY,
    FailureKind.SERVICE: ExitCode.GATEWAY,
    FailureKind.MAY_EXIST: ExitCode.GATEWAY,
}
"""Exit codes by the agent-answer layer's failure kinds: one table of who fixes what."""


def _classify(exc: BaseException, session: Session) -> Failure:
    if isinstance(exc, KeyboardInterrupt):
        return Failure(ExitCode.INTERRUPTED, _interrupted(session))
    if isinstance(exc, DownloadError) and exc.unavailable:
        # Saving again cannot help: the gateway has no URL for these images.
        job = "the job" if session.request_id is None else f"job {session.request_id}"
        return Failure(
            ExitCode.SAVE_FAILED,
            f"{job} finished, but the gateway gave no URL for some of its images: {exc} "
            "Waiting or saving again cannot fetch them.",
        )
    if isinstance(exc, DownloadError):
        rid = session.request_id
        again = (
            ""
            if rid is None
            else " The job finished; "
            + (_EMULATOR_GONE if session.emulator else f"save it again with: mai-image wait {rid}")
        )
        return Failure(ExitCode.SAVE_FAILED, f"saving the images failed: {exc}{again}")
    if not isinstance(exc, MAIImageError):
        if isinstance(exc, OSError):
            return Failure(ExitCode.INTERNAL, str(exc))  # a local I/O problem (stdin, stdout)
        return Failure(
            ExitCode.INTERNAL,
            f"internal error ({type(exc).__name__}: {exc}); this is a bug in mai-image, please "
            "report it",
        )
    if isinstance(exc, JobTimeoutError):  # the agent layer's "still running"
        return Failure(ExitCode.TIMEOUT, _timeout(exc, session))
    if isinstance(exc, JobUnknownError):
        # Not a gateway failure to retry: the same key gives the same answer, by design (a job
        # may exist and be charged). Its own code, so a script does not loop on it.
        hint = (
            ""
            if exc.idempotency_key is None
            else " (mai-image: give --idempotency-key a new value to submit a new job.)"
        )
        return Failure(ExitCode.JOB_UNKNOWN, f"{exc}{hint}")
    outcome = failure_of(exc)
    code = _CODES[outcome.kind]
    # The person at the terminal is the operator too: the exception's own text (which says
    # what to fix) reads better here than the agent wording, plus CLI-specific hints.
    if outcome.kind is FailureKind.INVALID_INPUT and isinstance(exc, InvalidArgumentError):
        return Failure(code, f"invalid argument: {exc}" if exc.errors() else str(exc))
    if isinstance(exc, NotFoundError):
        if exc.request_id is None:
            # A submit path that does not exist: the base URL points somewhere else.
            return Failure(code, f"{exc} Is PIXAZO_BASE_URL / --base-url right?")
        if session.emulator:
            return Failure(
                code,
                f"{exc}. The in-process --emulator starts empty: it knows only jobs made in "
                "this same command (run `mai-image emulator` to keep one running)",
            )
    return Failure(code, str(exc))
