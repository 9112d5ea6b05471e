"""A scripted fake gateway over httpx.MockTransport, and a harness that runs the same scenario
through the sync and the async client with a fake clock (no test sleeps for real)."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, overload

import httpx

from mai_tools import (
    AsyncMAIImageClient,
    FakeClock,
    ImageResult,
    Job,
    JobStatus,
    MAIImageClient,
    RetryPolicy,
)

KEY = "sk-canary-0123456789abcdef"
BASE = "https://gateway.pixazo.ai"
RID = "microsoft-mai-image-2-5_019d0000-0000-7000-8000-000000000001"
EDIT_RID = "microsoft-mai-image-2-5-edit_019d0000-0000-7000-8000-000000000002"
PNG_1PX = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082"
)

Reply = httpx.Response | Exception | Callable[[httpx.Request], httpx.Response]


def status_body(
    status: str, request_id: str = RID, *, urls: list[str] | None = None, **extra: Any
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "request_id": request_id,
        "status": status,
        "model_id": "microsoft-mai-image-2-5",
        "error": None,
        "output": None,
    }
    if status == "COMPLETED":
        body["output"] = {
            "media_url": urls or [f"https://cdn.example.com/v1/{request_id}/output.png"],
            "media_type": "image/png",
        }
    body.update(extra)
    return body


def queued(request_id: str = RID, polling_url: str | None = None) -> httpx.Response:
    return httpx.Response(
        202,
        json={
            "request_id": request_id,
            "status": "QUEUED",
            "polling_url": polling_url or f"{BASE}/v2/requests/status/{request_id}",
        },
    )


def ok(status: str, request_id: str = RID, **kw: Any) -> httpx.Response:
    return httpx.Response(200, json=status_body(status, request_id, **kw))


@dataclass
class Gateway:
    """Answers POSTs from `submits` and GETs from `polls`, in order (the last one repeats)."""

    submits: list[Reply] = field(default_factory=lambda: [queued()])
    polls: list[Reply] = field(default_factory=lambda: [ok("PROCESSING"), ok("COMPLETED")])
    downloads: dict[str, httpx.Response] = field(default_factory=dict)
    requests: list[httpx.Request] = field(default_factory=list)
    clock: FakeClock | None = None
    request_times: list[float] = field(default_factory=list)

    def _next(self, script: list[Reply]) -> Reply:
        return script.pop(0) if len(script) > 1 else script[0]

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.clock is not None:
            self.request_times.append(self.clock.monotonic())
        if request.url.host != "gateway.pixazo.ai":
            if str(request.url) in self.downloads:
                return self.downloads[str(request.url)]
            return httpx.Response(404, text="not here")
        reply = self._next(self.submits if request.method == "POST" else self.polls)
        if isinstance(reply, Exception):
            raise reply
        if callable(reply):
            return reply(request)
        return reply

    @property
    def posts(self) -> list[httpx.Request]:
        return [r for r in self.requests if r.method == "POST"]

    @property
    def gets(self) -> list[httpx.Request]:
        return [r for r in self.requests if r.method == "GET"]

    def body(self, index: int = 0) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.posts[index].content)
        return data


_Waits = Literal["generate", "edit", "wait", "run", "save"]
_Submits = Literal["submit", "submit_generate", "submit_edit"]

FAST_RETRY = RetryPolicy(initial_backoff=0.1, max_backoff=1.0, jitter=0.0)


@dataclass
class Harness:
    """Runs client calls through the sync or the async client (same scenario, same fakes).

    In async mode every call of one test runs on the same event loop (the client's connection
    pool belongs to it); :meth:`close` ends the clients and the loop.
    """

    mode: str
    gateway: Gateway
    clock: FakeClock
    client_kwargs: dict[str, Any] = field(default_factory=dict)
    _sync: MAIImageClient | None = None
    _async: AsyncMAIImageClient | None = None
    _loop: asyncio.AbstractEventLoop | None = None

    def kwargs(self) -> dict[str, Any]:
        base: dict[str, Any] = {
            "api_key": KEY,
            "base_url": BASE,
            "clock": self.clock,
            "retry_policy": FAST_RETRY,
        }
        base.update(self.client_kwargs)
        return base

    @property
    def sync_client(self) -> MAIImageClient:
        if self._sync is None:
            transport = httpx.MockTransport(self.gateway.handler)
            self._sync = MAIImageClient(
                http_client=httpx.Client(transport=transport), **self.kwargs()
            )
        return self._sync

    @property
    def async_client(self) -> AsyncMAIImageClient:
        if self._async is None:
            transport = httpx.MockTransport(self.gateway.handler)
            self._async = AsyncMAIImageClient(
                http_client=httpx.AsyncClient(transport=transport), **self.kwargs()
            )
        return self._async

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
        return self._loop

    @overload
    def call(
        self, method: Literal["generate", "edit", "wait", "run"], *args: Any, **kw: Any
    ) -> ImageResult: ...
    @overload
    def call(self, method: _Submits, *args: Any, **kw: Any) -> Job: ...
    @overload
    def call(self, method: Literal["save"], *args: Any, **kw: Any) -> list[Path]: ...
    @overload
    def call(self, method: Literal["get_status"], *args: Any, **kw: Any) -> JobStatus: ...
    def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """``client.<method>(*args, **kwargs)`` on this harness's client, sync or async."""
        if self.mode == "sync":
            return getattr(self.sync_client, method)(*args, **kwargs)

        async def run() -> Any:
            return await getattr(self.async_client, method)(*args, **kwargs)

        return self.loop.run_until_complete(run())

    def close(self) -> None:
        if self._sync is not None:
            self._sync.close()
        if self._async is not None:
            self.loop.run_until_complete(self._async.aclose())
        if self._loop is not None:
            self._loop.close()


class FullDisk:
    """Stands in for ``os.fdopen`` of a file on a full disk: every write fails (ENOSPC-like)."""

    def __init__(self, fd: int, mode: str) -> None:
        os.close(fd)

    def write(self, data: bytes) -> int:
        raise OSError(27, "File too large")

    def close(self) -> None:
        pass
