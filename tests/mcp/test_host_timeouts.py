"""A client that gives up on tool calls early (the OpenAI Agents SDK: 5 s) shows its timeout
in ``notifications/cancelled``; from then on its calls answer within it ("still running",
with the request id and how long such jobs usually take) instead of being cut off again, and
the cut-off call's job is continued, not paid twice.

Jobs run on a :class:`ManualClock`: they never finish during these tests, whatever the
machine's speed.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import pytest
from mcp import Client, MCPError, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.types import TextContent

from mai_tools import AsyncMAIImageClient
from mai_tools._agent import Running, answer_text, structured
from mai_tools._policies import DurationStats
from mai_tools.emulator import RunningEmulator
from mcp_server import Settings, create_server
from mcp_server._host_timeouts import answer_within, timeout_of
from tests.support.emulators import held_emulator
from tests.support.fakes import KEY

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("reason", "seconds"),
    [
        ("timed out after 5s", 5.0),  # OpenAI Agents SDK, the mcp SDK client
        ("timed out after 0.5s", 0.5),
        ("Request timed out after 30000ms", 30.0),
        ("MCP error -32001: Request timed out (timeout: 60 seconds)", 60.0),
        ("Timeout of 12 sec reached", 12.0),
        ("caller cancelled", None),
        ("timed out", None),
        ("timed out after 0s", None),
        ("", None),
        (None, None),
        (42, None),
    ],
)
def test_the_timeout_a_cancellation_reason_names(reason: object, seconds: float | None) -> None:
    assert timeout_of(reason) == seconds


def test_a_call_answers_well_inside_the_clients_timeout() -> None:
    assert answer_within(5.0) == 3.5
    assert answer_within(30.0) == 24.0
    assert answer_within(1.0) == 1.0  # never below the time a submit needs


def test_a_still_running_answer_says_how_long_such_jobs_usually_take() -> None:
    durations = DurationStats()
    for seconds in (20.0, 31.0, 40.0):
        durations.record("generate", seconds)
    rid = "microsoft-mai-image-2-5_01a24f9b-34b9-74c4-b4b1-3dce59afc463"
    running = Running(rid, "PROCESSING", 3.5).expecting(durations)
    assert running.typical == 31.0
    assert "usually take about 31s in all" in answer_text(running)
    assert structured(running).typical_seconds == 31.0
    unknown = Running(rid, "PROCESSING", 3.5).expecting(DurationStats())
    assert "usually" not in answer_text(unknown)
    assert structured(unknown).typical_seconds is None


@pytest.fixture
def held() -> Iterator[RunningEmulator]:
    with held_emulator(30, api_keys=(KEY,)) as (emu, _clock):
        yield emu


async def test_after_one_cut_off_call_the_client_gets_a_still_running_answer_in_time(
    held: RunningEmulator,
) -> None:
    durations = DurationStats()
    durations.record("generate", 30.0)
    settings = Settings(api_key=KEY, base_url=held.base_url, preview="off", max_wait=120)
    args = {"prompt": "a lighthouse that takes its time"}
    async with (
        AsyncMAIImageClient(KEY, base_url=held.base_url, durations=durations) as api,
        Client(create_server(settings, client=api), mode="legacy") as client,
    ):
        with pytest.raises(MCPError, match="timed out"):  # the host gives up after 1 s
            await client.call_tool("generate_image", args, read_timeout_seconds=1.0)
        # Without the learned timeout this call would wait 120 s and be cut off at 60.
        again = await client.call_tool("generate_image", args, read_timeout_seconds=60)
        later = await client.call_tool(
            "get_image_job",
            {"request_id": (again.structured_content or {}).get("request_id", "")},
            read_timeout_seconds=60,
        )
    assert not again.is_error
    first = again.content[0]
    assert isinstance(first, TextContent)
    assert "still running" in first.text
    assert "usually take about 30s in all" in first.text
    assert again.structured_content is not None
    assert again.structured_content["typical_seconds"] == 30.0
    assert not later.is_error
    assert held.control.stats().jobs_created == 1  # the cut-off call's job, continued


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_a_stdio_server_learns_the_timeout_in_both_protocol_eras(
    held: RunningEmulator, mode: Literal["legacy", "auto"], tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIXAZO_", "MAI_MCP_"))}
    env |= {
        "PIXAZO_API_KEY": KEY,
        "PIXAZO_BASE_URL": held.base_url,
        "MAI_MCP_MAX_WAIT": "120",
        "MAI_MCP_PREVIEW": "off",
        "XDG_CACHE_HOME": str(tmp_path / "cache"),  # no durations learned by earlier runs
    }
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "mcp_server"], cwd=str(ROOT), env=env
    )
    args = {"prompt": "a stdio lighthouse"}
    with (tmp_path / "stderr.log").open("w") as errlog:
        async with Client(stdio_client(params, errlog=errlog), mode=mode) as client:
            with pytest.raises(MCPError, match="timed out"):
                await client.call_tool("generate_image", args, read_timeout_seconds=1.0)
            again = await client.call_tool("generate_image", args, read_timeout_seconds=60)
    assert not again.is_error
    first = again.content[0]
    assert isinstance(first, TextContent)
    assert "still running" in first.text
    assert held.control.stats().jobs_created == 1
