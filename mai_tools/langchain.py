"""LangChain tools for MAI Image 2.5: ``generate_image``, ``edit_image``, ``get_image_job``.

Each tool answers with a short plain-text message for the model (image URLs first, one per
line, then the request id and any saved paths; never base64) and the full result as the
artifact. Errors the model can fix come back as ``status="error"`` tool messages; errors only
the application can fix (no key, a wrong key, no balance, no permission) raise.

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
import hashlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
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
    Done,
    Failed,
    FailureKind,
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
from ._exceptions import (
    IdempotencyKeyReusedError,
    JobBookError,
    JobUnknownError,
    MAIImageError,
)
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
    call_digest,
    job_request,
)
from .jobbook import LOCAL_PRINCIPAL, JobBook, JobBookSpec, JobScope
from .jobbook._record import MAX_KEY_LENGTH

logger = logging.getLogger("mai_tools")

STATUS_EVENT = "mai_image_status"
"""Name of the LangChain custom event dispatched on every job status change."""

# --------------------------------------------------------------------------- the job book


@dataclass(frozen=True)
class _Invocation:
    """What LangChain says about one call besides its arguments."""

    tool_call_id: str | None = None
    thread_id: str | None = None


_INVOCATION: ContextVar[_Invocation | None] = ContextVar(
    "mai_tools_langchain_invocation", default=None
)
"""Set by a job tool's ``run``/``arun`` for its ``_run``/``_arun``: BaseTool passes the
``tool_call_id`` of a ToolCall input to ``run`` (and to the callbacks) but not to ``_run``."""


def _invocation(run_kwargs: Mapping[str, Any]) -> _Invocation:
    call_id = run_kwargs.get("tool_call_id")
    config = run_kwargs.get("config") or {}
    thread = (config.get("configurable") or {}).get("thread_id")
    return _Invocation(
        call_id if isinstance(call_id, str) and call_id else None,
        str(thread) if thread is not None and str(thread) else None,
    )


def tool_call_key(tool: str, tool_call_id: str, thread_id: str | None = None) -> str:
    """The ``idempotency_key`` of a job tool's call: ``langchain:<tool>:<tool_call_id>``, or
    ``langchain:<tool>:<thread_id>:<tool_call_id>`` inside a LangGraph thread (so two threads
    whose model reuses ids never share a job). Hashed when longer than a key may be."""
    key = ":".join(
        ["langchain", tool, *([thread_id] if thread_id is not None else []), tool_call_id]
    )
    if len(key) > MAX_KEY_LENGTH:
        digest = hashlib.sha256(f"{tool}\0{thread_id}\0{tool_call_id}".encode()).hexdigest()
        key = f"langchain:sha256:{digest}"
    return key


@dataclass(frozen=True)
class _BookKeys:
    """How one job tool call is known to the job book."""

    tool: str
    tool_call_id: str | None
    idempotency_key: str | None
    digest: str
    """The exact call (:func:`~mai_tools._tools.call_digest`)."""

    def key(self, client: MAIImageClient | AsyncMAIImageClient) -> str | None:
        """The call's ``idempotency_key=`` (none when the client keeps no book)."""
        return None if client.job_book is None else self.idempotency_key

    def scope(self, client: MAIImageClient | AsyncMAIImageClient) -> JobScope | None:
        """The call's ``job_scope=``. Its twin key names the gateway too: a job of one gateway
        (an emulator of a test run) is never adopted by a call to another."""
        if client.job_book is None:
            return None
        twin = hashlib.sha256(f"{client.base_url}\0{self.digest}".encode()).hexdigest()
        return JobScope(
            principal=LOCAL_PRINCIPAL, surface="langchain", twin_key=f"langchain:{twin}"
        )


def _delivers(outcome: Outcome) -> tuple[bool, str | None]:
    """(does returning this answer settle the call, the job it is about).

    Images, "still running" and an error the model reads are delivered: an identical call is
    then a new job. An error raised to the application is not (the job stays adoptable)."""
    if isinstance(outcome, Done):
        return True, outcome.result.request_id
    if isinstance(outcome, Running):
        return True, outcome.request_id
    if outcome.who == "operator":
        return False, None
    if outcome.request_id is not None:
        return True, outcome.request_id
    # A submit that may have arrived (no request id): its entry is the one to settle.
    return outcome.kind is FailureKind.MAY_EXIST, None


def _deliver(book: JobBook, scope: JobScope, request_id: str | None) -> None:
    assert scope.twin_key is not None
    try:
        book.delivered(scope.principal, scope.twin_key, request_id)
    except JobBookError as exc:  # the answer matters more than the bookkeeping
        logger.warning("job book: could not mark an answer delivered: %s", exc)


