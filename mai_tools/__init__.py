"""mai_tools: MAI Image 2.5 (Pixazo gateway) for Python, LangChain agents and MCP clients.

The core is :class:`MAIImageClient` / :class:`AsyncMAIImageClient`: submit a job, wait for it
with adaptive polling, get an :class:`ImageResult` with the image URLs. The LangChain tools
(``MAIImageGenerateTool``, ...) are imported lazily, on first use; ``mai_tools.emulator`` is an
offline gateway for demos and tests. Importing ``mai_tools`` never imports ``mcp``.

The clients, their policies and clocks and the webhook receiver load on first use too (``from
mai_tools import MAIImageClient`` works as always): a process that imports the package only for
its models or exceptions, or for the emulator's pytest plugin (every pytest run), does not pay
for httpx, asyncio and the client stack.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._exceptions import (
    APIConnectionError,
    APIError,
    APIResponseError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    ConfigurationError,
    DownloadError,
    IdempotencyKeyReusedError,
    InsufficientBalanceError,
    InvalidArgumentError,
    InvalidImageError,
    JobBookError,
    JobFailedError,
    JobTimeoutError,
    JobUnknownError,
    MAIImageError,
    MissingAPIKeyError,
    NotFoundError,
    OperatorError,
    PermissionDeniedError,
    QuotaExceededError,
    RateLimitError,
    ServerError,
    SpendingLimitError,
)
from ._images import ImageInput, image_to_url, sniff_image_type
from ._models import (
    EDIT_ASPECT_RATIOS,
    GENERATE_ASPECT_RATIOS,
    OPERATIONS,
    OUTPUT_FORMATS,
    EditAspectRatio,
    EditFields,
    EditRequest,
    GenerateAspectRatio,
    GenerateFields,
    GenerateRequest,
    ImageResult,
    Job,
    JobOutput,
    JobRequest,
    JobStatus,
    OutputFormat,
    Status,
    operation_of,
)
from ._version import __version__

if TYPE_CHECKING:
    from ._actions import AsyncRequestGate, HTTPRequest, OnStatus, RequestGate
    from ._async_client import AsyncMAIImageClient
    from ._client import MAIImageClient
    from ._policies import Clock, DurationStats, FakeClock, PollPolicy, RetryPolicy, SystemClock
    from ._webhooks import WebhookReceiver
    from .jobbook._limits import SpendingLimits
    from .langchain import (
        MAIImageEditTool,
        MAIImageGenerateTool,
        MAIImageJobTool,
        MAIImageToolkit,
        MAIImageViewTool,
    )

_LAZY = {
    "AsyncMAIImageClient": "mai_tools._async_client",
    "MAIImageClient": "mai_tools._client",
    "OnStatus": "mai_tools._actions",
    "AsyncRequestGate": "mai_tools._actions",
    "HTTPRequest": "mai_tools._actions",
    "RequestGate": "mai_tools._actions",
    "Clock": "mai_tools._policies",
    "DurationStats": "mai_tools._policies",
    "FakeClock": "mai_tools._policies",
    "PollPolicy": "mai_tools._policies",
    "RetryPolicy": "mai_tools._policies",
    "SystemClock": "mai_tools._policies",
    "WebhookReceiver": "mai_tools._webhooks",
    "SpendingLimits": "mai_tools.jobbook._limits",
    "MAIImageEditTool": "mai_tools.langchain",
    "MAIImageGenerateTool": "mai_tools.langchain",
    "MAIImageJobTool": "mai_tools.langchain",
    "MAIImageToolkit": "mai_tools.langchain",
    "MAIImageViewTool": "mai_tools.langchain",
}


def __getattr__(name: str) -> Any:
    # httpx, the client stack and LangChain are heavy to import: load them when asked for.
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'mai_tools' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


__all__ = [
    "EDIT_ASPECT_RATIOS",
    "GENERATE_ASPECT_RATIOS",
    "OPERATIONS",
    "OUTPUT_FORMATS",
    "APIConnectionError",
    "APIError",
    "APIResponseError",
    "APIStatusError",
    "APITimeoutError",
    "AsyncMAIImageClient",
    "AsyncRequestGate",
    "AuthenticationError",
    "BadRequestError",
    "Clock",
    "ConfigurationError",
    "DownloadError",
    "DurationStats",
    "EditAspectRatio",
    "EditFields",
    "EditRequest",
    "FakeClock",
    "GenerateAspectRatio",
    "GenerateFields",
    "GenerateRequest",
    "HTTPRequest",
    "IdempotencyKeyReusedError",
    "ImageInput",
    "ImageResult",
    "InsufficientBalanceError",
    "InvalidArgumentError",
    "InvalidImageError",
    "Job",
    "JobBookError",
    "JobFailedError",
    "JobOutput",
    "JobRequest",
    "JobStatus",
    "JobTimeoutError",
    "JobUnknownError",
    "MAIImageClient",
    "MAIImageEditTool",
    "MAIImageError",
    "MAIImageGenerateTool",
    "MAIImageJobTool",
    "MAIImageToolkit",
    "MAIImageViewTool",
    "MissingAPIKeyError",
    "NotFoundError",
    "OnStatus",
    "OperatorError",
    "OutputFormat",
    "PermissionDeniedError",
    "PollPolicy",
    "QuotaExceededError",
    "RateLimitError",
    "RequestGate",
    "RetryPolicy",
    "ServerError",
    "SpendingLimitError",
    "SpendingLimits",
    "Status",
    "SystemClock",
    "WebhookReceiver",
    "__version__",
    "image_to_url",
    "operation_of",
    "sniff_image_type",
]
