"""LangChain tools for MAI Image 2.5: ``generate_image``, ``edit_image``, ``get_image_job``.

Each tool answers with a short plain-text message for the model (image URLs first, one per
line, then the request id and any saved paths; never base64) and the full result as the
artifact. Errors the model can fix come back as ``status="error"`` tool messages; errors only
the application can fix (no key, a wrong key, no balance, no permission) raise.

    from mai_tools import MAIImageToolkit
    tools = MAIImageToolkit().get_tools()   # reads PIXAZO_API_KEY / PIXAZO_BASE_URL at call time
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, ClassVar, Literal

import pydantic
from langchain_core.callbacks import (
    AsyncCallbackManagerForToolRun,
    CallbackManagerForToolRun,
)
from langchain_core.callbacks.manager import adispatch_custom_event, dispatch_custom_event
from langchain_core.tools import BaseTool, BaseToolkit, ToolException
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, SecretStr
from pydantic.v1 import ValidationError as V1ValidationError

from ._agent import (
    Failed,
    ImageJobResult,
    Outcome,
    answer_text,
    arun,
    outcome_of,
    run,
    structured,
    validation_text,
)
from ._async_client import AsyncMAIImageClient
from ._client import MAIImageClient
from ._exceptions import MAIImageError
from ._images import AllowedDirs
from ._models import ImageResult, JobRequest, JobStatus
from ._policies import DurationStats
from ._tools import (
    EDIT_TOOL,
    GENERATE_TOOL,
    JOB_TOOL,
    EditImageArgs,
    GenerateImageArgs,
    ImageJobArgs,
    ToolSpec,
    job_request,
)

logger = logging.getLogger("mai_tools")

STATUS_EVENT = "mai_image_status"
"""Name of the LangChain custom event dispatched on every job status change."""

# --------------------------------------------------------------------------- shared behaviour


def _validation_message(error: pydantic.ValidationError | V1ValidationError) -> str:
    if not isinstance(error, pydantic.ValidationError):  # pydantic v1 models: keep its text
        return f"Invalid arguments, nothing was sent. Fix and call again: {error}"
    return validation_text(error)


def _answer(outcome: Outcome) -> tuple[str, ImageJobResult]:
    """The tool's (content, artifact); errors only the operator can fix raise, the rest become
    ``status="error"`` tool messages the model can act on."""
    if isinstance(outcome, Failed):
        if outcome.who == "operator":
            raise outcome.error
        raise ToolException(outcome.message) from outcome.error
    # The artifact stays with the application: inline data URIs are kept whole there.
    return answer_text(outcome), structured(outcome, full_urls=True)


def _status_payload(tool: str, status: JobStatus, elapsed: float) -> dict[str, Any]:
    return {
        "tool": tool,
        "request_id": status.request_id,
        "status": status.status.value,
        "elapsed": round(elapsed, 2),
    }


def _write_to_graph_stream(payload: dict[str, Any]) -> None:
    try:
        from langgraph.config import get_stream_writer
    except ImportError:  # langgraph is optional
        return
    try:
        writer = get_stream_writer()
    except (RuntimeError, KeyError):  # not inside a graph
        return
    writer({STATUS_EVENT: payload})


class _MAIImageTool(BaseTool):
    """Configuration and client handling shared by the three tools."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    response_format: Literal["content", "content_and_artifact"] = "content_and_artifact"
    handle_tool_error: bool | str | Callable[[ToolException], str] | None = True
    handle_validation_error: (
        bool | str | Callable[[pydantic.ValidationError | V1ValidationError], str] | None
    ) = _validation_message

    api_key: SecretStr | None = Field(default=None, exclude=True, repr=False)
    """Pixazo key; default ``$PIXAZO_API_KEY`` (read when the tool is first used)."""
    base_url: str | None = None
    """Gateway origin; default ``$PIXAZO_BASE_URL`` or the real gateway."""
    wait_timeout: float = Field(default=120.0, gt=0)
    """Longest wait inside one tool call; after it the model is told to call get_image_job."""
    output_dir: Path | None = None
    """If set, images are downloaded here and their paths returned."""
    allowed_dirs: AllowedDirs = ()
    """Directories edit_image may read local files from (none by default)."""
    client: MAIImageClient | None = Field(default=None, exclude=True, repr=False)
    """A sync client to use instead of building one."""
    async_client: AsyncMAIImageClient | None = Field(default=None, exclude=True, repr=False)
    """An async client to use (only from the event loop it was created in)."""

    _durations: DurationStats = PrivateAttr(default_factory=DurationStats)

    def _client_kwargs(self) -> dict[str, Any]:
        return {
            "api_key": self.api_key.get_secret_value() if self.api_key is not None else None,
            "base_url": self.base_url,
            "wait_timeout": self.wait_timeout,
            # Clients are short-lived; the job durations they learn are kept across calls, so
            # polling stays adaptive.
            "durations": self._durations,
        }

    def _on_status(self) -> Callable[[JobStatus, float], None]:
        def report(status: JobStatus, elapsed: float) -> None:
            payload = _status_payload(self.name, status, elapsed)
            try:
                dispatch_custom_event(STATUS_EVENT, payload)
            except RuntimeError:  # called outside a runnable context
                logger.debug("no LangChain run context for %s", STATUS_EVENT)
            _write_to_graph_stream(payload)

        return report

    def _aon_status(self) -> Callable[[JobStatus, float], Awaitable[None]]:
        async def report(status: JobStatus, elapsed: float) -> None:
            payload = _status_payload(self.name, status, elapsed)
            try:
                await adispatch_custom_event(STATUS_EVENT, payload)
            except RuntimeError:
                logger.debug("no LangChain run context for %s", STATUS_EVENT)
            _write_to_graph_stream(payload)

        return report

    def _finish(self, call: Callable[[MAIImageClient], ImageResult]) -> tuple[str, ImageJobResult]:
        given = self.client
        if given is not None:
            return _answer(run(given, call, save_to=self.output_dir, budget=self.wait_timeout))
        try:
            client = MAIImageClient(**self._client_kwargs())
        except MAIImageError as exc:
            return _answer(outcome_of(exc))
        # A short-lived client per call leaves no pool behind.
        with client:
            return _answer(run(client, call, save_to=self.output_dir, budget=self.wait_timeout))

    async def _afinish(
        self, call: Callable[[AsyncMAIImageClient], Awaitable[ImageResult]]
    ) -> tuple[str, ImageJobResult]:
        given = self.async_client
        if given is not None:
            return _answer(
                await arun(given, call, save_to=self.output_dir, budget=self.wait_timeout)
            )
        try:
            # One per call: an httpx.AsyncClient must never outlive or cross event loops.
            client = AsyncMAIImageClient(**self._client_kwargs())
        except MAIImageError as exc:
            return _answer(outcome_of(exc))
        async with client:
            return _answer(
                await arun(client, call, save_to=self.output_dir, budget=self.wait_timeout)
            )

    def _request(self, spec: ToolSpec, arguments: dict[str, Any], max_bytes: int) -> JobRequest:
        """The request of a job tool's (already validated) arguments; a local ``image`` is
        read only inside ``allowed_dirs``."""
        return job_request(
            spec,
            spec.arguments.model_validate(arguments),
            allowed_dirs=self.allowed_dirs,
            max_image_bytes=max_bytes,
        )


