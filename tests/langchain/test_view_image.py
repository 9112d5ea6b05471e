"""view_image as a LangChain tool: standard image content blocks in the ToolMessage (sync and
async), only images of the caller's jobs, "still running" as text, no base64 in any text."""

from __future__ import annotations

import base64
import io
import json
import re
from typing import Any

import httpx
import pytest
from langchain_core.messages import ToolMessage
from PIL import Image
from pydantic import SecretStr

from mai_tools import (
    GenerateRequest,
    MAIImageClient,
    MAIImageGenerateTool,
    MAIImageViewTool,
    PollPolicy,
)
from mai_tools._previews import VIEW_BUDGET
from mai_tools.emulator import EmulatorConfig, RunningEmulator, run_emulator
from tests.langchain.test_langchain_tools import _acall, _call
from tests.support.fakes import BASE, KEY, ok, queued
from tests.support.sockets import quiet_port

BASE64_RUN = re.compile(r"[A-Za-z0-9+/=]{80,}")


@pytest.fixture(autouse=True)
def _emulator_env(mai_emulator: RunningEmulator) -> RunningEmulator:
    """The tools reach the pytest plugin's emulator through PIXAZO_* variables."""
    return mai_emulator


def _made(**tool: Any) -> tuple[str, list[str]]:
    message = _call(MAIImageGenerateTool(**tool), {"prompt": "a tiny robot", "num_images": 2})
    assert message.status == "success", message.content
    return message.artifact.request_id, list(message.artifact.image_urls)


def _texts(message: ToolMessage) -> str:
    """Every text a model reads in ``message``: none may carry image data."""
    if isinstance(message.content, str):
        text = message.content
    else:
        text = "\n".join(
            b["text"] if isinstance(b, dict) and b.get("type") == "text" else str(b)
            for b in message.content
            if not (isinstance(b, dict) and b.get("type") == "image")
        )
    assert not BASE64_RUN.search(text), text
    return text


def _image(message: ToolMessage) -> tuple[dict[str, Any], Image.Image]:
    assert message.status == "success", message.content
    assert isinstance(message.content, list)
    kinds = [b["type"] for b in message.content if isinstance(b, dict)]
    assert kinds == ["text", "image"]
    block = message.content[1]
    assert isinstance(block, dict)
    assert set(block) == {"type", "base64", "mime_type"}  # langchain-core's standard block
    assert block["mime_type"] == "image/jpeg"
    decoded = Image.open(io.BytesIO(base64.b64decode(block["base64"])))
    assert decoded.format == "JPEG"
    return block, decoded


def test_view_image_answers_with_a_standard_image_block() -> None:
    request_id, _ = _made()
    message = _call(MAIImageViewTool(), {"request_id": request_id, "index": 2})
    block, image = _image(message)
    assert max(image.size) <= 384
    assert len(block["base64"]) <= VIEW_BUDGET
    assert f"Image 2 of 2 of request_id {request_id} (1024x1024 px)" in _texts(message)
    artifact = message.artifact
    assert artifact["request_id"] == request_id
    assert artifact["index"] == 2
    assert artifact["original_size"] == [1024, 1024]
    assert block["base64"] not in json.dumps(artifact)


async def test_view_image_async_by_url() -> None:
    request_id, urls = _made()
    message = await _acall(MAIImageViewTool(), {"url": urls[1], "size": 128})
    _, image = _image(message)
    assert max(image.size) <= 128
    assert f"Image 2 of 2 of request_id {request_id}" in _texts(message)


def test_a_plain_invoke_returns_the_content_blocks() -> None:
    request_id, _ = _made()
    content = MAIImageViewTool().invoke({"request_id": request_id})
    assert isinstance(content, list)
    assert [b["type"] for b in content] == ["text", "image"]


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_a_url_no_job_of_the_caller_returned_is_refused_unfetched(mode: str) -> None:
    tool = MAIImageViewTool()
    with quiet_port() as listener:
        args = {"url": listener.url("/internal/admin.png")}
        message = _call(tool, args) if mode == "sync" else await _acall(tool, args)
        assert listener.untouched()
    assert message.status == "error"
    assert "is not an image one of your jobs returned" in _texts(message)


def test_without_a_job_book_only_a_request_id_names_an_image() -> None:
    request_id, urls = _made(job_book="off")
    tool = MAIImageViewTool(job_book="off")
    refused = _call(tool, {"url": urls[0]})
    assert refused.status == "error"
    assert "Pass the request_id" in _texts(refused)
    _image(_call(tool, {"request_id": request_id, "url": urls[0]}))


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_a_running_job_is_said_in_text_not_as_an_error(mode: str) -> None:
    config = EmulatorConfig(api_keys=(KEY,), min_duration=600, max_duration=600)
    with run_emulator(config) as slow:
        with MAIImageClient(KEY, base_url=slow.base_url, job_book="off") as api:
            job = api.submit(GenerateRequest(prompt="a slow one"))
        tool = MAIImageViewTool(api_key=SecretStr(KEY), base_url=slow.base_url)
        args = {"request_id": job.request_id}
        message = _call(tool, args) if mode == "sync" else await _acall(tool, args)
    assert message.status == "success"
    text = _texts(message)
    assert isinstance(message.content, str)
    assert "still running" in text
    assert f"get_image_job with request_id {job.request_id}" in text


def test_inline_images_never_reach_a_text_or_the_artifact() -> None:
    """The no-base64 rule of every answer, for view_image: a job whose images came back inline
    (data URIs) is shown as one image block, its data nowhere else."""
    raw = io.BytesIO()
    Image.new("RGB", (64, 64), (10, 200, 30)).save(raw, "PNG")
    payload = base64.b64encode(raw.getvalue()).decode()
    uri = "data:image/png;base64," + payload

    def gateway(request: httpx.Request) -> httpx.Response:
        return queued() if request.method == "POST" else ok("COMPLETED", urls=[uri])

    client = MAIImageClient(
        KEY,
        base_url=BASE,
        http_client=httpx.Client(transport=httpx.MockTransport(gateway)),
        poll_policy=PollPolicy.immediate(),
        job_book="off",
    )
    with client:
        job = client.run(GenerateRequest(prompt="inline"))
        message = _call(MAIImageViewTool(client=client), {"request_id": job.request_id})
    block, _ = _image(message)
    text = _texts(message)
    assert payload[:64] not in text
    artifact = json.dumps(message.artifact)
    assert payload[:64] not in artifact
    assert block["base64"][:64] not in artifact
