"""A LangGraph agent that crashes mid-job and resumes from its checkpoint without paying twice.

The agent (a checkpointer + the MAI Image tools, nothing else) runs in a child process that is
killed with SIGKILL while its image job runs, the way an OOM kill or a redeploy would end it.
This process then resumes the same thread from the SQLite checkpoint: LangGraph re-runs the
tool node with the same ``tool_call_id``, the tool finds that call's job in the job book, and
waits for it instead of submitting it again. The gateway makes exactly one job.

Offline by default (a scripted chat model, the in-process emulator, a job book and checkpoint
in a temporary directory): no key, no network. Set ``MAI_EXAMPLE_CHAT_MODEL`` (e.g.
``openai:gpt-4.1-mini``) for a real model and ``PIXAZO_API_KEY`` for the real gateway (that job
is paid, once, and recorded in your job book).

    pip install "mai-tools[agents]"     # langchain, langgraph, langgraph-checkpoint-sqlite
    python examples/langgraph_durable.py
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

try:
    from langchain.agents import create_agent
    from langgraph.checkpoint.sqlite import SqliteSaver
except ImportError:  # pragma: no cover - depends on what is installed
    sys.exit('This example needs langchain and langgraph: pip install "mai-tools[agents]"')
from langchain_core.callbacks import BaseCallbackHandler, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.runnables import Runnable, RunnableConfig

from mai_tools import MAIImageToolkit
from mai_tools.langchain import STATUS_EVENT

TASK = "Draw a lighthouse on a cliff at dawn, in watercolor."
THREAD = "durable-demo"


class ScriptedModel(BaseChatModel):
    """An offline stand-in for a tool-calling chat model. It answers from the conversation (a
    process that resumes the thread gets the same answers): first a generate_image call with a
    fresh id, as real models make them; once the tool has answered, a summary."""

    @property
    def _llm_type(self) -> str:
        return "scripted-example"

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
        answers = [m for m in messages if isinstance(m, ToolMessage)]
        if answers:
            first_line = str(answers[-1].content).splitlines()[0]
            message = AIMessage(content=f"Here is your lighthouse: {first_line}")
        else:
            message = AIMessage(
                content="",
                tool_calls=[
                    {
                        "name": "generate_image",
                        "args": {"prompt": "a lighthouse on a cliff at dawn, watercolor"},
                        "id": f"call_{uuid.uuid4().hex[:16]}",
                        "type": "tool_call",
                    }
                ],
            )
        return ChatResult(generations=[ChatGeneration(message=message)])


def chat_model() -> BaseChatModel:
    name = os.environ.get("MAI_EXAMPLE_CHAT_MODEL")
    if name:
        from langchain.chat_models import init_chat_model

        return init_chat_model(name)
    return ScriptedModel()


def agent(checkpointer: SqliteSaver) -> Any:
    """The whole recipe: a checkpointer, and the tools. Nothing else is needed for a resumed
    thread to continue its jobs (the job book is on by default)."""
    tools = MAIImageToolkit(output_dir=Path("mai-images")).get_tools()
    return create_agent(chat_model(), tools=tools, checkpointer=checkpointer)


CONFIG: RunnableConfig = {"configurable": {"thread_id": THREAD}}


# --------------------------------------------------------------------------- the crashing run


class CrashMidJob(BaseCallbackHandler):
    """Kills this process (SIGKILL: nothing is cleaned up) once the image job is running."""

    def on_custom_event(self, name: str, data: Any, **kwargs: Any) -> None:
        if name == STATUS_EVENT and data["status"] != "COMPLETED":
            print(f"[child] job {data['request_id']} is {data['status']}: kill -9", flush=True)
            os.kill(os.getpid(), getattr(signal, "SIGKILL", signal.SIGTERM))


def crashing_run(checkpoints: str) -> None:
    """The first run (in a child process): dies inside the tool node, mid-wait."""
    with SqliteSaver.from_conn_string(checkpoints) as saver:
        agent(saver).invoke(
            {"messages": [HumanMessage(TASK)]},
            {**CONFIG, "callbacks": [CrashMidJob()]},
            # Each step's checkpoint is on disk before the next step starts.
            durability="sync",
        )
    raise SystemExit("the run finished: it was meant to crash")


# --------------------------------------------------------------------------- the demo


@contextlib.contextmanager
def gateway(workdir: Path) -> Iterator[Any]:
    """The real gateway (with PIXAZO_API_KEY), else the emulator and a job book of the demo's
    own, set in the environment for both processes. Yields the emulator (None for the real
    one)."""
    if os.environ.get("PIXAZO_API_KEY"):
        yield None
        return
    from mai_tools.emulator import run_emulator

    print("PIXAZO_API_KEY is not set: using the offline emulator.", file=sys.stderr, flush=True)
    saved = dict(os.environ)
    with run_emulator() as emu:
        os.environ.update(PIXAZO_API_KEY=emu.api_key, PIXAZO_BASE_URL=emu.base_url)
        # MAI_JOB_BOOK=off shows what happens without the book: the resumed run pays again.
        os.environ.setdefault("MAI_JOB_BOOK", str(workdir / "jobs.sqlite3"))
        try:
            yield emu
        finally:
            os.environ.clear()
            os.environ.update(saved)


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp, gateway(Path(tmp)) as emu:
        checkpoints = str(Path(tmp) / "checkpoints.sqlite")
        child = subprocess.run(  # noqa: S603 - this same file, in its crashing mode
            [sys.executable, __file__, "--crashing-run", checkpoints],
            check=False,
        )
        print(f"the agent process died (exit status {child.returncode}) in the middle of its job")
        if child.returncode >= 0:
            return 1

        print(f"resuming thread {THREAD!r} from its checkpoint in a new process")
        with SqliteSaver.from_conn_string(checkpoints) as saver:
            state = agent(saver).invoke(None, CONFIG, durability="sync")
        messages: list[BaseMessage] = state["messages"]
        for message in messages:
            if isinstance(message, ToolMessage):
                print(f"[{message.name}] {message.content}")
        print(messages[-1].content)

        if emu is None:
            return 0  # the real gateway lists no jobs: see `mai-image jobs list`
        jobs = emu.control.stats().jobs_created
        print(f"the gateway made {jobs} job{'s' if jobs != 1 else ''}: ", end="")
        print("exactly one, as asked" if jobs == 1 else "paid twice!")
        return 0 if jobs == 1 else 1


if __name__ == "__main__":
    if sys.argv[1:2] == ["--crashing-run"]:
        crashing_run(sys.argv[2])
    raise SystemExit(main())