def _when(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _tool_call_message(failed: Failed, keys: _BookKeys) -> str | None:
    """What the model is told when the failure is about this call's tool call id."""
    error, tool, call_id = failed.error, keys.tool, keys.tool_call_id
    if keys.idempotency_key is None or getattr(error, "idempotency_key", None) != (
        keys.idempotency_key
    ):
        return None
    if isinstance(error, IdempotencyKeyReusedError):
        detail = (
            "the request differs"
            if error.field is None
            else f"{error.field} was {error.earlier!r} there and is {error.given!r} here"
        )
        return (
            f"Nothing was sent: tool call id {call_id!r} already named a {tool} call with other "
            f"arguments at {_when(error.created_at)} ({detail}). A tool call id names one job "
            "(that is what keeps a resumed graph from paying twice), so the same id with new "
            f"arguments is refused. Call {tool} again as a new tool call, with a new id."
        )
    if isinstance(error, JobUnknownError):
        return (
            f"This {tool} call (tool call id {call_id!r}) may already have created a job at "
            f"{_when(error.created_at)}: its submit was sent, but the process stopped before "
            "the gateway's request id was recorded. It was not sent again, to avoid paying "
            "twice. Tell the user; they can find the job in the Pixazo dashboard. Calling "
            f"{tool} again starts a new, paid job."
        )
    return None


# --------------------------------------------------------------------------- shared behaviour


def _validation_message(error: pydantic.ValidationError | V1ValidationError) -> str:
    if not isinstance(error, pydantic.ValidationError):  # pydantic v1 models: keep its text
        return f"Invalid arguments, nothing was sent. Fix and call again: {error}"
    return validation_text(error)


def _answer(outcome: Outcome, keys: _BookKeys | None = None) -> tuple[str, ImageJobResult]:
    """The tool's (content, artifact); errors only the operator can fix raise, the rest become
    ``status="error"`` tool messages the model can act on."""
    if isinstance(outcome, Failed):
        if outcome.who == "operator":
            raise outcome.error
        message = (_tool_call_message(outcome, keys) if keys else None) or outcome.message
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
        self, call: Callable[[MAIImageClient], ImageResult], keys: _BookKeys | None = None
    ) -> tuple[str, ImageJobResult]:
        given = self.client
        if given is not None:
            return self._reply(given, call, keys)
        try:
            client = MAIImageClient(**self._client_kwargs())
        except MAIImageError as exc:
            return _answer(outcome_of(exc))
        # A short-lived client per call leaves no pool behind.
        with client:
            return self._reply(client, call, keys)

    def _reply(
        self,
        client: MAIImageClient,
        call: Callable[[MAIImageClient], ImageResult],
        keys: _BookKeys | None,
    ) -> tuple[str, ImageJobResult]:
        outcome = run(client, call, save_to=self.output_dir, budget=self.wait_timeout)
        book, scope = client.job_book, keys.scope(client) if keys is not None else None
        delivers, request_id = _delivers(outcome)
        if book is not None and scope is not None and delivers:
            _deliver(book, scope, request_id)
        return _answer(outcome, keys)

    async def _afinish(
        self,
        call: Callable[[AsyncMAIImageClient], Awaitable[ImageResult]],
        keys: _BookKeys | None = None,
    ) -> tuple[str, ImageJobResult]:
        given = self.async_client
        if given is not None:
            return await self._areply(given, call, keys)
        try:
            # One per call: an httpx.AsyncClient must never outlive or cross event loops.
            client = AsyncMAIImageClient(**self._client_kwargs())
        except MAIImageError as exc:
            return _answer(outcome_of(exc))
        async with client:
            return await self._areply(client, call, keys)

    async def _areply(
        self,
        client: AsyncMAIImageClient,
        call: Callable[[AsyncMAIImageClient], Awaitable[ImageResult]],
        keys: _BookKeys | None,
    ) -> tuple[str, ImageJobResult]:
        outcome = await arun(client, call, save_to=self.output_dir, budget=self.wait_timeout)
        book, scope = client.job_book, keys.scope(client) if keys is not None else None
        delivers, request_id = _delivers(outcome)
        if book is not None and scope is not None and delivers:
            if book.offload:  # a network book is not called on the event loop
                await asyncio.to_thread(_deliver, book, scope, request_id)
            else:
                _deliver(book, scope, request_id)
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
        token = _INVOCATION.set(_invocation(kwargs))
        try:
            return super().run(tool_input, *args, **kwargs)
        finally:
            _INVOCATION.reset(token)

    async def arun(self, tool_input: str | dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        token = _INVOCATION.set(_invocation(kwargs))
        try:
            return await super().arun(tool_input, *args, **kwargs)
        finally:
            _INVOCATION.reset(token)

    def _book_keys(self, arguments: dict[str, Any]) -> _BookKeys:
        """The call's keys: its tool call id (if it came as a ToolCall), and its exact
        arguments (an undelivered identical call's job is adopted)."""
        invocation = _INVOCATION.get() or _Invocation()
        call_id = invocation.tool_call_id
        return _BookKeys(
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


class MAIImageToolkit(BaseToolkit):
    """The three MAI Image tools with one shared configuration.

    Args:
        api_key, base_url: gateway settings (default ``$PIXAZO_API_KEY``/``$PIXAZO_BASE_URL``).
        wait_timeout: longest wait inside one tool call, seconds.
        output_dir: download images here and return their paths.
        allowed_dirs: directories ``edit_image`` may read local files from (none by default).
        client, async_client: clients to use instead of building them.
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
    "tool_call_key",
]
