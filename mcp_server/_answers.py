"""Outcomes to tool results: the one shape every path answers with (calls and tasks alike).

Every answer carries the shared text (``mai_tools._agent.answer_text``) and, whenever a job
exists, ``structuredContent`` valid against the tools' output schema (``ImageJobResult``:
``request_id`` and ``next_step`` included, errors too), so a client that shows the model only
the structured part still says how to go on.
"""

from __future__ import annotations

import time
from typing import Any

from mcp.types import CallToolResult, ResourceLink, TextContent

from mai_tools._agent import (
    Done,
    Failed,
    Outcome,
    answer_text,
    structured,
    structured_failure,
)

from ._previews import previews
from ._settings import PREVIEW_SIZES, Settings

MAX_PREVIEW_TIME = 10.0
"""Previews get what is left of the call's wait, and at most this long (none if nothing is
left: a call ends within ``max_wait``, previews included)."""


def preview_budget(
    settings: Settings, started: float | None, max_wait: float | None = None
) -> float:
    """Seconds previews may take: what is left of the call's wait (``max_wait``, by default
    the server's) within fixed bounds."""
    wait = settings.max_wait if max_wait is None else max_wait
    left = wait if started is None else wait - (time.monotonic() - started)
    return min(max(left, 0.0), MAX_PREVIEW_TIME)


async def answer(
    outcome: Outcome,
    settings: Settings,
    *,
    started: float | None = None,
    note: str | None = None,
    max_wait: float | None = None,
) -> CallToolResult:
    """The tool result for ``outcome``: text (+ ``note``), structured answer, links, previews.

    Args:
        started: ``time.monotonic()`` when the call began (previews fit in what is left).
        note: a line added after the answer (for example that an earlier job was continued).
        max_wait: the call's wait, when shorter than the server's (a client that gives up
            sooner).
    """
    if isinstance(outcome, Failed):
        text = outcome.message if note is None else f"{outcome.message}\n{note}"
        data = structured_failure(outcome)
        return CallToolResult(
            content=[TextContent(type="text", text=text)],
            structured_content=None if data is None else data.model_dump(mode="json"),
            is_error=True,
        )
    text = answer_text(outcome, inline_shown="see the previews")
    content: list[Any] = [
        TextContent(type="text", text=text if note is None else f"{text}\n{note}")
    ]
    if isinstance(outcome, Done):
        result = outcome.result
        if settings.resource_links and not result.has_data_uris:
            for index, url in enumerate(result.image_urls):
                content.append(
                    ResourceLink(
                        type="resource_link",
                        uri=url,
                        name=f"{result.request_id}-{index + 1}",
                        mime_type=result.media_type,
                    )
                )
        if settings.preview != "off":
            content.extend(
                await previews(
                    result.image_urls,
                    side=PREVIEW_SIZES[settings.preview],
                    budget=preview_budget(settings, started, max_wait),
                    request_id=result.request_id,
                    saved=outcome.saved,
                )
            )
    return CallToolResult(
        content=content, structured_content=structured(outcome).model_dump(mode="json")
    )
