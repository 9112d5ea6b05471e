"""The LangChain tools: standard suites, ToolCall -> ToolMessage, errors, progress, concurrency."""

from __future__ import annotations

import asyncio
import base64
import io
import time
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import ToolMessage
from langchain_core.tools import BaseTool
from langchain_tests.integration_tests import ToolsIntegrationTests
from langchain_tests.unit_tests import ToolsUnitTests
from PIL import Image
from pydantic import BaseModel, SecretStr

import mai_tools
from mai_tools import (
    AsyncMAIImageClient,
    AuthenticationError,
    ConfigurationError,
    GenerateRequest,
    InsufficientBalanceError,
    MAIImageClient,
    MAIImageEditTool,
    MAIImageGenerateTool,
    MAIImageJobTool,
    MAIImageToolkit,
    MAIImageViewTool,
)
from mai_tools.emulator import EmulatorConfig, RunningEmulator, run_emulator
from mai_tools.langchain import STATUS_EVENT

PNG_URI_PREFIX = "data:image/png;base64,"


@pytest.fixture(autouse=True)
def _emulator_env(mai_emulator: RunningEmulator) -> RunningEmulator:
    """Every test here talks to the pytest plugin's emulator through PIXAZO_* variables."""
    return mai_emulator


def _call(tool: BaseTool, args: dict[str, Any], call_id: str = "call_1") -> ToolMessage:
    message = tool.invoke({"type": "tool_call", "id": call_id, "name": tool.name, "args": args})
    assert isinstance(message, ToolMessage)
    return message


async def _acall(tool: BaseTool, args: dict[str, Any], call_id: str = "call_1") -> ToolMessage:
    message = await tool.ainvoke(
        {"type": "tool_call", "id": call_id, "name": tool.name, "args": args}
    )
    assert isinstance(message, ToolMessage)
    return message


# --------------------------------------------------------------------------- standard suites


class TestGenerateToolUnit(ToolsUnitTests):
    @property
    def tool_constructor(self) -> type[BaseTool]:
        return MAIImageGenerateTool

    @property
    def tool_invoke_params_example(self) -> dict[str, Any]:
        return {"prompt": "a red kite over a beach", "aspect_ratio": "16:9"}


class TestGenerateToolIntegration(ToolsIntegrationTests):
    @property
    def tool_constructor(self) -> type[BaseTool]:
        return MAIImageGenerateTool

    @property
    def tool_invoke_params_example(self) -> dict[str, Any]:
        return {"prompt": "a red kite over a beach", "aspect_ratio": "16:9"}


_EDIT_EXAMPLE = {
    "prompt": "make it night",
    "image": PNG_URI_PREFIX
    + "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGNgAAACAAFUok9dAAAAAElFTkSuQmCC",
}


class TestEditToolUnit(ToolsUnitTests):
    @property
    def tool_constructor(self) -> type[BaseTool]:
        return MAIImageEditTool

    @property
    def tool_invoke_params_example(self) -> dict[str, Any]:
        return dict(_EDIT_EXAMPLE)


class TestEditToolIntegration(ToolsIntegrationTests):
    @property
    def tool_constructor(self) -> type[BaseTool]:
        return MAIImageEditTool

    @property
    def tool_invoke_params_example(self) -> dict[str, Any]:
        return dict(_EDIT_EXAMPLE)


class TestJobToolUnit(ToolsUnitTests):
    @property
    def tool_constructor(self) -> type[BaseTool]:
        return MAIImageJobTool

    @property
    def tool_invoke_params_example(self) -> dict[str, Any]:
        return {"request_id": "microsoft-mai-image-2-5_example"}


class TestJobToolIntegration(ToolsIntegrationTests):
    @property
    def tool_constructor(self) -> type[BaseTool]:
        return MAIImageJobTool

    @property
    def tool_invoke_params_example(self) -> dict[str, Any]:
        # A real job on the test's emulator (PIXAZO_* point at it), for the tool to wait on.
        with MAIImageClient() as client:
            return {
                "request_id": client.submit(
                    GenerateRequest(prompt="a job to fetch later")
                ).request_id
            }


class TestViewToolUnit(ToolsUnitTests):
    @property
    def tool_constructor(self) -> type[BaseTool]:
        return MAIImageViewTool

    @property
    def tool_invoke_params_example(self) -> dict[str, Any]:
        return {"request_id": "microsoft-mai-image-2-5_example", "index": 1}


class TestViewToolIntegration(ToolsIntegrationTests):
    @property
    def tool_constructor(self) -> type[BaseTool]:
        return MAIImageViewTool

    @property
    def tool_invoke_params_example(self) -> dict[str, Any]:
        # A finished job on the test's emulator, for the tool to look at.
        with MAIImageClient() as client:
            done = client.run(GenerateRequest(prompt="a job to look at"))
        return {"request_id": done.request_id}


