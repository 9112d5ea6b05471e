"""Request and response models for the MAI Image 2.5 gateway.

Request models forbid unknown fields and carry the gateway's documented limits, so bad input
fails here, before anything is sent or paid for. Response models tolerate fields the gateway
may add later. The field descriptions are written for an LLM reader: the LangChain tools and
the MCP server reuse them as their argument schemas.
"""

from __future__ import annotations

import enum
import logging
import os
import re
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Final, Literal, get_args

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    field_validator,
)

from ._constants import MAX_IMAGES, PROMPT_MAX_LENGTH, PROMPT_MIN_LENGTH

if TYPE_CHECKING:
    import httpx

    from ._download import Saver

logger = logging.getLogger("mai_tools")


GenerateAspectRatio = Literal[
    "auto", "21:9", "16:9", "3:2", "4:3", "5:4", "1:1", "4:5", "3:4", "2:3", "9:16"
]
EditAspectRatio = Literal["auto", "1:1", "4:3", "3:4", "16:9", "9:16", "3:2", "2:3"]
OutputFormat = Literal["png", "jpeg", "webp"]

GENERATE_ASPECT_RATIOS: Final[tuple[str, ...]] = get_args(GenerateAspectRatio)
EDIT_ASPECT_RATIOS: Final[tuple[str, ...]] = get_args(EditAspectRatio)
OUTPUT_FORMATS: Final[tuple[str, ...]] = get_args(OutputFormat)


# Whitespace as both Python (str.isspace) and JSON Schema / ECMAScript regexes (\s) know it,
# spelled out so that the client, the emulator and the OpenAPI document agree on every string.
_WS = "\t\n\x0b\x0c\r\x1c-\x1f \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"
PROMPT_PATTERN: Final = f"[^{_WS}][\\s\\S]+[^{_WS}]"
"""A prompt has at least 3 characters from its first to its last non-whitespace character."""
_PROMPT_RE = re.compile(PROMPT_PATTERN)


def _prompt_not_blank(value: str) -> str:
    if _PROMPT_RE.search(value) is None:
        raise ValueError(
            f"prompt must have at least {PROMPT_MIN_LENGTH} characters besides leading and "
            "trailing whitespace"
        )
    return value


# Shared, annotated field types. The adapters (LangChain tools, MCP server) build their
# argument schemas from these so that limits and descriptions are written exactly once.
Prompt = Annotated[
    str,
    Field(
        min_length=PROMPT_MIN_LENGTH,
        max_length=PROMPT_MAX_LENGTH,
        description=(
            "What the image should show, in plain language (3-5000 characters). Describe "
            "subject, setting, style, lighting and composition; put any text that must appear "
            "in the image in quotes."
        ),
    ),
    AfterValidator(_prompt_not_blank),
]
EditPrompt = Annotated[
    str,
    Field(
        min_length=PROMPT_MIN_LENGTH,
        max_length=PROMPT_MAX_LENGTH,
        description=(
            "How to change the source image, as an instruction (3-5000 characters), e.g. "
            "'make the lighting warm golden hour and blur the background'."
        ),
    ),
    AfterValidator(_prompt_not_blank),
]


def _whole_number(value: object) -> object:
    # JSON has one number type: 4.0 is the integer 4 (as JSON Schema says); 4.5 stays refused.
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


