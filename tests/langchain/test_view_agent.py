"""A LangGraph agent looks at its image before editing it: generate_image, view_image (the model
receives the image block), then edit_image, against the emulator. The model is an offline
stand-in that reads images as a vision model would (it decodes the block it is given)."""

from __future__ import annotations

import base64
import io
import json
import re
from typing import Any

import httpx
import pytest
from langchain.agents import create_agent
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from PIL import Image
from pydantic import PrivateAttr

from mai_tools import MAIImageToolkit
from mai_tools.emulator import RunningEmulator
from mai_tools.middleware import ToolImagesMiddleware
from tests.support.chat_models import ConversationModel, tool_call


def _images(message: BaseMessage) -> list[dict[str, Any]]:
    if isinstance(message.content, str):
        return []
    return [b for b in message.content if isinstance(b, dict) and b.get("type") == "image"]


class LookingModel(ConversationModel):
    """Decides by the conversation, as a tool-calling vision model would: make an image, look at
    it, then edit it (only once it has seen it), then answer."""

    _seen: list[tuple[str, tuple[int, int]]] = PrivateAttr(default_factory=list)

    @property
    def seen(self) -> list[tuple[str, tuple[int, int]]]:
        """(the message type it came in, its size) of every image this model was shown."""
        return self._seen

    def reply(self, messages: list[BaseMessage]) -> AIMessage:
        results = {m.name: m for m in messages if isinstance(m, ToolMessage)}
        if "generate_image" not in results:
            return tool_call("generate_image", {"prompt": "a red kite over a beach"})
        made = results["generate_image"].text
        if "view_image" not in results:
            found = re.search(r"request_id: (\S+)", made)
            assert found is not None
            return tool_call("view_image", {"request_id": found.group(1)})
        if "edit_image" not in results:
            self._look(messages)
            return tool_call("edit_image", {"prompt": "make it blue", "image": made.split()[0]})
        return AIMessage(content=f"Done: {results['edit_image'].text.split()[0]}")

    def _look(self, messages: list[BaseMessage]) -> None:
        for message in messages:
            for block in _images(message):
                assert block["mime_type"] == "image/jpeg"
                with Image.open(io.BytesIO(base64.b64decode(block["base64"]))) as image:
                    image.load()
                    self._seen.append((type(message).__name__, image.size))
        assert self._seen, "the model was shown no image before editing"


@pytest.mark.parametrize(
    ("middleware", "shown_in"),
    [((), "ToolMessage"), ((ToolImagesMiddleware(when="always"),), "HumanMessage")],
    ids=["image-in-tool-message", "image-moved-by-middleware"],
)
async def test_the_agent_looks_at_its_image_before_editing_it(
    mai_emulator: RunningEmulator, middleware: tuple[ToolImagesMiddleware, ...], shown_in: str
) -> None:
    model = LookingModel()
    agent = create_agent(model, tools=MAIImageToolkit().get_tools(), middleware=middleware)
    before = mai_emulator.control.stats().jobs_created
    out = await agent.ainvoke({"messages": [HumanMessage("Draw a kite, check it, make it blue.")]})
    messages: list[BaseMessage] = out["messages"]
    tools_called = [m.name for m in messages if isinstance(m, ToolMessage)]
    assert tools_called == ["generate_image", "view_image", "edit_image"]
    assert all(m.status == "success" for m in messages if isinstance(m, ToolMessage))
    assert model.seen == [(shown_in, (384, 384))]  # a 1024 px image, seen at the default size
    viewed = next(m for m in messages if isinstance(m, ToolMessage) and m.name == "view_image")
    assert len(_images(viewed)) == 1  # the state keeps the tool's own answer either way
    assert str(messages[-1].content).startswith("Done: http")
    assert mai_emulator.control.stats().jobs_created == before + 2  # looking is free


def test_the_same_agent_runs_sync(mai_emulator: RunningEmulator) -> None:
    model = LookingModel()
    agent = create_agent(model, tools=MAIImageToolkit().get_tools())
    out = agent.invoke({"messages": [HumanMessage("Draw a kite, check it, make it blue.")]})
    assert [m.name for m in out["messages"] if isinstance(m, ToolMessage)] == [
        "generate_image",
        "view_image",
        "edit_image",
    ]
    assert model.seen == [("ToolMessage", (384, 384))]


