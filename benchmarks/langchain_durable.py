"""Jobs paid for one image when a LangChain/LangGraph host interrupts the image tools (issue 21).

    python benchmarks/langchain_durable.py      # about a minute

Each scenario asks for one image and is run twice: with the job book (the default) and with
``MAI_JOB_BOOK=off`` (what the tools did before the book). Jobs are counted by the emulator
(3 s jobs; the host gives up after 1 s each time, then tries again, at most 5 times):

- ``kill -9 + resume``: examples/langgraph_durable.py (a SqliteSaver agent killed mid-wait in
  a child process and resumed from its checkpoint in another).
- ``asyncio.wait_for + same call``: the tool awaited with a 1 s timeout, then called again.
- ``step_timeout + resume``: a checkpointed agent with ``step_timeout=1``, resumed with
  ``ainvoke(None)`` after each timeout (the tool node repeats the same tool call id).
- ``step_timeout + ask again``: no checkpointer; the user sends the request again after each
  timeout (the model makes a new tool call, with a new id, and the same arguments).
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from langchain.agents import create_agent
from langchain_core.messages import HumanMessage
from langgraph.checkpoint.memory import InMemorySaver
from pydantic import SecretStr

from mai_tools import MAIImageGenerateTool
from mai_tools.emulator import EmulatorConfig, RunningEmulator, run_emulator

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from examples.langgraph_durable import TASK, ScriptedModel  # noqa: E402

TIMEOUT = 1.0
TRIES = 5
Scenario = Callable[[RunningEmulator], Awaitable[bool]]


def _tool(emu: RunningEmulator) -> MAIImageGenerateTool:
    return MAIImageGenerateTool(api_key=SecretStr(emu.api_key), base_url=emu.base_url)


async def wait_for_then_same_call(emu: RunningEmulator) -> bool:
    tool = _tool(emu)
    for _ in range(TRIES):
        try:
            await asyncio.wait_for(tool.ainvoke({"prompt": "a lighthouse at dawn"}), TIMEOUT)
        except TimeoutError:
            continue
        return True
    return False


async def step_timeout_then_resume(emu: RunningEmulator) -> bool:
    agent: Any = create_agent(ScriptedModel(), tools=[_tool(emu)], checkpointer=InMemorySaver())
    agent.step_timeout = TIMEOUT
    config: Any = {"configurable": {"thread_id": "bench"}}
    request: Any = {"messages": [HumanMessage(TASK)]}
    for _ in range(TRIES):
        try:
            await agent.ainvoke(request, config, durability="sync")
        except TimeoutError:
            request = None  # resume the thread from its checkpoint
            continue
        return True
    return False


async def step_timeout_then_ask_again(emu: RunningEmulator) -> bool:
    agent: Any = create_agent(ScriptedModel(), tools=[_tool(emu)])
    agent.step_timeout = TIMEOUT
    for _ in range(TRIES):
        try:
            await agent.ainvoke({"messages": [HumanMessage(TASK)]})
        except TimeoutError:
            continue
        return True
    return False


def kill_9_then_resume(book: str | None) -> tuple[int, bool]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIXAZO_")}
    env.pop("MAI_JOB_BOOK", None)
    if book is not None:
        env["MAI_JOB_BOOK"] = book
    with tempfile.TemporaryDirectory() as cwd:
        proc = subprocess.run(
            [sys.executable, str(ROOT / "examples" / "langgraph_durable.py")],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            check=False,
            timeout=300,
        )
    found = re.search(r"the gateway made (\d+) job", proc.stdout)
    if found is None:
        raise SystemExit(f"the example failed:\n{proc.stdout}\n{proc.stderr}")
    return int(found.group(1)), "[generate_image] http" in proc.stdout


async def measure(emu: RunningEmulator, scenario: Scenario, book: str) -> tuple[int, bool]:
    emu.control.reset()
    os.environ["MAI_JOB_BOOK"] = book
    answered = await scenario(emu)
    return emu.control.stats().jobs_created, answered


def _cell(jobs: int, answered: bool) -> str:
    return f"{jobs} job{'s' if jobs != 1 else ''}{'' if answered else ', no image'}"


async def main() -> None:
    rows = [("kill -9 mid-wait + resume (SqliteSaver)", kill_9_then_resume("off"))]
    after = [kill_9_then_resume(None)]
    scenarios: list[tuple[str, Scenario]] = [
        ("asyncio.wait_for 1 s + same call", wait_for_then_same_call),
        ("step_timeout 1 s + resume (InMemorySaver)", step_timeout_then_resume),
        ("step_timeout 1 s + ask again (no checkpointer)", step_timeout_then_ask_again),
    ]
    config = EmulatorConfig(min_duration=3, max_duration=3)
    with tempfile.TemporaryDirectory() as tmp, run_emulator(config) as emu:
        for n, (name, scenario) in enumerate(scenarios):
            rows.append((name, await measure(emu, scenario, "off")))
            after.append(await measure(emu, scenario, str(Path(tmp) / f"book-{n}.sqlite3")))
    print("| scenario (one image asked for) | before (MAI_JOB_BOOK=off) | after (job book) |")
    print("|---|---|---|")
    for (name, before), now in zip(rows, after, strict=True):
        print(f"| {name} | {_cell(*before)} | {_cell(*now)} |")


if __name__ == "__main__":
    asyncio.run(main())
