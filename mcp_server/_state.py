"""What a running server holds: its one client, made when the server starts (its lifespan).

The MCP SDK runs a server's lifespan once per run (stdio, the HTTP app, an in-process
``Client(server)``) and hands what it yields to every request as the lifespan context, typed:
tools reach the client through ``ctx.request_context.lifespan_context`` (a :class:`ServerState`).
The client is closed, and what it learned about job durations saved, when the run ends.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import anyio

from mai_tools import AsyncMAIImageClient, MAIImageError, WebhookReceiver, _duration_cache

from ._settings import Settings

if TYPE_CHECKING:
    from mcp.server.mcpserver import MCPServer

STORE_EVERY = 10.0
"""Seconds between two saves of the learned job durations (and one more when the server stops)."""


@dataclass
class ServerState:
    """The lifespan context: the server's client, or why it has none (no key: each call then
    says what to set, and the server still starts and lists its tools).

    Attributes:
        owned: the server made the client (it closes it, and saves what it learned); a client
            given to ``create_server(client=...)`` is the caller's.
    """

    settings: Settings
    client: AsyncMAIImageClient | None
    problem: MAIImageError | None = None
    owned: bool = True
    _stored_at: float | None = field(default=None, repr=False)

    @classmethod
    def open(
        cls,
        settings: Settings,
        client: AsyncMAIImageClient | None = None,
        webhooks: WebhookReceiver | None = None,
    ) -> ServerState:
        if client is not None:
            return cls(settings, client, owned=False)
        key = settings.api_key
        try:
            made = AsyncMAIImageClient(
                None if key is None else key.get_secret_value(),
                base_url=settings.base_url,
                wait_timeout=settings.max_wait,
                webhooks=webhooks,
            )
        except MAIImageError as exc:
            return cls(settings, None, problem=exc)
        if settings.remember_durations:
            _duration_cache.restore(made.durations, settings.durations_key or made.base_url)
        return cls(settings, made)

    def api(self) -> AsyncMAIImageClient:
        """The client.

        Raises:
            MAIImageError: there is none (no key, a bad base URL); its message says what to set.
        """
        if self.client is None:
            assert self.problem is not None
            raise self.problem.with_traceback(None)
        return self.client

    async def remember(self, *, now: bool = False) -> None:
        """Save what the client has learned about job durations (if the settings say so): at
        most every :data:`STORE_EVERY` seconds (a busy server finishes many jobs a second),
        and at once with ``now`` (when the server stops)."""
        client = self.client
        if client is None or not self.owned or not self.settings.remember_durations:
            return
        last = self._stored_at
        if not now and last is not None and time.monotonic() - last < STORE_EVERY:
            return
        self._stored_at = time.monotonic()
        key = self.settings.durations_key or client.base_url
        # File I/O off the event loop: other calls keep being served meanwhile.
        await anyio.to_thread.run_sync(_duration_cache.store, client.durations, key)

    async def aclose(self) -> None:
        if self.client is None or not self.owned:
            return
        if self._stored_at is not None:  # learned since the last save: keep it
            await self.remember(now=True)
        await self.client.aclose()


def lifespan(
    settings: Settings,
    client: AsyncMAIImageClient | None = None,
    webhooks: WebhookReceiver | None = None,
) -> Callable[[MCPServer[ServerState]], AbstractAsyncContextManager[ServerState]]:
    """The server's lifespan: one :class:`ServerState` per run, closed when the run ends."""

    @asynccontextmanager
    async def run(server: MCPServer[ServerState]) -> AsyncIterator[ServerState]:
        state = ServerState.open(settings, client, webhooks)
        try:
            yield state
        finally:
            await state.aclose()

    return run