# --------------------------------------------------------------------------- a real ChatOpenAI


class _ChatCompletions:
    """OpenAI's Chat Completions endpoint as far as this agent needs it, over MockTransport:
    it refuses image parts in a tool message as the real API does (HTTP 400), and otherwise
    plays a vision model: generate, view, then edit once it has been shown an image."""

    def __init__(self) -> None:
        self.images_seen = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        messages = body["messages"]
        for message in messages:
            parts = message["content"] if isinstance(message["content"], list) else []
            kinds = {part["type"] for part in parts}
            if message["role"] == "tool" and kinds - {"text"}:
                return httpx.Response(
                    400,
                    json={
                        "error": {
                            "message": "Image URLs are only allowed for messages with role 'user'",
                            "type": "invalid_request_error",
                        }
                    },
                )
        done = {m.get("tool_call_id"): m for m in messages if m["role"] == "tool"}
        if "call_generate_image" not in done:
            return self._call("generate_image", {"prompt": "a red kite"})
        made = str(done["call_generate_image"]["content"])
        if "call_view_image" not in done:
            found = re.search(r"request_id: (\S+)", made)
            assert found is not None
            return self._call("view_image", {"request_id": found.group(1)})
        if "call_edit_image" not in done:
            self.images_seen = sum(
                part["type"] == "image_url"
                and part["image_url"]["url"].startswith("data:image/jpeg;base64,")
                for m in messages
                if m["role"] == "user" and isinstance(m["content"], list)
                for part in m["content"]
            )
            return self._call("edit_image", {"prompt": "make it blue", "image": made.split()[0]})
        return self._reply({"role": "assistant", "content": "Done."}, "stop")

    def _call(self, name: str, args: dict[str, Any]) -> httpx.Response:
        call = {
            "id": f"call_{name}",
            "type": "function",
            "function": {"name": name, "arguments": json.dumps(args)},
        }
        return self._reply(
            {"role": "assistant", "content": None, "tool_calls": [call]}, "tool_calls"
        )

    def _reply(self, message: dict[str, Any], finish: str) -> httpx.Response:
        return httpx.Response(
            200,
            json={
                "id": "chatcmpl-test",
                "object": "chat.completion",
                "created": 0,
                "model": "gpt-4.1",
                "choices": [{"index": 0, "message": message, "finish_reason": finish}],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
            },
        )


def _chat_openai(endpoint: _ChatCompletions) -> Any:
    langchain_openai = pytest.importorskip("langchain_openai")
    return langchain_openai.ChatOpenAI(
        model="gpt-4.1",
        api_key="sk-fake",
        max_retries=0,
        http_client=httpx.Client(transport=httpx.MockTransport(endpoint)),
    )


def test_chat_completions_sees_the_image_with_the_middleware_and_refuses_it_without(
    mai_emulator: RunningEmulator,
) -> None:
    """A real ChatOpenAI (Chat Completions) in create_agent: "auto" recognises it."""
    endpoint = _ChatCompletions()
    agent = create_agent(
        _chat_openai(endpoint),
        tools=MAIImageToolkit().get_tools(),
        middleware=[ToolImagesMiddleware()],
    )
    out = agent.invoke({"messages": [HumanMessage("Draw a kite, check it, make it blue.")]})
    assert [m.name for m in out["messages"] if isinstance(m, ToolMessage)] == [
        "generate_image",
        "view_image",
        "edit_image",
    ]
    assert endpoint.images_seen == 1
    assert out["messages"][-1].content == "Done."

    bare = create_agent(_chat_openai(_ChatCompletions()), tools=MAIImageToolkit().get_tools())
    openai = pytest.importorskip("openai")
    with pytest.raises(openai.BadRequestError, match="only allowed for messages with role 'user'"):
        bare.invoke({"messages": [HumanMessage("Draw a kite, check it, make it blue.")]})