NumImages = Annotated[
    int,
    Field(
        ge=1,
        le=MAX_IMAGES,
        # Strict everywhere, the tool boundaries included: "2" and true are not an image count
        # (true once became one paid image). 2.0 is: JSON has one number type, as JSON Schema's
        # "integer" says, so clients that write numbers as floats still work.
        strict=True,
        description="How many images to make from this one request (1-4). Default 1.",
    ),
    BeforeValidator(_whole_number),
]
GenerateAspectRatioField = Annotated[
    GenerateAspectRatio,
    Field(
        description=(
            "Width:height of the output. 'auto' lets the model decide (square). Allowed: auto, "
            "21:9, 16:9, 3:2, 4:3, 5:4, 1:1, 4:5, 3:4, 2:3, 9:16. Use 16:9 for landscape "
            "banners, 9:16 for phone wallpapers and stories, 1:1 for avatars."
        ),
    ),
]
EditAspectRatioField = Annotated[
    EditAspectRatio,
    Field(
        description=(
            "Width:height of the edited output. 'auto' keeps the source image's proportions. "
            "Allowed: auto, 1:1, 4:3, 3:4, 16:9, 9:16, 3:2, 2:3 (21:9, 5:4 and 4:5 exist only "
            "for generation)."
        ),
    ),
]
OutputFormatField = Annotated[
    OutputFormat,
    Field(description="File format of the output images: png (default), jpeg or webp."),
]
SyncMode = Annotated[
    bool,
    Field(
        description=(
            "If true the gateway answers inline with the images as base64 data URIs instead "
            "of a job to poll. Large; leave false unless you need the bytes immediately."
        ),
    ),
]


class _RequestModel(BaseModel):
    # Strict: the gateway takes JSON types as they are ("sync_mode": 0 is not false).
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, defer_build=True)


class GenerateRequest(_RequestModel):
    """Body of a text-to-image request (`POST .../microsoft-mai-image-2-5-request`)."""

    prompt: Prompt
    num_images: NumImages = 1
    aspect_ratio: GenerateAspectRatioField = "auto"
    output_format: OutputFormatField = "png"
    sync_mode: SyncMode = False


class EditRequest(_RequestModel):
    """Body of an image-edit request (`POST .../microsoft-mai-image-2-5-edit-request`).

    `image_urls` holds exactly one http(s) URL or `data:` URI. The clients build it from a
    path, bytes or URL with :func:`mai_tools.image_to_url`.
    """

    prompt: EditPrompt
    image_urls: Annotated[
        list[str],
        Field(
            min_length=1,
            max_length=1,
            description=(
                "Exactly one source image, as an http(s) URL or a data: URI "
                "(data:image/png;base64,...)."
            ),
        ),
    ]
    num_images: NumImages = 1
    aspect_ratio: EditAspectRatioField = "auto"
    output_format: OutputFormatField = "png"
    sync_mode: SyncMode = False

    @field_validator("image_urls")
    @classmethod
    def _check_scheme(cls, urls: list[str]) -> list[str]:
        for url in urls:
            lowered = url[:8].lower()
            if not lowered.startswith(("http://", "https://", "data:")):
                raise ValueError(
                    "image_urls entries must be http(s) URLs or data: URIs; "
                    f"got one starting with {url[:16]!r}"
                )
        return urls


class Status(enum.StrEnum):
    """Job states reported by the gateway.

    `UNKNOWN` stands for any status string this library does not know yet; it is treated as
    "not finished" and the raw string is kept in :attr:`JobStatus.raw_status`.
    """

    QUEUED = "QUEUED"
    PROCESSING = "PROCESSING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    ERROR = "ERROR"
    UNKNOWN = "UNKNOWN"

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

    @field_validator("status", mode="before")
    @classmethod
    def _status(cls, value: object) -> Status:
        return parse_status(value)


class JobOutput(_ResponseModel):
    """The `output` object of a finished job."""

    media_url: list[str] = Field(default_factory=list)
    media_type: str | None = None

    @field_validator("media_url", mode="before")
    @classmethod
    def _one_or_many(cls, value: object) -> object:
        if isinstance(value, str):
            return [value]
        return [] if value is None else value


class JobStatus(_ResponseModel):
    """One read of the status endpoint (`GET /v2/requests/status/{request_id}`)."""

    request_id: str
    status: Status
    raw_status: str | None = Field(default=None, description="The status string as sent.")
    model_id: str | None = None
    error: str | None = None
    output: JobOutput | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    completed_at: datetime | None = None
    polling_url: str | None = None

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
    def server_seconds(self) -> float | None:
        """How long the gateway says the job took (``completed_at - created_at``), if known."""
        if self.created_at is None or self.completed_at is None:
            return None
        return (self.completed_at - self.created_at).total_seconds()