class _JobStartTool(_MAIImageTool):
    """A tool that starts a job: its name, description and arguments come from its
    :class:`~mai_tools._tools.ToolSpec`, and a call runs the spec's request."""

    spec: ClassVar[ToolSpec]

    def _run(
        self, run_manager: CallbackManagerForToolRun | None = None, **arguments: Any
    ) -> tuple[str, ImageJobResult]:
        return self._finish(
            lambda client: client.run(
                self._request(self.spec, arguments, client.options.max_input_image_bytes),
                timeout=self.wait_timeout,
                on_status=self._on_status(),
            )
        )

    async def _arun(
        self, run_manager: AsyncCallbackManagerForToolRun | None = None, **arguments: Any
    ) -> tuple[str, ImageJobResult]:
        on_status = self._aon_status()

        async def call(client: AsyncMAIImageClient) -> ImageResult:
            # A local image is read off the event loop.
            request = await asyncio.to_thread(
                self._request, self.spec, arguments, client.options.max_input_image_bytes
            )
            return await client.run(request, timeout=self.wait_timeout, on_status=on_status)

        return await self._afinish(call)


class MAIImageGenerateTool(_JobStartTool):
    """``generate_image``: text to image with MAI Image 2.5."""

    spec: ClassVar[ToolSpec] = GENERATE_TOOL
    name: str = GENERATE_TOOL.name
    description: str = GENERATE_TOOL.description
    args_schema: type[BaseModel] = GENERATE_TOOL.arguments


