"""The agent tools, described once: every front end that offers them is a table over this.

:data:`TOOLS` says, for each tool, its name, title, description (written for a model), its
argument model, and which operation it starts (and so whether a call creates a paid job). The
argument models *are* the request field models (:class:`~mai_tools._models.GenerateFields`,
:class:`~mai_tools._models.EditFields`) plus what only a tool takes (``image``: the edit source
as one string). :func:`job_request` turns validated arguments into the request the client runs.

The LangChain tools (``mai_tools.langchain``) and the MCP server (``mcp_server``) are generated
from these specs; ``tests/architecture/test_field_agreement.py`` checks that every face (the
tools, the CLI, the batch line, the emulator's OpenAPI document) has the same fields.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Annotated, Final

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

from ._agent import RESUME_TOOL
from ._constants import DEFAULT_MAX_INPUT_BYTES, MAX_VIEW_SIZE, MIN_VIEW_SIZE, VIEW_SIZE
from ._exceptions import InvalidArgumentError
from ._images import agent_image_argument, image_to_url
from ._models import OPERATIONS, EditFields, GenerateFields, JobRequest, _whole_number

# --------------------------------------------------------------------------- argument models

ImageArgument = Annotated[
    str,
    Field(
        min_length=1,
        description=(
            "The image to edit: an http(s) URL (for example one generate_image returned) or a "
            "data: URI. Local file paths work only inside directories the operator of these "
            "tools allowed (none by default)."
        ),
    ),
]
RequestIdArgument = Annotated[
    str,
    Field(
        min_length=1,
        max_length=256,
        description="The request_id returned by generate_image or edit_image.",
    ),
]


class GenerateImageArgs(GenerateFields):
    """Arguments of ``generate_image``: the fields of a generation request."""


class EditImageArgs(EditFields):
    """Arguments of ``edit_image``: the fields of an edit request, with the source image as
    one string (``image``) instead of the request's ``image_urls``."""

    image: ImageArgument


class ImageJobArgs(BaseModel):
    """Arguments of ``get_image_job``."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    request_id: RequestIdArgument


class ViewImageArgs(BaseModel):
    """Arguments of ``view_image``: which image (a request id and index, or a URL a job of
    yours returned) and how large a preview."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, str_strip_whitespace=True)

    request_id: Annotated[
        str | None,
        Field(
            min_length=1,
            max_length=256,
            description="The request_id generate_image or edit_image returned.",
        ),
    ] = None
    index: Annotated[
        int,
        Field(
            ge=1,
            le=16,
            description="Which image of that job, counting from 1 (default 1).",
        ),
        BeforeValidator(_whole_number),
    ] = 1
    url: Annotated[
        str | None,
        Field(
            min_length=1,
            max_length=8192,
            description="Instead of request_id and index: an image URL one of your jobs "
            "returned (other URLs are refused).",
        ),
    ] = None
    size: Annotated[
        int,
        Field(
            ge=MIN_VIEW_SIZE,
            le=MAX_VIEW_SIZE,
            description=f"Longest side of the preview in pixels ({MIN_VIEW_SIZE}-"
            f"{MAX_VIEW_SIZE}, default {VIEW_SIZE}). Larger costs more context.",
        ),
        BeforeValidator(_whole_number),
    ] = VIEW_SIZE

    @model_validator(mode="after")
    def _names_an_image(self) -> ViewImageArgs:
        if self.request_id is None and self.url is None:
            raise PydanticCustomError("view_target", "give request_id (and index), or url")
        return self


JobArguments = GenerateImageArgs | EditImageArgs
"""Arguments of a tool that starts a job."""

TOOL_ONLY_FIELDS: Final[Mapping[str, str]] = MappingProxyType({"image": "image_urls"})
"""Tool arguments that are not request fields, and the request field each one becomes."""

NOT_EXPOSED_TO_MODELS: Final[Mapping[str, str]] = MappingProxyType(
    {
        "sync_mode": "inline base64 images would flood a model's context; the tools answer "
        "with URLs",
    }
)
"""Request fields the agent tools leave out on purpose, each with the reason. A request field
must be a tool argument, or named here (``tests/architecture/test_field_agreement.py``)."""


# --------------------------------------------------------------------------- the specs


@dataclass(frozen=True)
class ToolSpec:
    """One agent tool, as every front end offers it."""

    name: str
    title: str
    description: str
    """For the model: what the tool does, what it answers, and what to call next."""
    arguments: type[BaseModel]
    operation: str | None
    """The :data:`~mai_tools._models.OPERATIONS` entry a call starts; None for a tool that
    only reads a job."""

    @property
    def creates_job(self) -> bool:
        """Does a call start a new (paid) job? Such a tool is neither read-only nor idempotent."""
        return self.operation is not None


