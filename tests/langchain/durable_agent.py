"""A LangGraph agent for the job-book tests: an offline model that asks for one image.

Imported by ``test_langchain_job_book.py``, and run as a script by it to be killed mid-wait:

    python durable_agent.py <checkpoints.sqlite> <thread id>

starts the agent on that thread with a SQLite checkpointer (the tools reach the gateway named by
``PIXAZO_*`` and write the job book named by ``MAI_JOB_BOOK``).
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import Sequence
from typing import Any

from langchain.agents import create_agent
from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.runnables import Runnable
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph.state import CompiledStateGraph

from mai_tools import MAIImageGenerateTool

PROMPT = "a lighthouse on a cliff at dawn"
TASK = "Draw a lighthouse."


class DrawingModel(BaseChatModel):
    """Offline stand-in for a tool-calling model, decided by the conversation (so a graph
    resumed in a new process gets the same answers): no tool result yet, it calls
    generate_image with a fresh call id, as real models do; then it answers with the URL."""

    @property
    def _llm_type(self) -> str:
        return "drawing-fake"

    def bind_tools(
        self, tools: Sequence[Any], **kwargs: Any
    ) -> Runnable[LanguageModelInput, AIMessage]:
        return self

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        results = [m for m in messages if isinstance(m, ToolMessage)]
        if results:
            message = AIMessage(content=f"Here it is: {str(results[-1].content).splitlines()[0]}")
        else:
            message = AIMessage(
                content="",
                tool_calls=[
                    {
                        "name": "generate_image",
                        "args": {"prompt": PROMPT},
                        "id": f"call_{uuid.uuid4().hex[:16]}",
                        "type": "tool_call",
                    }
                ],
            )
        return ChatResult(generations=[ChatGeneration(message=message)])


def build_agent(checkpointer: BaseCheckpointSaver[Any], **tool: Any) -> CompiledStateGraph[Any]:
    return create_agent(
        DrawingModel(), tools=[MAIImageGenerateTool(**tool)], checkpointer=checkpointer
    )


def start(path: str, thread: str) -> None:
    from langgraph.checkpoint.sqlite import SqliteSaver

    with SqliteSaver.from_conn_string(path) as saver:
        build_agent(saver, wait_timeout=600).invoke(
            {"messages": [HumanMessage(TASK)]},
            {"configurable": {"thread_id": thread}},
            durability="sync",
        )


if __name__ == "__main__":
    start(sys.argv[1], sys.argv[2])
