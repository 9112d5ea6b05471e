"""A LangGraph agent that generates an image and then edits it, with MAI Image 2.5 tools.

Offline by default: a scripted tool-calling chat model drives the agent and the gateway is the
in-process emulator, so it runs anywhere with no key and no network. To use a real chat model,
set ``MAI_EXAMPLE_CHAT_MODEL`` (for example ``openai:gpt-4.1-mini``, with that provider's
package and key installed); to use the real gateway, set ``PIXAZO_API_KEY``.

    pip install ".[agents]"        # langchain + langgraph (from a checkout of mai-tools)
    python examples/langgraph_agent.py
"""

from __future__ import annotations

import contextlib
import os
import sys
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

try:
    from langchain.agents import create_agent
except ImportError:  # pragma: no cover - depends on what is installed
    sys.exit('This example needs langchain and langgraph: pip install "mai-tools[agents]"')
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.runnables import Runnable
from pydantic import SecretStr

from mai_tools import MAIImageToolkit

TASK = "Draw a lighthouse on a cliff at dawn in watercolor, then make it a stormy night."


class ScriptedToolCaller(GenericFakeChatModel):
    """An offline stand-in for a tool-calling chat model: it plays a fixed script."""

    def bind_tools(
        self, tools: Sequence[Any], **kwargs: Any
    ) -> Runnable[LanguageModelInput, AIMessage]:
        return self


def scripted_model() -> ScriptedToolCaller:
    """generate_image, then edit_image on the URL the first tool returned, then a summary."""

    def script() -> Iterator[AIMessage]:
        yield AIMessage(
            content="",
            tool_calls=[
                {
                    "name": "generate_image",
                    "args": {
                        "prompt": "a lighthouse on a cliff at dawn, watercolor",
                        "aspect_ratio": "16:9",
                    },
                    "id": _call_id(),
                    "type": "tool_call",
                }
            ],
        )
        # The edit call refers to the URL the generate call returned: read it from the
        # transcript when the fake model is asked, as a real model would.
        yield AIMessage(content="", tool_calls=[_edit_call()])
        yield AIMessage(content="Done: I drew the lighthouse and turned it into a stormy night.")

    return ScriptedToolCaller(messages=script(), disable_streaming=True)


_transcript: list[BaseMessage] = []


def _call_id() -> str:
    # Unique, as real models make them: the tools key each job by its tool call id.
    return f"call_{uuid.uuid4().hex[:16]}"


def _edit_call() -> Any:
    generated = next(m for m in reversed(_transcript) if isinstance(m, ToolMessage))
    url = str(generated.content).splitlines()[0]
    return {
        "name": "edit_image",
        "args": {"prompt": "make it a stormy night with lightning", "image": url},
        "id": _call_id(),
        "type": "tool_call",
    }


def chat_model() -> BaseChatModel:
    name = os.environ.get("MAI_EXAMPLE_CHAT_MODEL")
    if name:
        from langchain.chat_models import init_chat_model

        return init_chat_model(name)
    return scripted_model()


@contextlib.contextmanager
def toolkit() -> Iterator[MAIImageToolkit]:
    if os.environ.get("PIXAZO_API_KEY"):
        yield MAIImageToolkit(output_dir=Path("mai-images"))
        return
    from mai_tools.emulator import run_emulator

    with run_emulator() as emu:
        yield MAIImageToolkit(
            api_key=SecretStr(emu.api_key), base_url=emu.base_url, output_dir=Path("mai-images")
        )


def main() -> list[BaseMessage]:
    with toolkit() as kit:
        agent = create_agent(chat_model(), tools=kit.get_tools(), system_prompt="You make images.")
        _transcript.clear()
        messages: list[BaseMessage] = []
        for update in agent.stream({"messages": [HumanMessage(TASK)]}, stream_mode="updates"):
            for step in update.values():
                for message in step.get("messages", []):
                    messages.append(message)
                    _transcript.append(message)
                    if isinstance(message, ToolMessage):
                        print(f"[{message.name}] {message.content}", file=sys.stderr)
    print(messages[-1].content)
    return messages


if __name__ == "__main__":
    main()