# --------------------------------------------------------------------------- behaviour


def _schema(tool: BaseTool) -> dict[str, Any]:
    schema = tool.tool_call_schema
    assert isinstance(schema, type)
    assert issubclass(schema, BaseModel)
    return schema.model_json_schema()


def _text(message: ToolMessage) -> str:
    assert isinstance(message.content, str)  # plain strings, never content blocks
    return message.content


def test_names_and_schemas() -> None:
    tools = MAIImageToolkit().get_tools()
    assert [t.name for t in tools] == [
        "generate_image",
        "edit_image",
        "get_image_job",
        "view_image",
    ]
    gen = _schema(tools[0])["properties"]
    edit = _schema(tools[1])["properties"]
    assert gen["prompt"]["minLength"] == 3
    assert gen["prompt"]["maxLength"] == 5000
    assert gen["num_images"]["minimum"] == 1
    assert gen["num_images"]["maximum"] == 4
    assert "21:9" in gen["aspect_ratio"]["enum"]
    assert "21:9" not in edit["aspect_ratio"]["enum"]
    assert set(edit) == {"prompt", "image", "num_images", "aspect_ratio", "output_format"}
    assert (
        gen["prompt"]["description"]
        == mai_tools.GenerateRequest.model_json_schema()["properties"]["prompt"]["description"]
    )


def test_tool_call_gives_urls_first_and_the_artifact(mai_emulator: RunningEmulator) -> None:
    message = _call(MAIImageGenerateTool(), {"prompt": "a tiny robot", "num_images": 2})
    assert message.status == "success"
    assert isinstance(message.content, str)
    lines = message.content.splitlines()
    assert lines[0].startswith(mai_emulator.base_url + "/files/")
    assert lines[1].startswith(mai_emulator.base_url + "/files/")
    assert lines[2].startswith("request_id: microsoft-mai-image-2-5_")
    artifact = message.artifact
    assert artifact.status == "COMPLETED"
    assert artifact.image_urls == lines[:2]
    assert artifact.saved_paths == []
    assert message.tool_call_id == "call_1"


def test_plain_invoke_returns_content() -> None:
    content = MAIImageGenerateTool().invoke({"prompt": "just the text"})
    assert isinstance(content, str)
    assert "request_id:" in content


def test_output_dir_saves_files(tmp_path: Path) -> None:
    message = _call(MAIImageGenerateTool(output_dir=tmp_path), {"prompt": "save me"})
    (saved,) = tmp_path.iterdir()
    assert f"saved: {saved}" in message.content
    assert message.artifact.saved_paths == [str(saved)]


