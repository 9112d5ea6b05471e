"""A LangGraph agent looks at its image before editing it: generate_image, view_image (the model
receives the image block), then edit_image, against the emulator. The model is an offline
stand-in that reads images as a vision model would (it decodes the block it is given)."""

from __future__ import annotations

import base64
import io
import re
from typing import Any

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
