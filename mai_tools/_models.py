"""Requests and results: the one description of a job, and what a finished job gives back.

A job is one request object: :class:`GenerateRequest` or :class:`EditRequest`, built by keyword,
validated when built (so bad input fails here, before anything is sent or paid for) and carrying
its operation, submit path and model id as class data. :data:`OPERATIONS` is the registry of
operations every layer reads (the client's submit URL, :func:`operation_of` a request id, the
emulator's routes, the CLI, the tools); a new operation is one more request class in it.

The request classes are built from field models (:class:`GenerateFields`, :class:`EditFields`:
what a caller chooses) whose descriptions are written for an LLM reader: the LangChain tools,
the MCP server and the batch line model are those same fields. :class:`ImageResult` is plain
data: saving it is the client's job (``client.save(result, directory)``).
"""

from __future__ import annotations

import json
import logging
import os
import re
import warnings
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Final, Literal, get_args

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
)

from ._constants import (
    EDIT_MODEL_ID,
    EDIT_PATH,
    GENERATE_MODEL_ID,
    GENERATE_PATH,
    MAX_IMAGES,
    PROMPT_MAX_LENGTH,
    PROMPT_MIN_LENGTH,
)
from ._exceptions import InvalidArgumentError
from ._status import Job, JobOutput, JobStatus, Status, parse_status

if TYPE_CHECKING:
    import httpx

logger = logging.getLogger("mai_tools")


GenerateAspectRatio = Literal[
    "auto", "21:9", "16:9", "3:2", "4:3", "5:4", "1:1", "4:5", "3:4", "2:3", "9:16"
]
"""The aspect ratios a generate job accepts (``auto``: the model decides, square)."""
EditAspectRatio = Literal["auto", "1:1", "4:3", "3:4", "16:9", "9:16", "3:2", "2:3"]
"""The aspect ratios an edit job accepts (``auto``: the source image's proportions)."""
OutputFormat = Literal["png", "jpeg", "webp"]
"""The image formats the gateway can return."""

GENERATE_ASPECT_RATIOS: Final[tuple[str, ...]] = get_args(GenerateAspectRatio)
""":data:`GenerateAspectRatio`'s values, as a tuple (for a CLI choice or a form)."""
EDIT_ASPECT_RATIOS: Final[tuple[str, ...]] = get_args(EditAspectRatio)
""":data:`EditAspectRatio`'s values, as a tuple."""
OUTPUT_FORMATS: Final[tuple[str, ...]] = get_args(OutputFormat)
""":data:`OutputFormat`'s values, as a tuple."""


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


