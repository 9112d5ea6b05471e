"""What the gateway says about a job: its status and one read of the status endpoint.

Below :mod:`mai_tools._exceptions` in the layers (the job errors carry a :class:`JobStatus`), so
it imports nothing of mai_tools but constants. Response models tolerate fields the gateway may
add later.
"""

from __future__ import annotations

import enum
import logging
from datetime import datetime
from typing import Any, Final

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

logger = logging.getLogger("mai_tools")


class Status(enum.StrEnum):
    """Job states reported by the gateway.

    `UNKNOWN` stands for any status string this library does not know yet; it is treated as
    "not finished" and the raw string is kept in :attr:`JobStatus.raw_status`.
    """

    QUEUED = "QUEUED"
    """Accepted, waiting for a worker."""
    PROCESSING = "PROCESSING"
    """Being drawn."""
    COMPLETED = "COMPLETED"
    """Done: the images are in the job's output."""
    FAILED = "FAILED"
    """The model refused or failed the job (whether that is charged is not documented)."""
    ERROR = "ERROR"
    """A system error ended the job (documented as not charged)."""
    UNKNOWN = "UNKNOWN"
    """A status string this library does not know yet: treated as not finished."""

    @property
    def is_terminal(self) -> bool:
        """True once the job will not change any more."""
        return self in _TERMINAL

    @property
    def is_failure(self) -> bool:
        """True for FAILED and ERROR."""
        return self in (Status.FAILED, Status.ERROR)


_TERMINAL: Final = frozenset({Status.COMPLETED, Status.FAILED, Status.ERROR})
_KNOWN_STATUSES: Final = frozenset(s.value for s in Status) - {"UNKNOWN"}


def parse_status(raw: object) -> Status:
    """Map a gateway status string to :class:`Status`; unknown strings become UNKNOWN."""
    text = str(raw).strip().upper() if raw is not None else ""
    if text in _KNOWN_STATUSES:
        return Status(text)
    logger.warning("unknown job status %r from the gateway; treating it as not finished", raw)
    return Status.UNKNOWN


class _ResponseModel(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True, populate_by_name=True, defer_build=True)


class Job(_ResponseModel):
    """A submitted job: what the gateway answers to a (non-sync) request."""

    request_id: str = Field(description="The gateway's id for this job.")
    status: Status = Field(default=Status.QUEUED, description="Status when submitted.")
    polling_url: str | None = Field(default=None, description="Status URL given at submission.")
    raw_status: str | None = Field(default=None, exclude=True)
    """The status string as the gateway sent it."""

    @field_validator("status", mode="before")
    @classmethod
    def _status(cls, value: object) -> Status:
        return parse_status(value)


_NAMED_BLANKS: Final = 4
"""How many empty URLs :attr:`JobStatus.unavailable` names one by one."""
EMPTY_URL: Final = "empty URL"
"""In every text of :attr:`JobStatus.unavailable` (the batch finds them in a line's error)."""


class JobOutput(_ResponseModel):
    """The `output` object of a finished job.

    An empty (or blank) string is not an image URL: it is left out of ``media_url``, and its
    position (0-based, in the gateway's list) is kept in ``blank_urls`` so the job can say
    which image cannot be fetched.
    """

    media_url: list[str] = Field(default_factory=list)
    """The images' URLs (http(s), or ``data:`` URIs in sync mode), blanks left out."""
    media_type: str | None = None
    """Their MIME type, e.g. ``image/png``, when the gateway says."""
    blank_urls: tuple[int, ...] = Field(default=(), exclude=True)
    """Positions of empty URLs in the gateway's list: images that cannot be fetched."""

    @model_validator(mode="before")
    @classmethod
    def _without_blanks(cls, data: object) -> object:
        if not isinstance(data, dict):
            return data
        urls = data.get("media_url")
        if isinstance(urls, str):
            urls = [urls]
        if not isinstance(urls, list):
            return data
        blank = tuple(i for i, u in enumerate(urls) if isinstance(u, str) and not u.strip())
        if not blank:
            return data
        kept = [u for u in urls if not (isinstance(u, str) and not u.strip())]
        return {**data, "media_url": kept, "blank_urls": blank}

    @field_validator("media_url", mode="before")
    @classmethod
    def _one_or_many(cls, value: object) -> object:
        if isinstance(value, str):
            return [value]
        return [] if value is None else value


class JobStatus(_ResponseModel):
    """One read of the status endpoint (`GET /v2/requests/status/{request_id}`)."""

    request_id: str
    """The gateway's id for the job."""
    status: Status
    """Where the job is (an unknown string is ``UNKNOWN``: not finished)."""
    raw_status: str | None = Field(default=None, description="The status string as sent.")
    model_id: str | None = None
    """The model that runs the job, as the gateway names it."""
    error: str | None = None
    """The gateway's reason, for a job that ended FAILED or ERROR."""
    output: JobOutput | None = None
    """The images, once the job is COMPLETED."""
    created_at: datetime | None = None
    """When the job was accepted."""
    updated_at: datetime | None = None
    """When its status last changed."""
    completed_at: datetime | None = None
    """When it ended."""
    polling_url: str | None = None
    """The status URL the gateway gives for the job."""

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> JobStatus:
        """Build from a decoded JSON body, keeping the raw status string."""
        data = dict(body)
        raw = data.get("status")
        data["raw_status"] = None if raw is None else str(raw)
        data["status"] = parse_status(raw)
        return cls.model_validate(data)

    @property
    def image_urls(self) -> list[str]:
        return list(self.output.media_url) if self.output else []

    @property
    def unavailable(self) -> list[str]:
        """Why some images of the job cannot be fetched (an empty URL in ``media_url``)."""
        blank = self.output.blank_urls if self.output else ()
        why = [
            f"image {i + 1} of {self.request_id} cannot be fetched: the gateway sent an {EMPTY_URL}"
            for i in blank[:_NAMED_BLANKS]
        ]
        if len(blank) > _NAMED_BLANKS:  # a hostile answer must not become a huge text
            why.append(f"and {len(blank) - _NAMED_BLANKS} more {EMPTY_URL}s")
        return why

    @property
    def has_output(self) -> bool:
        """True when ``media_url`` named at least one image (usable or not)."""
        return bool(self.image_urls or self.unavailable)

    @property
    def server_seconds(self) -> float | None:
        """How long the gateway says the job took (``completed_at - created_at``), if known."""
        if self.created_at is None or self.completed_at is None:
            return None
        return (self.completed_at - self.created_at).total_seconds()