GENERATE_TOOL: Final = ToolSpec(
    name="generate_image",
    title="Generate image",
    description=(
        "Create new images from a text prompt with Microsoft MAI Image 2.5. Answers with the "
        f"image URLs (one per line) and a request_id. Takes several seconds. If the answer says "
        f"the job is still running, call {RESUME_TOOL} with its request_id: calling "
        "generate_image again starts (and pays for) a second job. To change an image you made, "
        "pass its URL to edit_image."
    ),
    arguments=GenerateImageArgs,
    operation="generate",
)
EDIT_TOOL: Final = ToolSpec(
    name="edit_image",
    title="Edit image",
    description=(
        "Change an existing image following an instruction (lighting, style, background, add "
        "or remove things) with Microsoft MAI Image 2.5. Pass the image as an http(s) URL (for "
        "example one generate_image returned) or a data: URI. Answers with the new image URLs "
        f"(one per line) and a request_id; if the job is still running, call {RESUME_TOOL}."
    ),
    arguments=EditImageArgs,
    operation="edit",
)
JOB_TOOL: Final = ToolSpec(
    name=RESUME_TOOL,
    title="Get image job",
    description=(
        "Wait for an image job started earlier by generate_image or edit_image and return its "
        "image URLs (one per line), by the request_id they gave. Use it whenever an answer said "
        "the job is still running. Starts nothing and costs nothing: safe to call again."
    ),
    arguments=ImageJobArgs,
    operation=None,
)

VIEW_TOOL: Final = ToolSpec(
    name="view_image",
    title="View image",
    description=(
        "Look at an image you made: returns one small preview (JPEG, at most `size` px a "
        "side, 384 by default) of image `index` of a job, by its request_id (or by an image "
        "URL your job returned). Use it to check a result before editing it or answering. "
        f"Starts nothing and costs nothing. If the job is still running, call {RESUME_TOOL} "
        "first."
    ),
    arguments=ViewImageArgs,
    operation=None,
)

TOOLS: Final[tuple[ToolSpec, ...]] = (GENERATE_TOOL, EDIT_TOOL, JOB_TOOL, VIEW_TOOL)
"""Every agent tool, in the order the front ends list them."""

TOOL_SPECS: Final[Mapping[str, ToolSpec]] = MappingProxyType({t.name: t for t in TOOLS})
"""The same, by name."""


def job_request(
    spec: ToolSpec,
    arguments: BaseModel,
    *,
    allowed_dirs: Sequence[str | os.PathLike[str]] = (),
    max_image_bytes: int = DEFAULT_MAX_INPUT_BYTES,
) -> JobRequest:
    """The request a job tool's validated ``arguments`` ask for.

    The edit tool's ``image`` (a URL, a data URI, or a file inside ``allowed_dirs``, read here
    once) becomes the request's ``image_urls``. Reading a file blocks: async callers run this in
    a worker thread.

    Raises:
        InvalidImageError: the image is refused (a path outside ``allowed_dirs``, not an image,
            too large, another URL scheme); nothing was sent.
        InvalidArgumentError: ``spec`` starts no job.
    """
    if spec.operation is None:
        raise InvalidArgumentError(f"{spec.name} starts no job: it has no request.")
    request_class = OPERATIONS[spec.operation]
    fields = arguments.model_dump(exclude=set(TOOL_ONLY_FIELDS))
    image = getattr(arguments, "image", None)
    if image is not None:
        source = agent_image_argument(image, allowed_dirs)
        fields[TOOL_ONLY_FIELDS["image"]] = [image_to_url(source, max_bytes=max_image_bytes)]
    return request_class.model_validate(fields)


def call_digest(spec: ToolSpec, arguments: BaseModel) -> str:
    """A digest of one exact call: the tool's name and its validated arguments.

    Two calls get the same digest only if they ask for the same thing (a generate never
    matches an edit); the job book adopts an undelivered job by it (``JobScope.twin_key``).
    """
    canonical = json.dumps(
        [spec.name, arguments.model_dump(mode="json")],
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


__all__ = [
    "EDIT_TOOL",
    "GENERATE_TOOL",
    "JOB_TOOL",
    "NOT_EXPOSED_TO_MODELS",
    "TOOLS",
    "TOOL_ONLY_FIELDS",
    "TOOL_SPECS",
    "VIEW_TOOL",
    "EditImageArgs",
    "GenerateImageArgs",
    "ImageJobArgs",
    "JobArguments",
    "ToolSpec",
    "ViewImageArgs",
    "call_digest",
    "job_request",
]