ImageURLs = Annotated[
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


class GenerateFields(_RequestModel):
    """What a caller chooses for a text-to-image job (the tools' and batch lines' fields)."""

    prompt: Prompt
    num_images: NumImages = 1
    aspect_ratio: GenerateAspectRatioField = "auto"
    output_format: OutputFormatField = "png"


class EditFields(_RequestModel):
    """What a caller chooses for an edit, besides the source image (given as a path, bytes or
    URL to the tools and the client's ``edit``, as ``image_urls`` in :class:`EditRequest`)."""

    prompt: EditPrompt
    num_images: NumImages = 1
    aspect_ratio: EditAspectRatioField = "auto"
    output_format: OutputFormatField = "png"


class GenerateRequest(GenerateFields):
    """A text-to-image job: ``GenerateRequest(prompt="...", num_images=2)``.

    Its body is sent to ``POST {base_url}{path}``; ``client.run(request)`` submits and waits.
    """

    operation: ClassVar[str] = "generate"
    """The operation's name in :data:`OPERATIONS` (and in tools, the CLI, the job log)."""
    title: ClassVar[str] = "Text to image"
    """What the operation does, in a few words (documents and listings)."""
    path: ClassVar[str] = GENERATE_PATH
    """The gateway path the request is POSTed to."""
    model_id: ClassVar[str] = GENERATE_MODEL_ID
    """The gateway's model id; request ids of this operation start with it."""

    sync_mode: SyncMode = False


class EditRequest(EditFields):
    """An image-edit job: ``EditRequest(prompt="...", image_urls=["https://..."])``.

    `image_urls` holds exactly one http(s) URL or `data:` URI. The clients' ``edit`` builds it
    from a path, bytes or URL with :func:`mai_tools.image_to_url`.
    """

    operation: ClassVar[str] = "edit"
    title: ClassVar[str] = "Image editing"
    path: ClassVar[str] = EDIT_PATH
    model_id: ClassVar[str] = EDIT_MODEL_ID

    image_urls: ImageURLs
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

    def __repr_args__(self) -> Any:
        return _shortened(super().__repr_args__())


JobRequest = GenerateRequest | EditRequest
"""Any request the gateway takes."""

OPERATIONS: Final[Mapping[str, type[JobRequest]]] = MappingProxyType(
    {cls.operation: cls for cls in (GenerateRequest, EditRequest)}
)
"""Every operation, by name: its request class carries the path and model id."""

FIELDS_OF: Final[Mapping[str, type[_RequestModel]]] = MappingProxyType(
    {"generate": GenerateFields, "edit": EditFields}
)
"""What a caller chooses for each operation (the faces' argument fields), by name."""


def operation_of(request_id: str) -> str | None:
    """Which operation a request id belongs to, from its model id prefix (None if foreign)."""
    # Longest model id first: the edit model's id starts with the generation model's.
    for cls in sorted(OPERATIONS.values(), key=lambda c: len(c.model_id), reverse=True):
        if request_id.startswith(cls.model_id + "_"):
            return cls.operation
    return None


def request_body(
    request: JobRequest, extra_body: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The JSON body of ``request``, with ``extra_body``'s fields added (unchecked).

    ``extra_body`` is for a gateway field this version does not know yet; a field the request
    already has is refused (set it on the request instead), so nothing is silently overridden.
    """
    body = request.model_dump(mode="json")
    if not extra_body:
        return body
    if not isinstance(extra_body, Mapping) or not all(isinstance(k, str) for k in extra_body):
        raise InvalidArgumentError(
            "extra_body must be a mapping of gateway field names (strings) to JSON values."
        )
    clash = sorted(set(extra_body) & set(type(request).model_fields))
    if clash:
        raise InvalidArgumentError(
            f"extra_body repeats {', '.join(clash)}: set "
            f"{'it' if len(clash) == 1 else 'them'} on the {type(request).__name__} instead "
            "(extra_body is only for gateway fields this version does not know)."
        )
    try:
        json.dumps(dict(extra_body), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidArgumentError(f"extra_body must hold JSON values only: {exc}") from None
    return {**body, **extra_body}


def _shortened(args: Any) -> Any:
    """A model's repr arguments with ``image_urls`` shortened (no base64 in a repr)."""
    for name, value in args:
        if name == "image_urls" and isinstance(value, list):
            yield name, [short_url(str(u)) for u in value]
        else:
            yield name, value


def short_url(url: str) -> str:
    """``url``, or for a ``data:`` URI its header and length: never a flood of base64."""
    if url.startswith("data:"):
        head = url.split(",", 1)[0]
        return f"{head},...<{len(url)} chars>"
    return url


class ImageResult(BaseModel):
    """A finished generation or edit: plain data, no I/O.

    `image_urls` are http(s) URLs, or `data:` URIs in sync mode. `request` is the request this
    result answers, when the client that ran it knows it (``wait`` on a job submitted elsewhere
    does not). Save the images with ``client.save(result, directory)``. The repr and
    :meth:`summary` shorten data URIs, so a result never floods a log or an agent's context
    with base64.
    """

    model_config = ConfigDict(frozen=True, extra="ignore", defer_build=True)

    request_id: str
    """The gateway's id for the job."""
    status: Status = Status.COMPLETED
    """COMPLETED: a job that ended FAILED or ERROR raises
    :class:`~mai_tools.JobFailedError` instead."""
    image_urls: list[str]
    """The images: http(s) URLs, or ``data:`` URIs in sync mode."""
    media_type: str | None = None
    """Their MIME type, e.g. ``image/png``, when the gateway says."""
    model_id: str | None = None
    """The model that ran the job, as the gateway names it."""
    created_at: datetime | None = None
    """When the job was accepted."""
    updated_at: datetime | None = None
    """When its status last changed."""
    completed_at: datetime | None = None
    """When it ended."""
    request: GenerateRequest | EditRequest | None = None
    """The request this result answers, when the client that ran it knows it."""
    unavailable: list[str] = Field(default_factory=list)
    """Why some of the job's images cannot be fetched (the gateway sent an empty URL for
    them); they are not in ``image_urls``, and ``client.save`` reports them as a
    :class:`DownloadError` after saving the others."""

    def with_saver(self, saver: object) -> ImageResult:
        """Deprecated, does nothing: a result no longer carries a client's saver."""
        warnings.warn(
            _SAVE_MOVED.format(call="client.save(result, directory)"),
            DeprecationWarning,
            stacklevel=2,
        )
        return self

    def save(
        self,
        directory: str | os.PathLike[str],
        *,
        http_client: httpx.Client | None = None,
        max_bytes: int | None = None,
        timeout: float | None = None,
    ) -> list[Path]:
        """Deprecated: use ``client.save(result, directory)``.

        Downloads with default limits (not the client's pool or ``max_download_bytes``).
        """
        from ._download import Saver  # a lower layer: loaded only by this shim

        warnings.warn(
            _SAVE_MOVED.format(call="client.save(result, directory)"),
            DeprecationWarning,
            stacklevel=2,
        )
        return Saver(http=http_client).save(
            self.request_id, self.image_urls, directory, max_bytes=max_bytes, timeout=timeout
        )

    async def asave(
        self,
        directory: str | os.PathLike[str],
        *,
        http_client: httpx.AsyncClient | None = None,
        max_bytes: int | None = None,
        timeout: float | None = None,
    ) -> list[Path]:
        """Deprecated: use ``await client.save(result, directory)`` (the async client)."""
        from ._download import Saver

        warnings.warn(
            _SAVE_MOVED.format(call="await client.save(result, directory)"),
            DeprecationWarning,
            stacklevel=2,
        )
        return await Saver().asave(
            self.request_id,
            self.image_urls,
            directory,
            http_client=http_client,
            max_bytes=max_bytes,
            timeout=timeout,
        )

    def __repr_args__(self) -> Any:
        return _shortened(super().__repr_args__())

    @classmethod
    def from_status(cls, status: JobStatus, request: JobRequest | None = None) -> ImageResult:
        return cls(
            request_id=status.request_id,
            status=status.status,
            image_urls=status.image_urls,
            media_type=status.output.media_type if status.output else None,
            model_id=status.model_id,
            created_at=status.created_at,
            updated_at=status.updated_at,
            completed_at=status.completed_at,
            request=request,
            unavailable=status.unavailable,
        )

    @property
    def has_data_uris(self) -> bool:
        """True when the images are inline `data:` URIs (sync mode)."""
        return any(u.startswith("data:") for u in self.image_urls)

    @property
    def prompt(self) -> str | None:
        """The prompt of the request this result answers, when known."""
        return None if self.request is None else self.request.prompt

    def summary(self) -> dict[str, Any]:
        """A JSON-ready dict safe to show an agent: data URIs are shortened."""
        data = self.model_dump(mode="json", exclude={"request"})
        data["image_urls"] = [short_url(u) for u in self.image_urls]
        return data


_SAVE_MOVED: Final = (
    "ImageResult.save()/asave() are deprecated and will be removed in the next release: use "
    "{call}, which downloads with the client's connections and limits."
)

__all__ = [
    "EDIT_ASPECT_RATIOS",
    "GENERATE_ASPECT_RATIOS",
    "OPERATIONS",
    "OUTPUT_FORMATS",
    "EditFields",
    "EditRequest",
    "GenerateFields",
    "GenerateRequest",
    "ImageResult",
    "Job",
    "JobOutput",
    "JobRequest",
    "JobStatus",
    "Status",
    "operation_of",
    "parse_status",
    "request_body",
    "short_url",
]
