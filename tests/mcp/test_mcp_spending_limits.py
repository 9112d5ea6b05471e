"""Spending limits on the MCP server: a refused call is an ``isError`` result that says the
limit, what is left and when it resets (never "try again"), and nothing reaches the gateway
(the emulator counts every submission). Concurrent callers racing for the last slots create
exactly the cap.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import anyio
import pytest
from click.testing import CliRunner
from mcp import Client
from mcp.client.context import ClientRequestContext
from mcp.types import CallToolResult, ElicitRequestParams, ElicitResult, TextContent

from mai_tools import AsyncMAIImageClient, SpendingLimitError, SpendingLimits
from mai_tools._tools import GenerateImageArgs
from mai_tools.emulator import EmulatorConfig, RunningEmulator, run_emulator
from mai_tools.jobbook import JobScope
from mcp_server import Settings, SettingsError, create_server
from mcp_server.__main__ import cli
from mcp_server._limit_values import limits_of
from mcp_server._limits import check_limits
from mcp_server._state import ServerState
from tests.mcp.test_mcp_tasks import TasksClient
from tests.support.fakes import KEY
from tests.support.team import as_principal, team_server

CAP = 5
CALLERS = 50


@pytest.fixture(scope="module")
def module_emu() -> Iterator[RunningEmulator]:
    with run_emulator(EmulatorConfig(api_keys=(KEY,), min_duration=0.0, max_duration=0.1)) as emu:
        yield emu


@pytest.fixture
def emu(module_emu: RunningEmulator) -> RunningEmulator:
    module_emu.control.reset()
    return module_emu


def _settings(emu: RunningEmulator, **kw: Any) -> Settings:
    return Settings(api_key=KEY, base_url=emu.base_url, preview="off", **kw)


def _text(result: CallToolResult) -> str:
    first = result.content[0]
    assert isinstance(first, TextContent)
    return first.text


async def test_a_call_past_the_daily_limit_is_refused_before_anything_is_sent(
    emu: RunningEmulator,
) -> None:
    async with Client(create_server(_settings(emu, daily_images=3))) as client:
        first = await client.call_tool("generate_image", {"prompt": "a fox", "num_images": 2})
        assert not first.is_error, _text(first)
        refused = await client.call_tool("generate_image", {"prompt": "a cat", "num_images": 2})
    assert refused.is_error
    text = _text(refused)
    assert "you may make 3 images a day" in text
    assert "1 of the 3 are left today (2 used)" in text
    assert "Nothing was sent" in text
    assert "00:00 UTC" in text
    assert "try again" not in text.lower()
    assert emu.control.stats().submissions == 1


async def test_a_call_asking_for_too_many_images_sends_nothing(emu: RunningEmulator) -> None:
    async with Client(create_server(_settings(emu, max_images_per_call=1))) as client:
        refused = await client.call_tool("generate_image", {"prompt": "a fox", "num_images": 4})
    assert refused.is_error
    assert "at most 1 image, and this one asks for 4" in _text(refused)
    assert "try again" not in _text(refused).lower()
    assert emu.control.stats().submissions == 0


async def test_daily_spend_names_the_money_left(emu: RunningEmulator) -> None:
    settings = _settings(emu, price_per_image="0.04", daily_spend="0.10", currency="eur")
    async with Client(create_server(settings)) as client:
        first = await client.call_tool("generate_image", {"prompt": "a fox", "num_images": 2})
        assert not first.is_error, _text(first)
        refused = await client.call_tool("generate_image", {"prompt": "a cat", "num_images": 2})
    text = _text(refused)
    assert refused.is_error
    assert "0.1 EUR a day" in text
    assert "0.02 EUR is left today (0.08 EUR used)" in text
    assert "this call costs 0.08 EUR (2 image(s) at 0.04 EUR)" in text
    assert emu.control.stats().submissions == 1


async def test_the_client_continues_a_keyed_job_at_the_limit_and_refuses_a_new_one(
    emu: RunningEmulator,
) -> None:
    """The client path: adopting an earlier job (same idempotency key) reserves nothing, so
    the limit never refuses it; a new job past the limit raises before any POST."""
    limits = SpendingLimits(daily_images=1)
    async with AsyncMAIImageClient(KEY, base_url=emu.base_url, spending_limits=limits) as api:
        first = await api.generate("a keyed fox", idempotency_key="step-1")
        again = await api.generate("a keyed fox", idempotency_key="step-1")
        assert again.request_id == first.request_id
        with pytest.raises(SpendingLimitError) as caught:
            await api.generate("another fox", idempotency_key="step-2")
    assert caught.value.limit_name == "daily_images"
    assert caught.value.retryable is False
    assert emu.control.stats().submissions == 1


async def test_fifty_concurrent_callers_create_exactly_the_cap(emu: RunningEmulator) -> None:
    results: list[CallToolResult] = []
    async with Client(create_server(_settings(emu, server_daily_images=CAP))) as client:

        async def caller(i: int) -> None:
            results.append(await client.call_tool("generate_image", {"prompt": f"fox {i}"}))

        async with anyio.create_task_group() as group:
            for i in range(CALLERS):
                group.start_soon(caller, i)
    made = [r for r in results if not r.is_error]
    refused = [r for r in results if r.is_error]
    assert len(made) == CAP
    assert all("for all its users together" in _text(r) for r in refused), _text(refused[0])
    assert emu.control.stats().submissions == CAP


async def test_check_limits_is_a_pre_check_that_reserves_nothing(emu: RunningEmulator) -> None:
    settings = _settings(emu, daily_images=2, max_images_per_call=2)
    state = ServerState.open(settings)
    try:
        scope = JobScope("ann", "mcp")
        two = GenerateImageArgs(prompt="two foxes", num_images=2)
        assert await check_limits(settings, state, scope, "generate_image", two) is None
        # Nothing was reserved: the same call fits again.
        assert await check_limits(settings, state, scope, "generate_image", two) is None
        three = GenerateImageArgs(prompt="three foxes", num_images=3)
        too_many = await check_limits(settings, state, scope, "generate_image", three)
        assert too_many is not None
        assert too_many.is_error
        assert "at most 2 images" in _text(too_many)
        assert emu.control.stats().submissions == 0
    finally:
        await state.aclose()


async def test_a_given_client_must_hold_the_settings_limits(emu: RunningEmulator) -> None:
    settings = _settings(emu, daily_images=2)
    async with AsyncMAIImageClient(KEY, base_url=emu.base_url) as bare:
        with pytest.raises(ValueError, match=r"spending_limits=SpendingLimits\(\.\.\.\) with"):
            ServerState.open(settings, bare)
    limits = limits_of(settings)
    assert limits == SpendingLimits(daily_images=2)
    async with AsyncMAIImageClient(KEY, base_url=emu.base_url, spending_limits=limits) as held:
        assert ServerState.open(settings, held).client is held


@pytest.mark.parametrize(
    ("args", "env", "words"),
    [
        (["--daily-images", "-1"], {}, "--daily-images: Input should be greater than or equal"),
        (["--max-images-per-call", "two"], {}, "--max-images-per-call: Input should be a valid"),
        ([], {"MAI_MCP_SERVER_DAILY_IMAGES": "lots"}, "MAI_MCP_SERVER_DAILY_IMAGES: Input"),
        (["--daily-spend", "5"], {}, "--daily-spend: needs --price-per-image"),
        (["--price-per-image", "$0.04"], {}, "no sign or code"),
        ([], {"MAI_MCP_PRICE_PER_IMAGE": "-1"}, "MAI_MCP_PRICE_PER_IMAGE: price_per_image must"),
        (["--currency", "dollar"], {}, "--currency: currency must be a three-letter"),
    ],
)
def test_bad_limits_stop_the_server_at_start(
    args: list[str], env: dict[str, str], words: str
) -> None:
    result = CliRunner().invoke(cli, args, env={"MAI_JOB_BOOK": "off", **env})
    assert result.exit_code == 2, result.output
    assert words in result.output


def test_settings_read_the_limits_from_the_environment() -> None:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MAI_MCP_DAILY_IMAGES", "20")
        mp.setenv("MAI_MCP_PRICE_PER_IMAGE", "0.04")
        mp.setenv("MAI_MCP_DAILY_SPEND", "1.50")
        settings = Settings.from_env()
    assert limits_of(settings) == SpendingLimits(
        daily_images=20, price_per_image=Decimal("0.04"), daily_spend=Decimal("1.50")
    )
    assert limits_of(Settings()) is None


async def test_a_task_past_the_limit_is_refused_before_a_task_is_made(
    emu: RunningEmulator,
) -> None:
    tasks = TasksClient()
    settings = _settings(emu, daily_images=1, max_wait=30)
    async with Client(create_server(settings), extensions=[tasks]) as client:
        first = await client.call_tool("generate_image", {"prompt": "a task fox"})
        refused = await client.call_tool("generate_image", {"prompt": "a task cat"})
    assert not first.is_error, _text(first)
    assert len(tasks.created) == 1
    assert refused.is_error
    assert "you may make 1 image a day; all 1 are used today" in _text(refused)
    assert emu.control.stats().submissions == 1


async def test_a_refused_call_is_in_the_audit_log_with_its_cost(
    emu: RunningEmulator, tmp_path: Path
) -> None:
    log = tmp_path / "audit.jsonl"
    settings = _settings(emu, daily_images=2, price_per_image="0.04", currency="usd", audit_log=log)
    async with Client(create_server(settings)) as client:
        assert not (await client.call_tool("generate_image", {"prompt": "audited fox"})).is_error
        refused = await client.call_tool(
            "generate_image", {"prompt": "audited cat", "num_images": 2}
        )
    assert refused.is_error
    records = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()]
    assert [r["event"] for r in records] == ["intent", "submitted", "finished", "refused"]
    assert records[2]["estimated_cost"] == "0.04"
    last = records[-1]
    assert (last["tool"], last["num_images"], last["request_id"]) == ("generate_image", 2, None)
    assert last["reason"].startswith("daily_images: Spending limit: you may make 2 images a day")
    assert "prompt" not in last
    assert emu.control.stats().submissions == 1


class _User:
    """An elicitation callback that says yes and counts the questions."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    async def __call__(
        self, context: ClientRequestContext, params: ElicitRequestParams
    ) -> ElicitResult:
        self.asked.append(params.message)
        return ElicitResult(action="accept", content={"confirm": True})


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_the_limits_come_before_a_confirmation(emu: RunningEmulator, mode: str) -> None:
    """The server's own limits are the confirmation's precheck: a call they refuse is not put
    to the user; one within them is asked, with its estimated cost, then sent."""
    user = _User()
    settings = _settings(emu, daily_images=3, confirm_above=1, price_per_image="0.05", max_wait=30)
    async with Client(create_server(settings), mode=mode, elicitation_callback=user) as client:
        over = await client.call_tool("generate_image", {"prompt": "four cats", "num_images": 4})
        assert user.asked == []
        within = await client.call_tool("generate_image", {"prompt": "two cats", "num_images": 2})
    assert over.is_error
    assert "3 images a day" in _text(over)
    assert not within.is_error, _text(within)
    assert len(user.asked) == 1
    assert "Estimated cost: 0.10 USD." in user.asked[0]
    assert emu.control.stats().submissions == 1