class MAIImageEditTool(_JobStartTool):
    """``edit_image``: change an existing image following an instruction."""

    spec: ClassVar[ToolSpec] = EDIT_TOOL
    name: str = EDIT_TOOL.name
    description: str = EDIT_TOOL.description
    args_schema: type[BaseModel] = EDIT_TOOL.arguments


class MAIImageJobTool(_MAIImageTool):
    """``get_image_job``: wait for (or fetch) the result of an earlier image job."""

    spec: ClassVar[ToolSpec] = JOB_TOOL
    name: str = JOB_TOOL.name
    description: str = JOB_TOOL.description
    args_schema: type[BaseModel] = JOB_TOOL.arguments

    def _run(
        self, request_id: str, run_manager: CallbackManagerForToolRun | None = None
    ) -> tuple[str, ImageJobResult]:
        return self._finish(
            lambda client: client.wait(
                request_id.strip(),
                timeout=self.wait_timeout,
                on_status=self._on_status(),
            )
        )

    async def _arun(
        self, request_id: str, run_manager: AsyncCallbackManagerForToolRun | None = None
    ) -> tuple[str, ImageJobResult]:
        on_status = self._aon_status()
        return await self._afinish(
            lambda client: client.wait(
                request_id.strip(), timeout=self.wait_timeout, on_status=on_status
            )
        )


class MAIImageToolkit(BaseToolkit):
    """The three MAI Image tools with one shared configuration.

    Args:
        api_key, base_url: gateway settings (default ``$PIXAZO_API_KEY``/``$PIXAZO_BASE_URL``).
        wait_timeout: longest wait inside one tool call, seconds.
        output_dir: download images here and return their paths.
        allowed_dirs: directories ``edit_image`` may read local files from (none by default).
        client, async_client: clients to use instead of building them.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    api_key: SecretStr | None = Field(default=None, exclude=True, repr=False)
    base_url: str | None = None
    wait_timeout: float = Field(default=120.0, gt=0)
    output_dir: Path | None = None
    allowed_dirs: AllowedDirs = ()
    client: MAIImageClient | None = Field(default=None, exclude=True, repr=False)
    async_client: AsyncMAIImageClient | None = Field(default=None, exclude=True, repr=False)

    def get_tools(self) -> list[BaseTool]:
        return [
            cls(
                api_key=self.api_key,
                base_url=self.base_url,
                wait_timeout=self.wait_timeout,
                output_dir=self.output_dir,
                allowed_dirs=self.allowed_dirs,
                client=self.client,
                async_client=self.async_client,
            )
            for cls in (MAIImageGenerateTool, MAIImageEditTool, MAIImageJobTool)
        ]


__all__ = [
    "STATUS_EVENT",
    "EditImageArgs",
    "GenerateImageArgs",
    "ImageJobArgs",
    "MAIImageEditTool",
    "MAIImageGenerateTool",
    "MAIImageJobTool",
    "MAIImageToolkit",
]