def short_url(url: str) -> str:
    """``url``, or for a ``data:`` URI its header and length: never a flood of base64."""
    if url.startswith("data:"):
        head = url.split(",", 1)[0]
        return f"{head},...<{len(url)} chars>"
    return url


class ImageResult(BaseModel):
    """A finished generation or edit.

    `image_urls` are http(s) URLs, or `data:` URIs in sync mode. Use :meth:`save` (or
    :meth:`asave`) to download them to files named after the request id. The repr shortens
    data URIs so a result never floods a log or an agent's context with base64.
    """

    model_config = ConfigDict(frozen=True, extra="ignore", defer_build=True)

    request_id: str
    status: Status = Status.COMPLETED
    image_urls: list[str]
    media_type: str | None = None
    model_id: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    completed_at: datetime | None = None

    # How save()/asave() download: the client's pool and limits. Not data: dropped on pickle
    # and deep copy, ignored by ==, so a result stays equal to its own JSON round trip.
    _saver: Saver | None = PrivateAttr(default=None)

    def with_saver(self, saver: Saver) -> ImageResult:
        """This result, saving through ``saver`` (what a client attaches to its results)."""
        self._saver = saver
        return self

    def _saving(self) -> Saver:
        if self._saver is not None:
            return self._saver
        from ._download import Saver  # the client stack loads on first use, not with the models

        return Saver()

    def save(
        self,
        directory: str | os.PathLike[str],
        *,
        http_client: httpx.Client | None = None,
        max_bytes: int | None = None,
        timeout: float | None = None,
    ) -> list[Path]:
        """Download every image into ``directory`` and return the file paths.

        Files are named ``<request_id>_<n>.<ext>`` (the extension from the image bytes),
        streamed to a temporary file and renamed into place, refused when they are not an
        image or exceed ``max_bytes`` (default: the client's ``max_download_bytes``).
        ``data:`` URIs (sync mode) are decoded. The API key is never sent with a download.
        Rate limits (429, ``Retry-After`` honoured), 5xx answers and dropped connections are
        retried with backoff; ``timeout`` (seconds, default 300) bounds the whole save.

        Raises:
            DownloadError: a download failed, was too large, was not an image, did not finish
                within ``timeout``, or its URL is malformed.
            InvalidArgumentError: ``timeout`` is not a positive number.
        """
        return self._saving().save(
            self.request_id,
            self.image_urls,
            directory,
            http_client=http_client,
            max_bytes=max_bytes,
            timeout=timeout,
        )

    async def asave(
        self,
        directory: str | os.PathLike[str],
        *,
        http_client: httpx.AsyncClient | None = None,
        max_bytes: int | None = None,
        timeout: float | None = None,
    ) -> list[Path]:
        """Async twin of :meth:`save`; the images download concurrently."""
        return await self._saving().asave(
            self.request_id,
            self.image_urls,
            directory,
            http_client=http_client,
            max_bytes=max_bytes,
            timeout=timeout,
        )

    def __repr_args__(self) -> Any:
        for name, value in super().__repr_args__():
            if name == "image_urls" and isinstance(value, list):
                yield name, [short_url(str(u)) for u in value]
            else:
                yield name, value

    @classmethod
    def from_status(cls, status: JobStatus) -> ImageResult:
        return cls(
            request_id=status.request_id,
            status=status.status,
            image_urls=status.image_urls,
            media_type=status.output.media_type if status.output else None,
            model_id=status.model_id,
            created_at=status.created_at,
            updated_at=status.updated_at,
            completed_at=status.completed_at,
        )

    @property
    def has_data_uris(self) -> bool:
        """True when the images are inline `data:` URIs (sync mode)."""
        return any(u.startswith("data:") for u in self.image_urls)

    def summary(self) -> dict[str, Any]:
        """A JSON-ready dict safe to show an agent: data URIs are shortened."""
        data = self.model_dump(mode="json")
        data["image_urls"] = [short_url(u) for u in self.image_urls]
        return data