def test_a_failed_save_still_returns_the_finished_job(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("the output directory cannot be created here")
    for message in (
        _call(MAIImageGenerateTool(output_dir=blocker), {"prompt": "done but not saved"}),
        asyncio.run(
            _acall(MAIImageGenerateTool(output_dir=blocker), {"prompt": "done but not saved"})
        ),
    ):
        # The job is done and charged: the model gets its URLs, not a cue to run it again.
        assert message.status == "success"
        assert _text(message).splitlines()[0].startswith("http")
        assert "not saved to disk (Cannot create directory" in _text(message)
        assert message.artifact.status == "COMPLETED"
        assert "Cannot create directory" in message.artifact.save_error


def test_edit_of_generated_url() -> None:
    first = _call(MAIImageGenerateTool(), {"prompt": "a plain house"})
    url = _text(first).splitlines()[0]
    edited = _call(MAIImageEditTool(), {"prompt": "add a garden", "image": url})
    assert edited.status == "success"
    assert "microsoft-mai-image-2-5-edit_" in edited.content


def _png_file(path: Path) -> Path:
    Image.new("RGB", (64, 32), (1, 2, 3)).save(path)
    return path


def test_local_paths_only_inside_allowed_dirs(tmp_path: Path) -> None:
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    inside = _png_file(allowed / "in.png")
    outside = _png_file(tmp_path / "outside.png")
    (allowed / "link.png").symlink_to(outside)
    secret = tmp_path / "id_rsa"
    secret.write_text("-----BEGIN OPENSSH PRIVATE KEY-----")
    (allowed / "key").symlink_to(secret)
    tool = MAIImageEditTool(allowed_dirs=(allowed,))
    assert _call(tool, {"prompt": "brighten it", "image": str(inside)}).status == "success"
    for bad in [
        str(outside),
        str(allowed / ".." / "outside.png"),
        str(allowed / "link.png"),
        str(allowed / "key"),
        str(secret),
    ]:
        message = _call(tool, {"prompt": "brighten it", "image": bad})
        assert message.status == "error", bad
        assert "allowed" in message.content
    not_image = allowed / "notes.png"
    not_image.write_text("hello")
    message = _call(tool, {"prompt": "brighten it", "image": str(not_image)})
    assert message.status == "error"
    assert "not a PNG" in message.content
    default = _call(MAIImageEditTool(), {"prompt": "brighten it", "image": str(inside)})
    assert default.status == "error"
    assert "not allowed" in default.content


@pytest.mark.parametrize(
    ("tool", "args", "expected"),
    [
        (MAIImageGenerateTool, {"prompt": "hi"}, "prompt"),
        (MAIImageGenerateTool, {"prompt": "a cat", "num_images": 9}, "num_images"),
        (
            MAIImageEditTool,
            {"prompt": "a cat", "image": "https://x.test/a.png", "aspect_ratio": "21:9"},
            "aspect_ratio",
        ),
        (MAIImageGenerateTool, {"prompt": "a [fail] cat"}, "Rephrase"),
        (MAIImageGenerateTool, {"prompt": "an [error] cat"}, "not charged"),
        (MAIImageEditTool, {"prompt": "a cat", "image": "ftp://x/y.png"}, "scheme"),
        (MAIImageJobTool, {"request_id": "../../etc/passwd"}, "request id"),
        (MAIImageJobTool, {"request_id": "microsoft-mai-image-2-5_nope"}, "404"),
    ],
)
def test_errors_the_model_can_fix_are_error_messages(
    tool: type[BaseTool], args: dict[str, Any], expected: str
) -> None:
    message = _call(tool(), args)
    assert message.status == "error"
    assert expected in message.content


def test_bad_request_is_an_error_message(mai_emulator: RunningEmulator) -> None:
    uri = "data:image/png;base64," + base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * 20).decode()
    message = _call(MAIImageEditTool(), {"prompt": "fix", "image": uri})
    assert message.status in ("success", "error")  # the emulator decides; never a crash


def test_timeout_tells_the_model_to_call_get_image_job() -> None:
    with run_emulator(EmulatorConfig(min_duration=1.5, max_duration=1.5)) as slow:
        kwargs: dict[str, Any] = {
            "api_key": SecretStr(slow.api_key),
            "base_url": slow.base_url,
            "wait_timeout": 0.3,
        }
        message = _call(MAIImageGenerateTool(**kwargs), {"prompt": "takes a while"})
        assert message.status == "success"
        assert "get_image_job" in message.content
        rid = message.artifact.request_id
        job = _call(MAIImageJobTool(**{**kwargs, "wait_timeout": 10}), {"request_id": rid})
        assert job.status == "success"
        assert job.artifact.status == "COMPLETED"
        assert _text(job).splitlines()[0].startswith(slow.base_url)


@pytest.mark.parametrize("given", ["sync", "async"])
def test_wait_timeout_holds_with_a_client_given(given: str) -> None:
    with run_emulator(EmulatorConfig(min_duration=60, max_duration=60)) as slow:

        async def run() -> ToolMessage:
            kwargs: dict[str, Any] = {"wait_timeout": 0.3}
            if given == "sync":
                with MAIImageClient(slow.api_key, base_url=slow.base_url) as sync_client:
                    kwargs["client"] = sync_client
                    return _call(MAIImageGenerateTool(**kwargs), {"prompt": "takes a while"})
            async with AsyncMAIImageClient(slow.api_key, base_url=slow.base_url) as client:
                kwargs["async_client"] = client
                return await _acall(MAIImageGenerateTool(**kwargs), {"prompt": "takes a while"})

        started = time.monotonic()
        message = asyncio.run(run())
        assert "get_image_job" in message.content  # the wait was cut off by its cap
        assert time.monotonic() - started < 30  # the 0.3 s cap, not the 60 s job


