"""``view_image``: one small preview of one image a job made, for a model to look at.

Both adapters (LangChain's ``MAIImageViewTool``, the MCP server's ``view_image``) run a view
through :func:`view` / :func:`aview` and only translate the :data:`ViewOutcome` into their
medium (image content blocks, ``ImageContent``). The decisions are the pure functions below;
each driver is a few lines of I/O around them.

**Only images the caller's own jobs returned are fetched.** A request id is looked up as the
caller may see it (the adapter's ``known``: the MCP server answers another principal's job
like an unknown id), then its URLs come from the book or from the gateway's status of that
job. A bare URL must be in one of the caller's finished jobs in the job book
(:meth:`~mai_tools.jobbook.JobBook.find_image`); a URL and a request id, in that job's URLs.
Any other URL is refused without a request: a tool that fetched what it is told would let
a prompt make the server reach its internal network (SSRF).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass
from typing import Any, Literal, cast

from ._agent import RESUME_TOOL, Failed, FailureKind, Running, failure_of, outcome_of
from ._agent import _usually as usually  # the one wording of a typical duration
from ._async_client import AsyncMAIImageClient
from ._client import MAIImageClient
from ._download import afetch_image, fetch_image
from ._exceptions import JobFailedError, MAIImageError
from ._models import JobStatus, Status, short_url
from ._previews import MAX_PREVIEW_DOWNLOAD, Preview, PreviewRefused, model_preview
from ._tools import ViewImageArgs
from .jobbook import JobRecord

Known = JobRecord | Failed | None
"""What the adapter's book says of a request id: its record, a refusal (an unknown or foreign
id, answered like the gateway's unknown id), or nothing (not in the book: ask the gateway)."""


@dataclass(frozen=True)
class ImageView:
    """A preview of image ``index`` (1-based) of ``count`` of job ``request_id``."""

    request_id: str
    index: int
    count: int
    url: str
    preview: Preview

    @property
    def text(self) -> str:
        """The line a model reads beside the image (never the image's bytes)."""
        width, height = self.preview.original
        return (
            f"Image {self.index} of {self.count} of request_id {self.request_id} "
            f"({width}x{height} px), shown at {self.preview.width}x{self.preview.height}."
        )

    def artifact(self) -> dict[str, Any]:
        """Plain data about the preview (the LangChain artifact; no image bytes)."""
        return {
            "request_id": self.request_id,
            "index": self.index,
            "count": self.count,
            "url": short_url(self.url),
            "original_size": list(self.preview.original),
            "preview_size": [self.preview.width, self.preview.height],
            "media_type": "image/jpeg",
            "bytes": len(self.preview.jpeg),
        }


ViewOutcome = ImageView | Running | Failed


def running_text(running: Running) -> str:
    """What ``view_image`` says of a job that has no image yet (not an error)."""
    return (
        f"request_id {running.request_id} is still running (status {running.status}"
        f"{usually(running)}): there is no image to view yet. Call {RESUME_TOOL} with "
        f"request_id {running.request_id} to wait for it, then view_image."
    )


def _refused(text: str) -> Failed:
    return Failed(FailureKind.INVALID_INPUT, text, ValueError(text))


def not_yours(url: str) -> Failed:
    """A URL no job of the caller returned: refused, and nothing fetched."""
    return _refused(
        f"{short_url(url)[:120]} is not an image one of your jobs returned, so it is not "
        "fetched. Pass the request_id (and index) of the job that made it."
    )


def urls_of_record(record: JobRecord | None) -> list[str] | None:
    """The image URLs the book holds for a finished job (None: ask the gateway)."""
    if record is None or record.state != "finished" or record.status != "COMPLETED":
        return None
    if any(url.startswith("data:") for url in record.image_urls):
        return None  # inline images: the book keeps only their digests
    return list(record.image_urls) or None


def urls_of_status(status: JobStatus) -> list[str] | Running | Failed:
    """The job's image URLs, or why there are none (still running, or it failed)."""
    if status.status is Status.COMPLETED and status.image_urls:
        return list(status.image_urls)
    if status.status.is_failure:
        return failure_of(JobFailedError(status))
    return Running(status.request_id, status.status.value, 0.0)


def choose(args: ViewImageArgs, request_id: str, urls: list[str]) -> tuple[int, str] | Failed:
    """(index, URL) of the image asked for among the job's ``urls``."""
    if args.url is not None:
        if args.url not in urls:
            return not_yours(args.url)
        return urls.index(args.url) + 1, args.url
    if args.index > len(urls):
        return _refused(
            f"request_id {request_id} has {len(urls)} image(s); index {args.index} does not "
            f"exist. Use an index from 1 to {len(urls)}."
        )
    return args.index, urls[args.index - 1]


