"""Images in tool messages, as each provider's own payload builder sends them (offline, fake
keys): OpenAI Chat Completions refuses them there, so ``move_tool_images`` /
``ToolImagesMiddleware`` move them into a following user message; Anthropic, Gemini and the
OpenAI Responses API take them as they are.

Each payload is checked against the provider SDK's own request types (``openai.types``,
``anthropic.types``, ``google.genai.types``), so "valid" means what the SDK that sends it
declares, not what this test believes.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Callable, Iterable
from typing import Any

import pytest
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from PIL import Image
from pydantic import TypeAdapter

from mai_tools._previews import model_preview
from mai_tools.langchain import move_tool_images
from mai_tools.middleware import SEE_BELOW, ToolImagesMiddleware, takes_tool_images

langchain_openai = pytest.importorskip("langchain_openai")
langchain_anthropic = pytest.importorskip("langchain_anthropic")
langchain_google_genai = pytest.importorskip("langchain_google_genai")

from anthropic.types import MessageParam  # noqa: E402 - after the skips: their own SDKs
from google.genai import types as genai_types  # noqa: E402
from openai.types.chat import ChatCompletionMessageParam  # noqa: E402
from openai.types.responses import ResponseInputParam  # noqa: E402


def _jpeg() -> str:
    raw = io.BytesIO()
    Image.new("RGB", (1024, 1024), (200, 30, 30)).save(raw, "PNG")
    return base64.b64encode(model_preview(raw.getvalue(), 384).jpeg).decode("ascii")


JPEG = _jpeg()
DATA_URL = f"data:image/jpeg;base64,{JPEG}"
IMAGE = {"type": "image", "base64": JPEG, "mime_type": "image/jpeg"}
RID = "microsoft-mai-image-2-5_019d0000-0000-7000-8000-000000000001"


def _call(name: str, call_id: str, **args: Any) -> dict[str, Any]:
    return {"name": name, "args": args, "id": call_id, "type": "tool_call"}


def conversation() -> list[BaseMessage]:
    """generate_image, then two view_image calls in one turn (and a text-only result)."""
    return [
        HumanMessage("Draw a red square, look at it, then make it blue."),
        AIMessage("", tool_calls=[_call("generate_image", "call_1", prompt="a red square")]),
        ToolMessage(f"https://cdn.example.com/1.png\nrequest_id: {RID}", tool_call_id="call_1"),
        AIMessage(
            "",
            tool_calls=[
                _call("view_image", "call_2", request_id=RID),
                _call("view_image", "call_3", request_id=RID, index=2),
                _call("get_image_job", "call_4", request_id=RID),
            ],
        ),
        ToolMessage(
            [{"type": "text", "text": f"Image 1 of 2 of request_id {RID}"}, IMAGE],
            tool_call_id="call_2",
            name="view_image",
        ),
        ToolMessage(
            [{"type": "text", "text": f"Image 2 of 2 of request_id {RID}"}, IMAGE],
            tool_call_id="call_3",
            name="view_image",
        ),
        ToolMessage("request_id: done", tool_call_id="call_4", name="get_image_job"),
    ]


def _force(value: Any) -> Any:
    """Validate what pydantic validates lazily (``Iterable`` fields of the SDKs' TypedDicts)."""
    if isinstance(value, dict):
        return {k: _force(v) for k, v in value.items()}
    if isinstance(value, str | bytes):
        return value
    if isinstance(value, Iterable):
        return [_force(v) for v in value]
    return value


def _valid(adapter: TypeAdapter[Any], payload: Any) -> None:
    _force(adapter.validate_python(payload))


OPENAI_CHAT = TypeAdapter(list[ChatCompletionMessageParam])
OPENAI_RESPONSES = TypeAdapter(ResponseInputParam)
ANTHROPIC = TypeAdapter(list[MessageParam])


def chat_openai(**kw: Any) -> BaseChatModel:
    model: BaseChatModel = langchain_openai.ChatOpenAI(model="gpt-4.1", api_key="sk-fake", **kw)
    return model


def chat_anthropic() -> BaseChatModel:
    model: BaseChatModel = langchain_anthropic.ChatAnthropic(
        model="claude-sonnet-4-5", api_key="sk-ant-fake"
    )
    return model


def chat_gemini() -> BaseChatModel:
    model: BaseChatModel = langchain_google_genai.ChatGoogleGenerativeAI(
        model="gemini-2.5-flash", google_api_key="fake-google-key"
    )
    return model


# --------------------------------------------------------------------------- the rewrite


def test_images_move_after_the_run_of_tool_messages_and_leave_a_pointer() -> None:
    before = conversation()
    snapshot = [m.model_copy(deep=True) for m in before]
    after = move_tool_images(before)
    assert before == snapshot  # the agent's state is never changed
    assert [type(m).__name__ for m in after] == [
        "HumanMessage",
        "AIMessage",
        "ToolMessage",
        "AIMessage",
        "ToolMessage",
        "ToolMessage",
        "ToolMessage",
        "HumanMessage",  # after the whole run: every tool result follows its AI turn directly
    ]
    for tool_message in after[4:6]:
        assert isinstance(tool_message, ToolMessage)
        assert tool_message.content[1] == {"type": "text", "text": f"({SEE_BELOW})"}
        assert tool_message.tool_call_id in ("call_2", "call_3")
        assert tool_message.name == "view_image"
    assert after[6] == before[6]
    images = after[7]
    assert isinstance(images.content, list)
    texts = [b["text"] for b in images.content if isinstance(b, dict) and b["type"] == "text"]
    assert texts == [
        "The image returned by tool call view_image (call_2):",
        "The image returned by tool call view_image (call_3):",
    ]
    assert [b for b in images.content if isinstance(b, dict) and b["type"] == "image"] == [
        IMAGE,
        IMAGE,
    ]


def test_a_conversation_without_images_is_left_alone() -> None:
    messages = conversation()[:3]
    assert move_tool_images(messages) == messages


def test_which_models_take_images_in_tool_results() -> None:
    assert not takes_tool_images(chat_openai())  # Chat Completions
    assert takes_tool_images(chat_openai(use_responses_api=True))
    assert takes_tool_images(chat_anthropic())
    assert takes_tool_images(chat_gemini())
    azure = langchain_openai.AzureChatOpenAI(
        azure_deployment="d",
        api_version="2025-01-01",
        azure_endpoint="https://example.openai.azure.com",
        api_key="fake",
    )
    assert not takes_tool_images(azure)


# --------------------------------------------------------------------------- the payloads


def _payload(model: BaseChatModel, messages: list[BaseMessage]) -> dict[str, Any]:
    payload: dict[str, Any] = model._get_request_payload(messages)  # type: ignore[attr-defined]
    return payload


def test_openai_chat_completions_refuses_tool_images_until_they_are_moved() -> None:
    model = chat_openai()
    as_written = _payload(model, conversation())["messages"]
    with pytest.raises(ValueError, match="text"):  # an image_url part in a role "tool" message
        _valid(OPENAI_CHAT, as_written)

    moved = _payload(model, move_tool_images(conversation()))["messages"]
    _valid(OPENAI_CHAT, moved)
    assert [m["role"] for m in moved] == [
        "user",
        "assistant",
        "tool",
        "assistant",
        "tool",
        "tool",
        "tool",
        "user",
    ]
    assert all(
        part["type"] == "text"
        for m in moved
        if m["role"] == "tool" and isinstance(m["content"], list)
        for part in m["content"]
    )
    assert SEE_BELOW in str(moved[4]["content"])
    urls = [p["image_url"]["url"] for p in moved[7]["content"] if p["type"] == "image_url"]
    assert urls == [DATA_URL, DATA_URL]


def test_openai_responses_takes_tool_images_as_they_are() -> None:
    model = chat_openai(use_responses_api=True)
    payload = _payload(model, conversation())["input"]
    _valid(OPENAI_RESPONSES, payload)
    outputs = [item for item in payload if item.get("type") == "function_call_output"]
    images = [p for o in outputs if isinstance(o["output"], list) for p in o["output"]]
    assert [p["image_url"] for p in images if p["type"] == "input_image"] == [DATA_URL, DATA_URL]
    # (Moved into a user message, langchain-openai writes input_image parts without the
    # "detail" the SDK's types require there: one more reason "auto" leaves Responses alone.)


def test_anthropic_takes_tool_images_as_they_are_and_moved() -> None:
    model = chat_anthropic()
    for messages in (conversation(), move_tool_images(conversation())):
        payload = _payload(model, messages)["messages"]
        _valid(ANTHROPIC, payload)
    as_written = _payload(model, conversation())["messages"]
    results = [
        block
        for message in as_written
        if isinstance(message["content"], list)
        for block in message["content"]
        if block["type"] == "tool_result"
    ]
    sources = [
        b["source"]
        for r in results
        if isinstance(r["content"], list)
        for b in r["content"]
        if b["type"] == "image"
    ]
    assert sources == [{"type": "base64", "media_type": "image/jpeg", "data": JPEG}] * 2
    # Moved, the user turn holds the tool results first, then the images (Anthropic's order).
    moved = _payload(model, move_tool_images(conversation()))["messages"][-1]
    kinds = [b["type"] for b in moved["content"]]
    assert kinds[:3] == ["tool_result"] * 3
    assert kinds.count("image") == 2


def test_gemini_takes_tool_images_as_they_are() -> None:
    model = chat_gemini()
    for messages in (conversation(), move_tool_images(conversation())):
        request = model._prepare_request(messages)  # type: ignore[attr-defined]
        contents = [genai_types.Content.model_validate(c) for c in request["contents"]]
        parts = [p for c in contents for p in c.parts or []]
        blobs = [p.inline_data for p in parts if p.inline_data is not None]
        assert [(b.mime_type, b.data) for b in blobs] == [
            ("image/jpeg", base64.b64decode(JPEG))
        ] * 2
        assert sum(p.function_response is not None for p in parts) == 4


# --------------------------------------------------------------------------- the middleware


class _Request:
    """The two things the middleware reads of a ModelRequest, and its override."""

    def __init__(self, model: BaseChatModel, messages: list[BaseMessage]) -> None:
        self.model = model
        self.messages = messages

    def override(self, **changes: Any) -> _Request:
        return _Request(changes.get("model", self.model), changes.get("messages", self.messages))


def _sent(middleware: ToolImagesMiddleware, model: BaseChatModel) -> list[BaseMessage]:
    seen: list[list[BaseMessage]] = []

    def handler(request: Any) -> Any:
        seen.append(request.messages)
        return AIMessage("ok")

    call: Callable[..., Any] = middleware.wrap_model_call
    call(_Request(model, conversation()), handler)
    return seen[0]


@pytest.mark.parametrize(
    ("make", "moves"),
    [(chat_openai, True), (chat_anthropic, False), (chat_gemini, False)],
)
def test_the_middleware_moves_images_only_for_models_that_need_it(
    make: Callable[[], BaseChatModel], moves: bool
) -> None:
    sent = _sent(ToolImagesMiddleware(), make())
    assert (sent == move_tool_images(conversation())) is moves
    assert (sent == conversation()) is not moves
    assert _sent(ToolImagesMiddleware(when="always"), make()) == move_tool_images(conversation())


async def test_the_middleware_moves_them_on_async_calls_too() -> None:
    seen: list[list[BaseMessage]] = []

    async def handler(request: Any) -> Any:
        seen.append(request.messages)
        return AIMessage("ok")

    await ToolImagesMiddleware().awrap_model_call(
        _Request(chat_openai(), conversation()),  # type: ignore[arg-type]
        handler,
    )
    assert seen == [move_tool_images(conversation())]


def test_an_unknown_when_is_refused() -> None:
    with pytest.raises(ValueError, match="'auto' or 'always'"):
        ToolImagesMiddleware(when="sometimes")  # type: ignore[arg-type]