def test_application_errors_raise(
    mai_emulator: RunningEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PIXAZO_API_KEY")
    with pytest.raises(ConfigurationError, match="PIXAZO_API_KEY"):
        _call(MAIImageGenerateTool(), {"prompt": "no key"})
    bad = MAIImageGenerateTool(api_key=SecretStr("sk-canary-not-valid"))
    with pytest.raises(AuthenticationError) as info:
        _call(bad, {"prompt": "bad key"})
    assert "sk-canary-not-valid" not in str(info.value)
    mai_emulator.control.set_faults(insufficient_balance_keys=(mai_emulator.api_key,))
    monkeypatch.setenv("PIXAZO_API_KEY", mai_emulator.api_key)
    with pytest.raises(InsufficientBalanceError):
        _call(MAIImageGenerateTool(), {"prompt": "no money"})


def test_key_never_in_repr_or_output() -> None:
    tool = MAIImageGenerateTool(api_key=SecretStr("sk-canary-visible?"))
    assert "sk-canary" not in repr(tool)
    assert "sk-canary" not in str(tool.model_dump())
    assert "sk-canary" not in repr(MAIImageToolkit(api_key=SecretStr("sk-canary-x")))


class _Events(BaseCallbackHandler):
    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def on_custom_event(
        self,
        name: str,
        data: Any,
        *,
        run_id: UUID,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        if name == STATUS_EVENT:
            self.events.append(data)


def test_progress_as_callback_events() -> None:
    handler = _Events()
    MAIImageGenerateTool().invoke({"prompt": "progress please"}, config={"callbacks": [handler]})
    statuses = [e["status"] for e in handler.events]
    assert statuses[0] == "QUEUED"
    assert statuses[-1] == "COMPLETED"
    assert all(e["tool"] == "generate_image" for e in handler.events)
    assert all(e["request_id"].startswith("microsoft-mai-image-2-5_") for e in handler.events)


async def test_progress_in_astream_events() -> None:
    statuses = [
        event["data"]["status"]  # type: ignore[typeddict-item]  # custom events carry our dict
        async for event in MAIImageGenerateTool().astream_events(
            {"prompt": "stream progress"}, version="v2"
        )
        if event["event"] == "on_custom_event" and event["name"] == STATUS_EVENT
    ]
    assert statuses[0] == "QUEUED"
    assert statuses[-1] == "COMPLETED"


def test_progress_in_langgraph_custom_stream() -> None:
    from langgraph.graph import END, START, StateGraph
    from typing_extensions import TypedDict

    class State(TypedDict):
        prompt: str
        result: str

    tool = MAIImageGenerateTool()

    def draw(state: State) -> dict[str, str]:
        return {"result": str(tool.invoke({"prompt": state["prompt"]}))}

    graph = StateGraph(State)
    graph.add_node("draw", draw)
    graph.add_edge(START, "draw")
    graph.add_edge("draw", END)
    chunks = list(
        graph.compile().stream({"prompt": "graph progress", "result": ""}, stream_mode="custom")
    )
    statuses = [c[STATUS_EVENT]["status"] for c in chunks if STATUS_EVENT in c]
    assert statuses[0] == "QUEUED"
    assert statuses[-1] == "COMPLETED"


async def test_thirty_concurrent_ainvokes_run_concurrently() -> None:
    with run_emulator(EmulatorConfig(min_duration=1.0, max_duration=1.0)) as emu:
        tool = MAIImageGenerateTool(api_key=SecretStr(emu.api_key), base_url=emu.base_url)
        start = time.monotonic()
        messages = await asyncio.gather(
            *(_acall(tool, {"prompt": f"parallel {i}"}, f"c{i}") for i in range(30))
        )
        elapsed = time.monotonic() - start
        assert emu.control.stats().jobs_created == 30
    assert all(m.status == "success" for m in messages)
    # Thirty 1-second jobs: about the time of one (sequential would take 30 s). The bound sits
    # halfway, so a busy machine's slowness cannot be mistaken for calls run one by one.
    assert elapsed < 15


def test_batch_and_abatch() -> None:
    tool = MAIImageGenerateTool()
    results = tool.batch([{"prompt": "batch one"}, {"prompt": "batch two"}])
    assert all("request_id:" in str(r) for r in results)
    aresults = asyncio.run(tool.abatch([{"prompt": "abatch one"}, {"prompt": "abatch two"}]))
    assert all("request_id:" in str(r) for r in aresults)


def test_sync_mode_content_has_no_base64(tmp_path: Path) -> None:
    # The tools never ask for sync mode, but a sync-mode result (data URIs) must not reach the
    # model's context: check the formatting on a result built from one.
    from mai_tools._agent import Done, answer_text

    raw = io.BytesIO()
    Image.new("RGB", (4, 4)).save(raw, "PNG")
    uri = PNG_URI_PREFIX + base64.b64encode(raw.getvalue()).decode()
    result = mai_tools.ImageResult(request_id="microsoft-mai-image-2-5_x", image_urls=[uri])
    text = answer_text(Done(result))
    assert "base64" not in text
    assert "kept in the tool artifact" in text


@pytest.mark.parametrize("count", ["2", True, 2.5, "two"])
def test_the_tools_are_as_strict_as_the_core_about_the_image_count(
    mai_emulator: RunningEmulator, count: object
) -> None:
    message = _call(MAIImageGenerateTool(), {"prompt": "a strict robot", "num_images": count})
    assert message.status == "error"
    assert "num_images" in str(message.content)
    assert mai_emulator.control.stats().submissions == 0
