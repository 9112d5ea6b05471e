"""Outcomes to tool results: the one shape every path answers with (calls and tasks alike).

Every answer carries the shared text (``mai_tools._agent.answer_text``) and, whenever a job
exists, ``structuredContent`` valid against the tools' output schema (``ImageJobResult``:
``request_id`` and ``next_step`` included, errors too), so a client that shows the model only
the structured part still says how to go on.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import anyio
from mcp.types import CallToolResult, ResourceLink, TextContent

from mai_tools import AsyncMAIImageClient, WebhookReceiver, _duration_cache
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

STORE_EVERY = 10.0
"""Seconds between two saves of the learned job durations (and one more when the server stops)."""
MAX_PREVIEW_TIME = 10.0
"""Previews get what is left of the call's wait, and at most this long (none if nothing is
left: a call ends within ``max_wait``, previews included)."""


class Clients:
    """One AsyncMAIImageClient per event loop (a server normally has exactly one)."""

    def __init__(
        self,
        settings: Settings,
        client: AsyncMAIImageClient | None,
        webhooks: WebhookReceiver | None = None,
    ) -> None:
        self.settings = settings
        self._given = client
        self._webhooks = webhooks
        self._clients: dict[int, AsyncMAIImageClient] = {}
        self._stored_at: dict[int, float] = {}  # id(client) -> when its durations were saved

    def get(self) -> AsyncMAIImageClient:
        if self._given is not None:
            return self._given
        loop = id(asyncio.get_running_loop())
        client = self._clients.get(loop)
        if client is None:
            key = self.settings.api_key
            client = AsyncMAIImageClient(
                None if key is None else key.get_secret_value(),
                base_url=self.settings.base_url,
                wait_timeout=self.settings.max_wait,
                webhooks=self._webhooks,
            )
            if self.settings.remember_durations:
                _duration_cache.restore(client.durations, self._durations_key(client))
            self._clients[loop] = client
        return client

    def _durations_key(self, client: AsyncMAIImageClient) -> str:
        return self.settings.durations_key or client.base_url

    async def remember(self, client: AsyncMAIImageClient, *, now: bool = False) -> None:
        """Save what ``client`` has learned about job durations (if the settings say so): at
        most every :data:`STORE_EVERY` seconds (a busy server finishes many jobs a second),
        and at once with ``now`` (when the server stops)."""
        if not self.settings.remember_durations or client is self._given:
            return
        last = self._stored_at.get(id(client))
        if not now and last is not None and time.monotonic() - last < STORE_EVERY:
            return
        self._stored_at[id(client)] = time.monotonic()
        # File I/O off the event loop: other calls keep being served meanwhile.
        await anyio.to_thread.run_sync(
            _duration_cache.store, client.durations, self._durations_key(client)
        )

    async def aclose(self) -> None:
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            if id(client) in self._stored_at:  # learned since the last save: keep it
                await self.remember(client, now=True)
            await client.aclose()
        self._stored_at.clear()


def preview_budget(settings: Settings, started: float | None) -> float:
    """Seconds previews may take: what is left of the call's wait (within fixed bounds)."""
    if started is None:
        left = settings.max_wait
    else:
        left = settings.max_wait - (time.monotonic() - started)
    return min(max(left, 0.0), MAX_PREVIEW_TIME)


async def answer(
    outcome: Outcome,
    settings: Settings,
    *,
    started: float | None = None,
    note: str | None = None,
) -> CallToolResult:
    """The tool result for ``outcome``: text (+ ``note``), structured answer, links, previews.

    Args:
        started: ``time.monotonic()`` when the call began (previews fit in what is left).
        note: a line added after the answer (for example that an earlier job was continued).
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
                    budget=preview_budget(settings, started),
                    request_id=result.request_id,
                    saved=outcome.saved,
                )
            )
    return CallToolResult(
        content=content, structured_content=structured(outcome).model_dump(mode="json")
    )
