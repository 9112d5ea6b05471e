"""The tools' arguments as models: checked by the server itself, before anything is sent.

The SDK would check them too, but answer with pydantic's raw text (and a link to
errors.pydantic.dev). Validating here first gives the one wording LangChain uses too
(``mai_tools._agent.validation_text``: each field, its problem, nothing sent), and lets a
task be refused exactly like a call. The job tools' models are the specs' own
(``mai_tools._tools.TOOLS``); the registered tools' parameters are generated from them.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, Field

from mai_tools._tools import TOOLS
from mai_tools._tools import EditImageArgs as EditArguments
from mai_tools._tools import GenerateImageArgs as GenerateArguments
from mai_tools._tools import ImageJobArgs as GetJobArguments

LimitField = Annotated[
    int, Field(ge=1, le=50, description="How many of the newest jobs to list (1-50).")
]


class ListJobsArguments(BaseModel):
    limit: LimitField = 10


ARGUMENTS: dict[str, type[BaseModel]] = {
    **{spec.name: spec.arguments for spec in TOOLS},
    "list_recent_jobs": ListJobsArguments,
}
"""Each tool's argument model, by tool name."""

__all__ = [
    "ARGUMENTS",
    "EditArguments",
    "GenerateArguments",
    "GetJobArguments",
    "LimitField",
    "ListJobsArguments",
]
