"""The LangChain tools and the job book: a tool call id names one job; an identical call adopts
an undelivered one; a resumed LangGraph thread (in process, and after kill -9) pays once.

Jobs are counted at the emulator. Where a call must be interrupted mid-wait the emulator runs on
a ManualClock, so its job cannot end before the test says so.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.tools import BaseTool
from langgraph.checkpoint.memory import InMemorySaver

from mai_tools import GenerateRequest, MAIImageEditTool, MAIImageGenerateTool, MAIImageToolkit
from mai_tools.emulator import EmulatorConfig, ManualClock, RunningEmulator, run_emulator
from mai_tools.jobbook import JobBook, JobRecord, open_job_book
from mai_tools.langchain import tool_call_key
from tests.langchain.durable_agent import PROMPT, TASK, build_agent
from tests.support.jobbook import dead_intent
from tests.support.waiting import aeventually, eventually

HERE = Path(__file__).resolve().parent
ARGS = {"prompt": "a lighthouse at dawn"}


def _book() -> JobBook:
    book = open_job_book()
    assert book is not None
    return book


def _submitted() -> list[JobRecord]:
    return _book().list(state="submitted")


def _tool_call(tool: BaseTool, args: dict[str, Any], call_id: str) -> dict[str, Any]:
    return {"type": "tool_call", "id": call_id, "name": tool.name, "args": args}


async def _invoke(tool: BaseTool, args: dict[str, Any], call_id: str, mode: str) -> ToolMessage:
    call = _tool_call(tool, args, call_id)
    message = await tool.ainvoke(call) if mode == "async" else tool.invoke(call)
    assert isinstance(message, ToolMessage)
    return message


@pytest.fixture(scope="module")
def _held_session() -> Iterator[tuple[RunningEmulator, ManualClock]]:
    clock = ManualClock()
    with run_emulator(EmulatorConfig(min_duration=5, max_duration=5), clock=clock) as emu:
        yield emu, clock


@pytest.fixture
def held(
    _held_session: tuple[RunningEmulator, ManualClock], monkeypatch: pytest.MonkeyPatch
) -> tuple[RunningEmulator, ManualClock]:
    """An emulator whose jobs end only when the test advances its clock (PIXAZO_* point at it)."""
    emu, clock = _held_session
    emu.control.reset()
    monkeypatch.setenv("PIXAZO_API_KEY", emu.api_key)
    monkeypatch.setenv("PIXAZO_BASE_URL", emu.base_url)
    return emu, clock


# --------------------------------------------------------------------------- keyed by the call


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_the_same_tool_call_id_is_one_job(mai_emulator: RunningEmulator, mode: str) -> None:
    tool = MAIImageGenerateTool()
    first = await _invoke(tool, ARGS, "call_a", mode)
    again = await _invoke(tool, ARGS, "call_a", mode)
    assert (first.status, again.status) == ("success", "success")
    assert again.artifact.request_id == first.artifact.request_id
    assert again.content == first.content
    assert mai_emulator.control.stats().jobs_created == 1
    record = _book().find(first.artifact.request_id)
    assert record is not None
    assert record.idempotency_key == tool_call_key("generate_image", "call_a")
    assert (record.surface, record.state, record.status) == ("langchain", "finished", "COMPLETED")


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_a_delivered_answer_then_an_identical_call_is_a_new_job(
    mai_emulator: RunningEmulator, mode: str
) -> None:
    tool = MAIImageGenerateTool()
    first = await _invoke(tool, ARGS, "call_a", mode)
    second = await _invoke(tool, ARGS, "call_b", mode)
    assert second.artifact.request_id != first.artifact.request_id
    # Without a ToolCall (no id) the same holds: the answer was delivered.
    tool.invoke(ARGS)
    assert mai_emulator.control.stats().jobs_created == 3
    record = _book().find(first.artifact.request_id)
    assert record is not None
    assert record.delivered
    assert record.twin_key is None


async def test_two_identical_calls_at_once_are_one_job(mai_emulator: RunningEmulator) -> None:
    tool = MAIImageGenerateTool()
    first, second = await asyncio.gather(
        tool.ainvoke(_tool_call(tool, ARGS, "call_a")),
        tool.ainvoke(_tool_call(tool, ARGS, "call_b")),
    )
    assert (first.status, second.status) == ("success", "success")
    assert first.artifact.request_id == second.artifact.request_id
    assert mai_emulator.control.stats().jobs_created == 1


def test_a_tool_call_id_reused_with_other_arguments_is_refused_clearly(
    mai_emulator: RunningEmulator,
) -> None:
    tool = MAIImageGenerateTool()
    tool.invoke(_tool_call(tool, ARGS, "call_a"))
    message = tool.invoke(_tool_call(tool, {"prompt": "a lighthouse at dusk"}, "call_a"))
    assert isinstance(message, ToolMessage)
    assert message.status == "error"
    text = str(message.content)
    assert text.startswith("Nothing was sent: tool call id 'call_a' already named a generate_image")
    assert "prompt was 'a lighthouse at dawn' there and is 'a lighthouse at dusk' here" in text
    assert "Call generate_image again as a new tool call" in text
    assert "idempotency_key" not in text  # the model has no such knob
    assert mai_emulator.control.stats().jobs_created == 1


def test_a_call_whose_earlier_submit_may_have_arrived_is_not_sent_again(
    mai_emulator: RunningEmulator,
) -> None:
    # The process that ran this tool call died during its POST: the book has its intent and
    # no request id (written here as that process would have, with a pid that is gone).
    dead_intent(
        _book(),
        GenerateRequest(prompt=ARGS["prompt"]),
        key=tool_call_key("generate_image", "call_a"),
        gateway=mai_emulator.base_url,
        surface="langchain",
    )
    tool = MAIImageGenerateTool()
    message = tool.invoke(_tool_call(tool, ARGS, "call_a"))  # the resumed tool node
    assert message.status == "error"
    text = str(message.content)
    assert text.startswith("This generate_image call (tool call id 'call_a') may already have")
    assert "It was not sent again" in text
    assert "Calling generate_image again starts a new, paid job." in text
    assert mai_emulator.control.stats().submissions == 0
    again = tool.invoke(_tool_call(tool, ARGS, "call_b"))  # the model calls again
    assert again.status == "success"
    assert mai_emulator.control.stats().jobs_created == 1


def test_the_key_depends_on_the_tool_and_the_thread() -> None:
    assert tool_call_key("generate_image", "c1") == "langchain:generate_image:c1"
    assert tool_call_key("edit_image", "c1", "t9") == "langchain:edit_image:t9:c1"
    long = tool_call_key("generate_image", "c" * 300, "t")
    assert long.startswith("langchain:sha256:")
    assert len(long) <= 255
    assert long != tool_call_key("generate_image", "c" * 300, "u")


def test_ids_of_other_tools_do_not_collide(mai_emulator: RunningEmulator) -> None:
    made = MAIImageGenerateTool().invoke(_tool_call(MAIImageGenerateTool(), ARGS, "call_1"))
    url = str(made.content).splitlines()[0]
    edit = MAIImageEditTool()
    edited = edit.invoke(_tool_call(edit, {"prompt": "make it night", "image": url}, "call_1"))
    assert edited.status == "success"
    assert mai_emulator.control.stats().jobs_created == 2


def test_the_book_can_be_turned_off(mai_emulator: RunningEmulator) -> None:
    (tool, *_) = MAIImageToolkit(job_book="off").get_tools()
    for _ in range(2):
        message = tool.invoke(_tool_call(tool, ARGS, "call_a"))
        assert message.status == "success"
    assert mai_emulator.control.stats().jobs_created == 2  # no memory: what "off" means
    assert _book().list() == []


def test_the_toolkit_passes_its_book_on(mai_emulator: RunningEmulator, tmp_path: Path) -> None:
    path = tmp_path / "team-book.sqlite3"
    (tool, *_) = MAIImageToolkit(job_book=path).get_tools()
    tool.invoke(_tool_call(tool, ARGS, "call_a"))
    tool.invoke(_tool_call(tool, ARGS, "call_a"))
    assert mai_emulator.control.stats().jobs_created == 1
    book = open_job_book(path)
    assert book is not None
    assert len(book.list()) == 1
    assert _book().list() == []
    assert "team-book" not in repr(tool)


# --------------------------------------------------------------------------- undelivered answers


async def test_a_cancelled_call_then_the_identical_call_is_one_job(
    held: tuple[RunningEmulator, ManualClock],
) -> None:
    emu, clock = held
    tool = MAIImageGenerateTool(wait_timeout=60)
    # The host gives up on the call (asyncio.wait_for, LangGraph's step_timeout): the task is
    # cancelled once its job is submitted, as wait_for's timeout would.
    first = asyncio.create_task(tool.ainvoke(_tool_call(tool, ARGS, "call_a")))
    await aeventually(_submitted, "the first call's job in the book")
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    clock.advance(10)
    # The model asks again: a new call id, the same arguments.
    message = await tool.ainvoke(_tool_call(tool, ARGS, "call_b"))
    assert message.status == "success"
    assert str(message.content).startswith(emu.base_url + "/files/")
    assert emu.control.stats().jobs_created == 1
    record = _book().find(message.artifact.request_id)
    assert record is not None
    assert record.idempotency_key == tool_call_key("generate_image", "call_a")
    assert record.delivered  # this answer arrived: the next identical call is a new job


async def test_a_host_timeout_then_the_same_plain_call_is_one_job(
    held: tuple[RunningEmulator, ManualClock],
) -> None:
    emu, clock = held
    tool = MAIImageGenerateTool(wait_timeout=60)

    async def expire_once_submitted(deadline: asyncio.Timeout) -> None:
        await aeventually(_submitted, "the first call's job in the book")
        deadline.reschedule(asyncio.get_running_loop().time())

    async def host_call() -> None:
        # The host's timeout (asyncio.wait_for and LangGraph's step_timeout are built on
        # asyncio.timeout) fires while the job runs.
        async with asyncio.timeout(None) as deadline:
            expire = asyncio.create_task(expire_once_submitted(deadline))
            await tool.ainvoke(ARGS)
        await expire

    # The calls carry no tool call id: only their arguments match.
    with pytest.raises(TimeoutError):
        await host_call()
    clock.advance(10)
    content = await tool.ainvoke(ARGS)
    assert str(content).startswith(emu.base_url + "/files/")
    assert emu.control.stats().jobs_created == 1


# --------------------------------------------------------------------------- LangGraph


def _final(messages: list[Any]) -> tuple[ToolMessage, AIMessage]:
    (tool_message,) = [m for m in messages if isinstance(m, ToolMessage)]
    last = messages[-1]
    assert isinstance(last, AIMessage)
    return tool_message, last


async def test_a_resumed_langgraph_thread_continues_its_job(
    held: tuple[RunningEmulator, ManualClock],
) -> None:
    emu, clock = held
    agent = build_agent(InMemorySaver(), wait_timeout=60)
    config: Any = {"configurable": {"thread_id": "thread-1"}}
    run = asyncio.create_task(
        agent.ainvoke({"messages": [HumanMessage(TASK)]}, config, durability="sync")
    )
    await aeventually(_submitted, "the tool node's job in the book")
    run.cancel()  # the run dies in the tool node, mid-wait
    with pytest.raises(asyncio.CancelledError):
        await run
    (record,) = _submitted()
    assert record.idempotency_key is not None
    assert record.idempotency_key.startswith("langchain:generate_image:thread-1:call_")
    clock.advance(10)
    state = await agent.ainvoke(None, config, durability="sync")  # resume from the checkpoint
    tool_message, answer = _final(state["messages"])
    assert tool_message.status == "success"
    assert tool_message.artifact.request_id == record.request_id
    assert str(answer.content).startswith(f"Here it is: {emu.base_url}/files/")
    assert emu.control.stats().jobs_created == 1


def test_kill_9_mid_wait_then_resume_from_sqlite_is_one_job(
    held: tuple[RunningEmulator, ManualClock], tmp_path: Path
) -> None:
    from langgraph.checkpoint.sqlite import SqliteSaver

    emu, clock = held
    checkpoints = str(tmp_path / "checkpoints.sqlite")
    child = subprocess.Popen(
        [sys.executable, str(HERE / "durable_agent.py"), checkpoints, "thread-k"],
        env=dict(os.environ),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        eventually(lambda: _submitted() or child.poll() is not None, "the child's job in the book")
        assert child.poll() is None, child.stderr.read() if child.stderr else ""
    finally:
        child.send_signal(signal.SIGKILL)
        child.communicate()
    assert child.returncode == -signal.SIGKILL
    (record,) = _submitted()
    clock.advance(10)
    # Another process resumes the thread from its checkpoint: the tool node runs again with the
    # same tool_call_id, and continues the first job.
    with SqliteSaver.from_conn_string(checkpoints) as saver:
        state = build_agent(saver, wait_timeout=60).invoke(
            None, {"configurable": {"thread_id": "thread-k"}}, durability="sync"
        )
    tool_message, answer = _final(state["messages"])
    assert tool_message.artifact.request_id == record.request_id
    assert PROMPT in str(state["messages"][1].tool_calls[0]["args"]["prompt"])
    assert str(answer.content).startswith(f"Here it is: {emu.base_url}/files/")
    assert emu.control.stats().jobs_created == 1