async def test_confirm_above_cost_asks_for_calls_estimated_above_it(emu: RunningEmulator) -> None:
    user = _User()
    settings = _settings(emu, price_per_image="0.04", confirm_above_cost="0.10", max_wait=30)
    async with Client(create_server(settings), elicitation_callback=user) as client:
        cheap = await client.call_tool("generate_image", {"prompt": "two dogs", "num_images": 2})
        assert user.asked == []  # 0.08 is not above 0.10
        dear = await client.call_tool("generate_image", {"prompt": "three dogs", "num_images": 3})
    assert not cheap.is_error
    assert not dear.is_error
    assert len(user.asked) == 1
    assert "Estimated cost: 0.12 USD." in user.asked[0]
    with pytest.raises(SettingsError, match=r"confirm_above_cost.*needs --price-per-image"):
        Settings(confirm_above_cost="1")


async def test_each_principal_has_a_day_of_their_own_and_the_server_one_for_all(
    emu: RunningEmulator,
) -> None:
    """Alice and Bob over HTTP with their own named tokens: the per-principal limit counts
    each apart, the server's limit counts them together."""
    with team_server(emu, daily_images=2, server_daily_images=3) as url:
        async with as_principal(url, "alice") as alice, as_principal(url, "bob") as bob:
            a1 = await alice.call_tool("generate_image", {"prompt": "alice one", "num_images": 2})
            a2 = await alice.call_tool("generate_image", {"prompt": "alice two"})
            b1 = await bob.call_tool("generate_image", {"prompt": "bob one"})
            b2 = await bob.call_tool("generate_image", {"prompt": "bob two"})
    assert not a1.is_error, _text(a1)
    assert a2.is_error
    assert "you may make 2 images a day; all 2 are used today" in _text(a2)
    assert not b1.is_error, _text(b1)  # Bob's own day is untouched by Alice's
    assert b2.is_error
    assert "for all its users together" in _text(b2)
    assert emu.control.stats().submissions == 2
