"""The tools' arguments as models: checked by the server itself, before anything is sent.

The SDK would check them too, but answer with pydantic's raw text (and a link to
errors.pydantic.dev). Validating here first gives the one wording LangChain uses too
(``mai_tools._agent.validation_text``: each field, its problem, nothing sent), and lets a
task be refused exactly like a call. The fields are the tools' parameters (a test checks that
the schemas agree).
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, Field

from mai_tools._models import (
    EditAspectRatioField,
    EditPrompt,
    GenerateAspectRatioField,
    NumImages,
    OutputFormatField,
    Prompt,
)

ImageField = Annotated[
    str,
    Field(
        min_length=1,
        description=(
            "The image to edit: an http(s) URL (for example from generate_image) or a data: "
            "URI. Local paths work only inside directories the user allowed in the server "
            "configuration (MAI_MCP_ALLOWED_DIRS)."
        ),
    ),
]
RequestIdField = Annotated[
    str,
    Field(
        min_length=1,
        max_length=256,
        description="The request_id a tool returned (generate_image, edit_image).",
    ),
]
LimitField = Annotated[
    int, Field(ge=1, le=50, description="How many of the newest jobs to list (1-50).")
]


class GenerateArguments(BaseModel):
    prompt: Prompt
    num_images: NumImages = 1
    aspect_ratio: GenerateAspectRatioField = "auto"
    output_format: OutputFormatField = "png"


class EditArguments(BaseModel):
    prompt: EditPrompt
    image: ImageField
    num_images: NumImages = 1
    aspect_ratio: EditAspectRatioField = "auto"
    output_format: OutputFormatField = "png"


class GetJobArguments(BaseModel):
    request_id: RequestIdField


class ListJobsArguments(BaseModel):
    limit: LimitField = 10


ARGUMENTS: dict[str, type[BaseModel]] = {
    "generate_image": GenerateArguments,
    "edit_image": EditArguments,
    "get_image_job": GetJobArguments,
    "list_recent_jobs": ListJobsArguments,
}
"""Each tool's argument model, by tool name."""
