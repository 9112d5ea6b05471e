"""The batch against hostile input: poisoned media URLs, hostile JSONL lines, tampered journal
rows, a journal that fails after a POST, ``.part`` files left by a kill -9, a torn manifest.

The gateway here is scripted (:class:`httpx.MockTransport`): it answers what no honest gateway
would, so every run is deterministic and needs no sleeping.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import httpx
import pytest

from mai_tools import AsyncMAIImageClient
from mai_tools.batch import (
    BatchItem,
    BatchRun,
    BatchSummary,
    LineOutcome,
    LineStatus,
    _submit,
)
from mai_tools.batch._input import request_of as request_of_item
from tests.batch.conftest import FAST_POLL, FAST_RETRY
from tests.support.fakes import BASE, KEY, PNG_1PX

BAD_URL = "http://[::1/x.png"
CDN = "https://cdn.example.com"


class Gateway:
    """One job per POST (``rid-1``, ``rid-2``, ...), COMPLETED at the first status read with
    the URLs ``urls_for`` gives for the prompt; the CDN serves a 1-pixel PNG."""

    def __init__(self, urls_for: dict[str, list[str]] | None = None) -> None:
        self.urls_for = urls_for or {}
        self.prompts: dict[str, str] = {}
        self.posts = 0

    def handler(self, request: httpx.Request) -> httpx.Response:
        if request.url.host != "gateway.pixazo.ai":
            return httpx.Response(200, content=PNG_1PX, headers={"content-type": "image/png"})
        if request.method == "POST":
            self.posts += 1
            rid = f"rid-{self.posts}"
            self.prompts[rid] = json.loads(request.content)["prompt"]
            return httpx.Response(
                202,
                json={
                    "request_id": rid,
                    "status": "QUEUED",
                    "polling_url": f"{BASE}/v2/requests/status/{rid}",
                },
            )
        rid = request.url.path.rsplit("/", 1)[-1]
        prompt = self.prompts[rid]
        urls = self.urls_for.get(prompt, [f"{CDN}/{rid}/output.png"])
        body = {
            "request_id": rid,
            "status": "COMPLETED",
            "model_id": "microsoft-mai-image-2-5",
            "error": None,
            "output": {"media_url": urls, "media_type": "image/png"},
        }
        return httpx.Response(200, json=body)


async def run(
    gateway: Gateway, items: list[Any], out: Path, **options: Any
) -> tuple[dict[str, LineOutcome], BatchSummary]:
    transport = httpx.MockTransport(gateway.handler)
    options.setdefault("retry_policy", FAST_RETRY)
    async with (
        httpx.AsyncClient(transport=transport) as downloads,
        AsyncMAIImageClient(
            KEY,
            base_url=BASE,
            http_client=httpx.AsyncClient(transport=transport),
            retry_policy=FAST_RETRY,
            poll_policy=FAST_POLL,
        ) as client,
        BatchRun(client, items, out, download_client=downloads, **options) as batch,
    ):
        outcomes = {o.id: o async for o in batch}
        return outcomes, batch.summary()


# ---------------------------------------------------------------- M7: a poisoned media URL


async def test_a_malformed_media_url_is_that_lines_save_error_and_reruns_go_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    gateway = Gateway({"a poisoned prompt": [BAD_URL]})
    items = [
        {"id": "good", "prompt": "a fine prompt"},
        {"id": "bad", "prompt": "a poisoned prompt"},
    ]
    with caplog.at_level(logging.ERROR, logger="asyncio"):
        for _ in range(3):  # the first run and two reruns alike
            outcomes, summary = await run(gateway, items, tmp_path)
            assert outcomes["good"].saved
            bad = outcomes["bad"]
            assert bad.status is LineStatus.COMPLETED
            assert bad.image_urls == (BAD_URL,)
            assert bad.request_id == "rid-2"
            assert bad.error is not None
            assert "not saved" in bad.error
            assert summary.unsaved == 1
            lines = {
                d["id"]: d for d in map(json.loads, summary.manifest.read_text().split("\n")[:-1])
            }
            assert lines["bad"]["status"] == "COMPLETED"
            assert "not saved" in lines["bad"]["error"]
    assert gateway.posts == 2  # nothing was sent again
    assert "exception was never retrieved" not in caplog.text


async def test_an_unexpected_error_in_one_lines_step_is_that_lines_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def request_of(item: BatchItem, *args: Any, **kwargs: Any) -> Any:
        if item.id == "odd":
            raise RuntimeError("something nobody foresaw")
        return request_of_item(item, *args, **kwargs)

    monkeypatch.setattr(_submit, "request_of", request_of)
    gateway = Gateway()
    items = [{"id": "odd", "prompt": "an odd prompt"}, {"id": "fine", "prompt": "a fine prompt"}]
    outcomes, summary = await run(gateway, items, tmp_path)
    assert outcomes["fine"].saved
    assert outcomes["odd"].status is LineStatus.QUEUED
    assert outcomes["odd"].error == (
        "not submitted: unexpected error (RuntimeError: something nobody foresaw); rerun to retry"
    )
    assert summary.not_submitted == 1
    assert gateway.posts == 1
    monkeypatch.undo()
    outcomes, summary = await run(gateway, items, tmp_path)  # the rerun sends it
    assert summary.clean