def _fetch_failed(url: str, exc: Exception) -> Failed:
    text = f"The image {short_url(url)[:120]} could not be shown: {exc}"
    return Failed(FailureKind.SERVICE, text, exc)


Step = tuple[Literal["by_url", "known", "status", "fetch", "preview"], Any]
"""What the flow asks its driver for: the caller's job of a URL, the book's answer for a
request id, the gateway's status, an image's bytes, a preview of bytes."""


def _flow(args: ViewImageArgs) -> Generator[Step, Any, ViewOutcome]:
    """Every decision of a view; the driver does each step's I/O and sends back its answer
    (a :class:`Failed` or :class:`Running` for a step that failed)."""
    request_id = args.request_id
    if request_id is None:
        assert args.url is not None  # ViewImageArgs holds one or the other
        record = yield "by_url", args.url
        if record is None or record.request_id is None:
            return not_yours(args.url)
        request_id, urls = record.request_id, list(record.image_urls)
    else:
        known = yield "known", request_id
        if isinstance(known, Failed):
            return known
        booked = urls_of_record(known)
        if booked is None:
            status = yield "status", request_id
            found = status if isinstance(status, Running | Failed) else urls_of_status(status)
            if not isinstance(found, list):
                return found
            booked = found
        urls = booked
    picked = choose(args, request_id, urls)
    if isinstance(picked, Failed):
        return picked
    index, url = picked
    raw = yield "fetch", url
    if isinstance(raw, Failed):
        return raw
    preview = yield "preview", raw
    if isinstance(preview, PreviewRefused):
        return _fetch_failed(url, preview)
    return ImageView(request_id, index, len(urls), url, preview)


def _failure(step: str, value: Any, exc: MAIImageError) -> Running | Failed:
    return _fetch_failed(value, exc) if step == "fetch" else outcome_of(exc)


def view(
    api: MAIImageClient,
    args: ViewImageArgs,
    *,
    known: Callable[[str], Known],
    by_url: Callable[[str], JobRecord | None],
    fetch_timeout: float | None = None,
) -> ViewOutcome:
    """The preview ``args`` ask for (sync driver).

    Args:
        known: the book's answer for a request id, as the caller may see it.
        by_url: the caller's finished job that returned a URL (None: not theirs, or no book).
        fetch_timeout: seconds the image's download may take (default: a save's timeout).
    """
    steps: dict[str, Callable[[Any], Any]] = {
        "by_url": by_url,
        "known": known,
        "status": api.get_status,
        "fetch": functools.partial(
            fetch_image, max_bytes=MAX_PREVIEW_DOWNLOAD, timeout=fetch_timeout
        ),
        "preview": functools.partial(_preview, size=args.size),
    }
    flow, answer = _flow(args), cast(Any, None)
    while True:
        try:
            step, value = flow.send(answer)
        except StopIteration as stop:
            return _finished(cast(ViewOutcome, stop.value), api)
        try:
            answer = steps[step](value)
        except MAIImageError as exc:
            answer = _failure(step, value, exc)


async def aview(
    api: AsyncMAIImageClient,
    args: ViewImageArgs,
    *,
    known: Callable[[str], Awaitable[Known]],
    by_url: Callable[[str], Awaitable[JobRecord | None]],
    fetch_timeout: float | None = None,
) -> ViewOutcome:
    """Async :func:`view` (the preview is made in a worker thread)."""
    steps: dict[str, Callable[[Any], Awaitable[Any]]] = {
        "by_url": by_url,
        "known": known,
        "status": api.get_status,
        "fetch": functools.partial(
            afetch_image, max_bytes=MAX_PREVIEW_DOWNLOAD, timeout=fetch_timeout
        ),
        "preview": lambda raw: asyncio.to_thread(_preview, raw, args.size),
    }
    flow, answer = _flow(args), cast(Any, None)
    while True:
        try:
            step, value = flow.send(answer)
        except StopIteration as stop:
            return _finished(cast(ViewOutcome, stop.value), api)
        try:
            answer = await steps[step](value)
        except MAIImageError as exc:
            answer = _failure(step, value, exc)


def _finished(outcome: ViewOutcome, api: MAIImageClient | AsyncMAIImageClient) -> ViewOutcome:
    """A running job's answer says how long such jobs usually take (the learned median)."""
    return outcome.expecting(api.durations) if isinstance(outcome, Running) else outcome


def _preview(raw: bytes, size: int) -> Preview | PreviewRefused:
    try:
        return model_preview(raw, size)
    except PreviewRefused as exc:
        return exc


__all__ = [
    "ImageView",
    "Known",
    "ViewOutcome",
    "aview",
    "choose",
    "not_yours",
    "running_text",
    "urls_of_record",
    "urls_of_status",
    "view",
]
