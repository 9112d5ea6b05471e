"""LangChain tools for MAI Image 2.5: ``generate_image``, ``edit_image``, ``get_image_job``
and ``view_image``.

Each job tool answers with a short plain-text message for the model (image URLs first, one per
line, then the request id and any saved paths; never base64) and the full result as the
artifact; ``view_image`` answers with a line of text and one small image block. Errors the
model can fix come back as ``status="error"`` tool messages; errors only the application can
fix (no key, a wrong key, no balance, no permission) raise.

Every job goes into the job book (:mod:`mai_tools.jobbook`), so no restart pays twice:

- A call made with a ToolCall (LangGraph's ToolNode, ``create_agent``) is keyed by its
  ``tool_call_id`` (and the LangGraph thread): a graph resumed from its checkpoint after a
  crash re-runs the tool node with the same id, and continues the first job.
- An identical call (same tool, same arguments, any id) continues a job whose answer was never
  delivered (the earlier call was cancelled, e.g. by ``asyncio.wait_for`` or LangGraph's
  ``step_timeout``). Once an answer is returned (images, "still running", or an error), an
  identical call is a new job.

    from mai_tools import MAIImageToolkit
    tools = MAIImageToolkit().get_tools()   # reads PIXAZO_API_KEY / PIXAZO_BASE_URL at call time
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar

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
    Running,
    answer_text,
    arun,
    outcome_of,
    run,
    structured,
    validation_text,
)
from ._async_client import AsyncMAIImageClient
from ._client import MAIImageClient
from ._exceptions import JobBookError, MAIImageError
from ._images import AllowedDirs
from ._langchain_calls import (
    INVOCATION,
    BookKeys,
    Invocation,
    deliver,
    delivers,
    invocation_of,
    tool_call_key,
    tool_call_message,
)
from ._models import ImageResult, JobRequest, JobStatus
from ._policies import DurationStats
from ._tool_images import move_tool_images
from ._tools import (
    EDIT_TOOL,
    GENERATE_TOOL,
    JOB_TOOL,
    VIEW_TOOL,
    EditImageArgs,
    GenerateImageArgs,
    ImageJobArgs,
    ToolSpec,
    ViewImageArgs,
    call_digest,
    job_request,
)
from ._views import Known, ViewOutcome, aview, running_text, view
from .jobbook import LOCAL_PRINCIPAL, JobBook, JobBookSpec, JobRecord

logger = logging.getLogger("mai_tools")

T = TypeVar("T")

STATUS_EVENT = "mai_image_status"
"""Name of the LangChain custom event dispatched on every job status change."""

# --------------------------------------------------------------------------- shared behaviour


def _validation_message(error: pydantic.ValidationError | V1ValidationError) -> str:
    if not isinstance(error, pydantic.ValidationError):  # pydantic v1 models: keep its text
        return f"Invalid arguments, nothing was sent. Fix and call again: {error}"
    return validation_text(error)


def _answer(outcome: Outcome, keys: BookKeys | None = None) -> tuple[str, ImageJobResult]:
    """The tool's (content, artifact); errors only the operator can fix raise, the rest become
    ``status="error"`` tool messages the model can act on."""
    if isinstance(outcome, Failed):
        if outcome.who == "operator":
            raise outcome.error
        message = (tool_call_message(outcome, keys) if keys else None) or outcome.message
        raise ToolException(message) from outcome.error
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
    """Configuration and client handling shared by the tools."""

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
    job_book: JobBookSpec = Field(default=None, exclude=True, repr=False)
    """The job book of the clients the tool builds: a path, a ``postgresql://`` URL, a
    :class:`~mai_tools.jobbook.JobBook` or ``"off"``; default ``$MAI_JOB_BOOK`` or the default
    file (a given ``client``/``async_client`` keeps its own)."""

    _durations: DurationStats = PrivateAttr(default_factory=DurationStats)

    def _client_kwargs(self) -> dict[str, Any]:
        return {
            "api_key": self.api_key.get_secret_value() if self.api_key is not None else None,
            "base_url": self.base_url,
            "wait_timeout": self.wait_timeout,
            # Clients are short-lived; the job durations they learn are kept across calls, so
            # polling stays adaptive.
            "durations": self._durations,
            "job_book": self.job_book,
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

    def _finish(
        self, call: Callable[[MAIImageClient], ImageResult], keys: BookKeys | None = None
    ) -> tuple[str, ImageJobResult]:
        return self._using(lambda client: self._reply(client, call, keys))

    def _using(self, use: Callable[[MAIImageClient], T]) -> T:
        """``use`` the given client, or a short-lived one (it leaves no pool behind)."""
        given = self.client
        if given is not None:
            return use(given)
        try:
            client = MAIImageClient(**self._client_kwargs())
        except MAIImageError as exc:
            _answer(outcome_of(exc))  # a configuration error: raised for the operator
            raise
        with client:
            return use(client)

    def _reply(
        self,
        client: MAIImageClient,
        call: Callable[[MAIImageClient], ImageResult],
        keys: BookKeys | None,
    ) -> tuple[str, ImageJobResult]:
        outcome = run(client, call, save_to=self.output_dir, budget=self.wait_timeout)
        book, scope = client.job_book, keys.scope(client) if keys is not None else None
        settled, request_id = delivers(outcome)
        if book is not None and scope is not None and settled:
            deliver(book, scope, request_id)
        return _answer(outcome, keys)

    async def _afinish(
        self,
        call: Callable[[AsyncMAIImageClient], Awaitable[ImageResult]],
        keys: BookKeys | None = None,
    ) -> tuple[str, ImageJobResult]:
        return await self._ausing(lambda client: self._areply(client, call, keys))

    async def _ausing(self, use: Callable[[AsyncMAIImageClient], Awaitable[T]]) -> T:
        """Async :meth:`_using`: one client per call (an httpx.AsyncClient must never outlive
        or cross event loops)."""
        given = self.async_client
        if given is not None:
            return await use(given)
        try:
            client = AsyncMAIImageClient(**self._client_kwargs())
        except MAIImageError as exc:
            _answer(outcome_of(exc))
            raise
        async with client:
            return await use(client)

    async def _areply(
        self,
        client: AsyncMAIImageClient,
        call: Callable[[AsyncMAIImageClient], Awaitable[ImageResult]],
        keys: BookKeys | None,
    ) -> tuple[str, ImageJobResult]:
        outcome = await arun(client, call, save_to=self.output_dir, budget=self.wait_timeout)
        book, scope = client.job_book, keys.scope(client) if keys is not None else None
        settled, request_id = delivers(outcome)
        if book is not None and scope is not None and settled:
            if book.offload:  # a network book is not called on the event loop
                await asyncio.to_thread(deliver, book, scope, request_id)
            else:
                deliver(book, scope, request_id)
        return _answer(outcome, keys)

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

    # BaseTool hands a ToolCall's id to run()/arun() only; they pass it on to _run/_arun here.
    def run(self, tool_input: str | dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        token = INVOCATION.set(invocation_of(kwargs))
        try:
            return super().run(tool_input, *args, **kwargs)
        finally:
            INVOCATION.reset(token)

    async def arun(self, tool_input: str | dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        token = INVOCATION.set(invocation_of(kwargs))
        try:
            return await super().arun(tool_input, *args, **kwargs)
        finally:
            INVOCATION.reset(token)

    def _book_keys(self, arguments: dict[str, Any]) -> BookKeys:
        """The call's keys: its tool call id (if it came as a ToolCall), and its exact
        arguments (an undelivered identical call's job is adopted)."""
        invocation = INVOCATION.get() or Invocation()
        call_id = invocation.tool_call_id
        return BookKeys(
            tool=self.name,
            tool_call_id=call_id,
            idempotency_key=None
            if call_id is None
            else tool_call_key(self.name, call_id, invocation.thread_id),
            digest=call_digest(self.spec, self.spec.arguments.model_validate(arguments)),
        )

    def _run(
        self, run_manager: CallbackManagerForToolRun | None = None, **arguments: Any
    ) -> tuple[str, ImageJobResult]:
        keys = self._book_keys(arguments)
        return self._finish(
            lambda client: client.run(
                self._request(self.spec, arguments, client.options.max_input_image_bytes),
                timeout=self.wait_timeout,
                on_status=self._on_status(),
                idempotency_key=keys.key(client),
                job_scope=keys.scope(client),
            ),
            keys,
        )

    async def _arun(
        self, run_manager: AsyncCallbackManagerForToolRun | None = None, **arguments: Any
    ) -> tuple[str, ImageJobResult]:
        on_status = self._aon_status()
        keys = self._book_keys(arguments)

        async def call(client: AsyncMAIImageClient) -> ImageResult:
            # A local image is read off the event loop.
            request = await asyncio.to_thread(
                self._request, self.spec, arguments, client.options.max_input_image_bytes
            )
            return await client.run(
                request,
                timeout=self.wait_timeout,
                on_status=on_status,
                idempotency_key=keys.key(client),
                job_scope=keys.scope(client),
            )

        return await self._afinish(call, keys)


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


class MAIImageViewTool(_MAIImageTool):
    """``view_image``: look at one image a job made. The tool message's content is a text line
    and a standard image block (``{"type": "image", "base64": ..., "mime_type":
    "image/jpeg"}``), a JPEG of at most ``size`` px a side; the artifact says what it shows.

    Only images of jobs in the job book (or the job a request id names, read from the
    gateway) are fetched: never a URL the model makes up. For chat models that take no
    images in tool messages (OpenAI Chat Completions) add
    :class:`~mai_tools.middleware.ToolImagesMiddleware` to the agent.
    """

    spec: ClassVar[ToolSpec] = VIEW_TOOL
    name: str = VIEW_TOOL.name
    description: str = VIEW_TOOL.description
    args_schema: type[BaseModel] = VIEW_TOOL.arguments

    def _run(
        self, run_manager: CallbackManagerForToolRun | None = None, **arguments: Any
    ) -> tuple[str | list[dict[str, Any]], dict[str, Any] | ImageJobResult]:
        args = ViewImageArgs.model_validate(arguments)

        def look(client: MAIImageClient) -> ViewOutcome:
            book = client.job_book
            return view(
                client,
                args,
                known=lambda rid: _booked(book, lambda b: b.find(rid, principal=LOCAL_PRINCIPAL)),
                by_url=lambda url: _booked(
                    book, lambda b: b.find_image(url, principal=LOCAL_PRINCIPAL)
                ),
                fetch_timeout=self.wait_timeout,
            )

        return _shown(self._using(look))

    async def _arun(
        self, run_manager: AsyncCallbackManagerForToolRun | None = None, **arguments: Any
    ) -> tuple[str | list[dict[str, Any]], dict[str, Any] | ImageJobResult]:
        args = ViewImageArgs.model_validate(arguments)

        async def look(client: AsyncMAIImageClient) -> ViewOutcome:
            book = client.job_book

            async def read(op: Callable[[JobBook], JobRecord | None]) -> JobRecord | None:
                if book is not None and book.offload:  # a network book: off the event loop
                    return await asyncio.to_thread(_booked, book, op)
                return _booked(book, op)

            async def known(rid: str) -> Known:
                return await read(lambda b: b.find(rid, principal=LOCAL_PRINCIPAL))

            async def by_url(url: str) -> JobRecord | None:
                return await read(lambda b: b.find_image(url, principal=LOCAL_PRINCIPAL))

            return await aview(
                client, args, known=known, by_url=by_url, fetch_timeout=self.wait_timeout
            )

        return _shown(await self._ausing(look))


def _booked(book: JobBook | None, op: Callable[[JobBook], JobRecord | None]) -> JobRecord | None:
    """One book read for view_image; no book, or a book that fails, vouches for nothing."""
    if book is None:
        return None
    try:
        return op(book)
    except JobBookError as exc:
        logger.warning("job book: could not read it for view_image: %s", exc)
        return None


def _shown(
    outcome: ViewOutcome,
) -> tuple[str | list[dict[str, Any]], dict[str, Any] | ImageJobResult]:
    """view_image's (content, artifact): a text line and an image block; "still running" as
    text (not an error); errors as for the other tools."""
    if isinstance(outcome, Failed):
        return _answer(outcome)
    if isinstance(outcome, Running):
        return running_text(outcome), structured(outcome)
    encoded = base64.b64encode(outcome.preview.jpeg).decode("ascii")
    return [
        {"type": "text", "text": outcome.text},
        {"type": "image", "base64": encoded, "mime_type": "image/jpeg"},
    ], outcome.artifact()


class MAIImageToolkit(BaseToolkit):
    """The four MAI Image tools with one shared configuration.

    Attributes:
        api_key: the gateway's API key (default ``$PIXAZO_API_KEY``).
        base_url: the gateway's base URL (default ``$PIXAZO_BASE_URL`` or the public gateway).
        wait_timeout: longest wait inside one tool call, seconds.
        output_dir: download images here and return their paths.
        allowed_dirs: directories ``edit_image`` may read local files from (none by default).
        client: a client to use instead of building one.
        async_client: an async client to use instead of building one.
        job_book: the job book of the clients the tools build (a path, a ``postgresql://``
            URL, a :class:`~mai_tools.jobbook.JobBook` or ``"off"``; default
            ``$MAI_JOB_BOOK`` or the default file). Calls keyed by their tool call id, and
            undelivered identical calls, continue the job it holds instead of paying again.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    api_key: SecretStr | None = Field(default=None, exclude=True, repr=False)
    base_url: str | None = None
    wait_timeout: float = Field(default=120.0, gt=0)
    output_dir: Path | None = None
    allowed_dirs: AllowedDirs = ()
    client: MAIImageClient | None = Field(default=None, exclude=True, repr=False)
    async_client: AsyncMAIImageClient | None = Field(default=None, exclude=True, repr=False)
    job_book: JobBookSpec = Field(default=None, exclude=True, repr=False)

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
                job_book=self.job_book,
            )
            for cls in (MAIImageGenerateTool, MAIImageEditTool, MAIImageJobTool, MAIImageViewTool)
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
    "MAIImageViewTool",
    "move_tool_images",
    "tool_call_key",
]
