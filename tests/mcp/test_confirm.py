"""Confirmation for costly calls (``--confirm-above``): real SDK clients with an
``elicitation_callback``, on the handshake protocol (a mid-call ``elicitation/create``) and on
2026-07-28 (an ``input_required`` result the client answers by calling again), for waiting
calls and for MCP tasks. What counts is the emulator's submission count: a "no" sends nothing.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Literal

import pytest
from mcp import Client, MCPError, StdioServerParameters
from mcp.client.context import ClientRequestContext
from mcp.client.session import ClientSession
from mcp.client.stdio import stdio_client
from mcp.server.context import ServerRequestContext
from mcp.types import (
    CallToolResult,
    ElicitRequestFormParams,
    ElicitRequestParams,
    ElicitResult,
    ErrorData,
    InputRequiredResult,
    InputResponses,
    TextContent,
)

from mai_tools.emulator import RunningEmulator
from mcp_server import Settings, create_server
from mcp_server._confirm import Confirmation, ConfirmPolicy
from tests.mcp.test_mcp_tasks import TasksClient
from tests.support.fakes import KEY

ROOT = Path(__file__).resolve().parents[2]
MODES = ["legacy", "auto"]
"""The handshake (2025-11-25) and the modern protocol (``auto`` negotiates 2026-07-28)."""
Action = Literal["accept", "decline", "cancel", "unticked"]


@pytest.fixture
def emu(emulators: Any) -> RunningEmulator:
    quick: RunningEmulator = emulators(api_keys=(KEY,), min_duration=0.05, max_duration=0.05)
    return quick


def _settings(emu: RunningEmulator, **kw: Any) -> Settings:
    return Settings(api_key=KEY, base_url=emu.base_url, preview="off", max_wait=30, **kw)


class User:
    """An elicitation callback that answers every question the same way and keeps them."""

    def __init__(self, action: Action = "accept") -> None:
        self.action = action
        self.asked: list[ElicitRequestParams] = []

    async def __call__(
        self, context: ClientRequestContext, params: ElicitRequestParams
    ) -> ElicitResult | ErrorData:
        self.asked.append(params)
        if self.action == "accept":
            return ElicitResult(action="accept", content={"confirm": True})
        if self.action == "unticked":
            return ElicitResult(action="accept", content={"confirm": False})
        return ElicitResult(action=self.action)


def _text(result: CallToolResult) -> str:
    first = result.content[0]
    assert isinstance(first, TextContent)
    return first.text


def _question(user: User) -> ElicitRequestFormParams:
    (asked,) = user.asked
    assert isinstance(asked, ElicitRequestFormParams)
    return asked


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    ("action", "sent"), [("accept", 1), ("decline", 0), ("cancel", 0), ("unticked", 0)]
)
async def test_a_costly_call_is_sent_only_when_the_user_confirms(
    emu: RunningEmulator, mode: str, action: Action, sent: int
) -> None:
    user = User(action)
    server = create_server(_settings(emu, confirm_above=1))
    async with Client(server, mode=mode, elicitation_callback=user) as client:
        result = await client.call_tool(
            "generate_image", {"prompt": "a fox   in\nthe snow", "num_images": 3}
        )
        era = client.protocol_version
    assert era == ("2025-11-25" if mode == "legacy" else "2026-07-28")
    question = _question(user)
    assert question.message.startswith("Make 3 images for the prompt “a fox in the snow”?")
    assert list(question.requested_schema["properties"]) == ["confirm"]
    assert question.requested_schema["properties"]["confirm"]["type"] == "boolean"
    assert emu.control.stats().submissions == sent
    if sent:
        assert not result.is_error, _text(result)
        assert result.structured_content is not None
        assert result.structured_content["done"] is True
        return
    # Plainly refused, nothing sent, and not an invitation to try again.
    assert result.is_error
    text = _text(result)
    assert text.startswith("Not sent: the user did not confirm making 3 images")
    assert "No job was made and nothing was charged." in text
    assert "Do not repeat this call" in text
    assert result.structured_content is None


@pytest.mark.parametrize("mode", MODES)
async def test_calls_at_or_below_the_threshold_are_never_asked(
    emu: RunningEmulator, mode: str
) -> None:
    user = User("decline")
    async with Client(
        create_server(_settings(emu, confirm_above=2)), mode=mode, elicitation_callback=user
    ) as client:
        two = await client.call_tool("generate_image", {"prompt": "two cats", "num_images": 2})
        one = await client.call_tool("generate_image", {"prompt": "one cat"})
    async with Client(create_server(_settings(emu)), mode=mode, elicitation_callback=user) as c:
        off = await c.call_tool("generate_image", {"prompt": "four cats", "num_images": 4})
    assert user.asked == []  # off by default; "above 2" asks for 3 and 4 only
    assert [r.is_error for r in (two, one, off)] == [False, False, False]
    assert emu.control.stats().submissions == 3


@pytest.mark.parametrize("mode", MODES)
async def test_an_edit_is_asked_too(emu: RunningEmulator, mode: str) -> None:
    user = User("decline")
    image = f"{emu.base_url}/files/source.png"
    async with Client(
        create_server(_settings(emu, confirm_above=0)), mode=mode, elicitation_callback=user
    ) as client:
        result = await client.call_tool("edit_image", {"prompt": "make it blue", "image": image})
    assert _question(user).message.startswith("Make 1 edited image for the prompt “make it blue”?")
    assert result.is_error
    assert emu.control.stats().submissions == 0


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(("choice", "sent"), [("refuse", 0), ("proceed", 1)])
async def test_a_client_that_cannot_be_asked_gets_the_operators_choice(
    emu: RunningEmulator, mode: str, choice: str, sent: int
) -> None:
    settings = _settings(emu, confirm_above=1, if_unconfirmable=choice)
    # No elicitation_callback: the SDK client declares no elicitation capability (and its
    # default handler would answer a question with an error, which would read differently).
    async with Client(create_server(settings), mode=mode) as client:
        result = await client.call_tool("generate_image", {"prompt": "a crowd", "num_images": 2})
    assert emu.control.stats().submissions == sent
    if sent:
        assert not result.is_error, _text(result)
        return
    assert result.is_error
    text = _text(result)
    assert text.startswith(
        "Not sent: this server asks the user to confirm calls of more than 1 image, and this "
        "client cannot ask the user"
    )
    assert "call again with num_images at most 1" in text
    assert "asking the user failed" not in text  # it was never asked


async def test_the_default_for_a_client_that_cannot_be_asked_is_refuse(
    emu: RunningEmulator,
) -> None:
    assert Settings().if_unconfirmable == "refuse"
    async with Client(create_server(_settings(emu, confirm_above=0))) as client:
        result = await client.call_tool("generate_image", {"prompt": "a single sheep"})
    assert result.is_error
    assert "confirm every image job" in _text(result)
    assert "Do not repeat this call" in _text(result)
    assert emu.control.stats().submissions == 0


@pytest.mark.parametrize(
    ("action", "tasks_created"), [("accept", 1), ("decline", 0), ("cancel", 0)]
)
async def test_a_task_is_asked_before_it_is_created(
    emu: RunningEmulator, action: Action, tasks_created: int
) -> None:
    user = User(action)
    tasks = TasksClient()
    async with Client(
        create_server(_settings(emu, confirm_above=1)),
        extensions=[tasks],
        elicitation_callback=user,
    ) as client:
        result = await client.call_tool("generate_image", {"prompt": "a task", "num_images": 2})
    assert _question(user).message.startswith("Make 2 images")
    assert len(tasks.created) == tasks_created
    assert emu.control.stats().submissions == tasks_created
    if tasks_created:
        assert not result.is_error, _text(result)
        assert result.structured_content is not None
        assert result.structured_content["request_id"] == tasks.created[0].task_id
    else:
        assert result.is_error
        assert _text(result).startswith("Not sent: the user did not confirm")


async def test_a_task_from_a_client_that_cannot_be_asked_is_refused(
    emu: RunningEmulator,
) -> None:
    tasks = TasksClient()
    async with Client(create_server(_settings(emu, confirm_above=1)), extensions=[tasks]) as client:
        result = await client.call_tool("generate_image", {"prompt": "a task", "num_images": 2})
    assert tasks.created == []
    assert result.is_error
    assert emu.control.stats().submissions == 0


@pytest.mark.parametrize("mode", MODES)
async def test_the_limits_precheck_comes_before_the_question(
    emu: RunningEmulator, mode: str
) -> None:
    seen: list[tuple[str, int]] = []

    async def precheck(
        ctx: ServerRequestContext[Any, Any], tool: str, args: Any
    ) -> CallToolResult | None:
        seen.append((tool, args.num_images))
        if args.num_images < 4:
            return None
        text = "Refused by the daily image limit: 3 images left today; it resets at 00:00 UTC."
        return CallToolResult(content=[TextContent(type="text", text=text)], is_error=True)

    user = User("accept")
    server = create_server(_settings(emu, confirm_above=1), precheck=precheck)
    async with Client(server, mode=mode, elicitation_callback=user) as client:
        over = await client.call_tool("generate_image", {"prompt": "many cats", "num_images": 4})
        assert user.asked == []  # refused by the limits: the user is not asked
        within = await client.call_tool("generate_image", {"prompt": "a cat", "num_images": 3})
    assert over.is_error
    assert _text(over).startswith("Refused by the daily image limit")
    assert not within.is_error, _text(within)
    assert len(user.asked) == 1
    # Checked before asking, and (2026-07-28) again on the call that brings the answer.
    assert set(seen) == {("generate_image", 4), ("generate_image", 3)}
    assert emu.control.stats().submissions == 1


def test_the_question_shows_the_estimated_cost_when_a_price_is_known() -> None:
    from decimal import Decimal

    from mai_tools._tools import GenerateImageArgs

    priced: dict[str, Any] = {
        "price_per_image": Decimal("0.05"),
        "currency": "USD",
        "above_cost": Decimal("0.10"),
    }
    policy = ConfirmPolicy(above_images=None, **priced)
    assert not policy.needs_confirmation(2)  # 0.10 is not above 0.10
    assert policy.needs_confirmation(3)
    args = GenerateImageArgs(prompt="x" * 500, num_images=3)
    question = policy.question("generate_image", args)
    first, cost, last = question.splitlines()
    assert len(first) < 160
    assert first.endswith("…”?")
    assert cost == "Estimated cost: 0.15 USD."
    assert "charged" in last
    # A client that cannot be asked is told which rule asked, whether count or cost.
    by_cost = Confirmation(ConfirmPolicy(above_images=3, **priced)).unconfirmable(
        "generate_image", 3
    )
    assert by_cost is not None
    assert "confirm calls estimated to cost more than 0.10 USD" in _text(by_cost)


async def test_a_raw_client_session_over_stdio(emu: RunningEmulator, tmp_path: Path) -> None:
    """Another client: the SDK's low-level ClientSession (the v1 style, a handshake) against
    ``mai-image-mcp`` itself, configured by its environment variables."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIXAZO_", "MAI_MCP_"))}
    env.update(
        PIXAZO_API_KEY=KEY,
        PIXAZO_BASE_URL=emu.base_url,
        MAI_MCP_PREVIEW="off",
        MAI_MCP_CONFIRM_ABOVE="1",
    )
    bin_dir = Path(sys.executable).parent
    params = StdioServerParameters(command=str(bin_dir / "mai-image-mcp"), cwd=str(ROOT), env=env)
    answers: list[Action] = ["decline", "accept"]
    user = User()

    async def callback(
        context: ClientRequestContext, params: ElicitRequestParams
    ) -> ElicitResult | ErrorData:
        user.action = answers.pop(0)
        return await user(context, params)

    with (tmp_path / "stderr.log").open("w+") as errlog:
        async with (
            stdio_client(params, errlog=errlog) as (read, write),
            ClientSession(read, write, elicitation_callback=callback) as session,
        ):
            await session.initialize()
            args = {"prompt": "a stdio fox", "num_images": 2}
            declined = await session.call_tool("generate_image", args)
            assert emu.control.stats().submissions == 0
            accepted = await session.call_tool("generate_image", args)
    assert declined.is_error
    assert not accepted.is_error
    assert len(user.asked) == 2
    assert emu.control.stats().submissions == 1


@pytest.mark.parametrize("mode", MODES)
async def test_over_http(emu: RunningEmulator, mode: str) -> None:
    """Over Streamable HTTP: on 2026-07-28 the answer comes back in a second HTTP request,
    carrying the sealed request state the first one minted (bound to these arguments)."""
    import httpx2
    from mcp.client.streamable_http import streamable_http_client

    from tests.mcp.test_http_security import TOKEN, _server

    user = User("decline")
    with _server(emu, auth_token=TOKEN, confirm_above=1) as origin:
        async with (
            httpx2.AsyncClient(headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60) as http,
            Client(
                streamable_http_client(f"{origin}/mcp", http_client=http),
                mode=mode,
                elicitation_callback=user,
            ) as client,
        ):
            args = {"prompt": "an http fox", "num_images": 2}
            declined = await client.call_tool("generate_image", args)
            user.action = "accept"
            accepted = await client.call_tool("generate_image", args)
    assert declined.is_error
    assert _text(declined).startswith("Not sent: the user did not confirm")
    assert not accepted.is_error, _text(accepted)
    assert len(user.asked) == 2
    assert emu.control.stats().submissions == 1


async def test_an_answer_to_a_question_never_asked_does_not_count(emu: RunningEmulator) -> None:
    """On 2026-07-28 a client may send answers with its first call; a "yes" the server never
    asked for (no request state proving the question) is ignored and the user is asked."""
    user = User("decline")
    forged: InputResponses = {
        "mcp_server._confirm:confirm_costly_call": ElicitResult(
            action="accept", content={"confirm": True}
        )
    }
    async with Client(
        create_server(_settings(emu, confirm_above=1)), elicitation_callback=user
    ) as client:
        result = await client.call_tool(
            "generate_image", {"prompt": "a sly fox", "num_images": 2}, input_responses=forged
        )
    assert len(user.asked) == 1
    assert result.is_error
    assert emu.control.stats().submissions == 0


async def test_a_stateless_http_handshake_cannot_carry_the_question(
    emu: RunningEmulator,
) -> None:
    """Stateless HTTP on the 2025 protocol has no channel for a server request: the client
    declared elicitation, but asking it would fail, so the operator's choice answers."""
    import httpx2
    from mcp.client.streamable_http import streamable_http_client

    from mcp_server._http import http_app
    from tests.mcp.test_http_security import TOKEN
    from tests.support.serving import free_socket, serving

    user = User("accept")
    config = _settings(emu, auth_token=TOKEN, confirm_above=1)
    sock = free_socket()
    app = http_app(create_server(config), config, port=sock.getsockname()[1], stateless=True)
    with serving(app, sock) as origin:
        async with (
            httpx2.AsyncClient(headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60) as http,
            Client(
                streamable_http_client(f"{origin}/mcp", http_client=http),
                mode="legacy",
                elicitation_callback=user,
            ) as client,
        ):
            result = await client.call_tool("generate_image", {"prompt": "x y z", "num_images": 2})
    assert user.asked == []
    assert result.is_error
    assert "this client cannot ask the user" in _text(result)
    assert emu.control.stats().submissions == 0


@pytest.mark.parametrize(
    ("variable", "flag", "bad", "says"),
    [
        ("MAI_MCP_CONFIRM_ABOVE", "--confirm-above", "-1", "greater than or equal to 0"),
        ("MAI_MCP_CONFIRM_ABOVE", "--confirm-above", "two", "a valid integer"),
        ("MAI_MCP_IF_UNCONFIRMABLE", "--if-unconfirmable", "maybe", "'refuse' or 'proceed'"),
    ],
)
def test_a_bad_setting_stops_the_server_at_start(
    monkeypatch: pytest.MonkeyPatch, variable: str, flag: str, bad: str, says: str
) -> None:
    from click.testing import CliRunner

    from mcp_server import SettingsError
    from mcp_server.__main__ import cli

    for key in [k for k in os.environ if k.startswith(("MAI_MCP_", "PIXAZO_"))]:
        monkeypatch.delenv(key)
    monkeypatch.setenv(variable, bad)
    with pytest.raises(SettingsError) as caught:
        Settings.from_env()
    assert str(caught.value).startswith(f"{variable}: ")
    assert says in str(caught.value)
    monkeypatch.delenv(variable)
    result = CliRunner().invoke(cli, [flag, bad])
    assert result.exit_code == 2, result.output
    assert flag in result.output
    # Case does not matter for the choice, and the variable is read.
    monkeypatch.setenv("MAI_MCP_IF_UNCONFIRMABLE", "Proceed")
    monkeypatch.setenv("MAI_MCP_CONFIRM_ABOVE", "2")
    settings = Settings.from_env()
    assert (settings.if_unconfirmable, settings.confirm_above) == ("proceed", 2)


@pytest.mark.parametrize("mode", MODES)
async def test_a_client_whose_question_fails_sends_nothing(emu: RunningEmulator, mode: str) -> None:
    """The client declared elicitation but answers the question with an error: nobody said
    yes. (On 2026-07-28 the SDK client itself raises the error from its retry loop.)"""

    async def broken(
        context: ClientRequestContext, params: ElicitRequestParams
    ) -> ElicitResult | ErrorData:
        return ErrorData(code=-32603, message="the host's dialog crashed")

    async with Client(
        create_server(_settings(emu, confirm_above=1)), mode=mode, elicitation_callback=broken
    ) as client:
        if mode == "legacy":
            result = await client.call_tool("generate_image", {"prompt": "abc", "num_images": 2})
            assert result.is_error
            assert "asking the user failed" in _text(result)
        else:
            with pytest.raises(MCPError, match="dialog crashed"):
                await client.call_tool("generate_image", {"prompt": "abc", "num_images": 2})
    assert emu.control.stats().submissions == 0


STATE_KEY = "sk-canary-request-state-key-0123456789abcdef"  # the suite's log guard looks for it


@pytest.mark.parametrize(("shared", "sent"), [(True, 1), (False, 0)])
async def test_the_answer_may_reach_another_replica_with_a_shared_key(
    emu: RunningEmulator, shared: bool, sent: int
) -> None:
    """2026-07-28: the question is asked by one replica and the answer lands on another. With
    MAI_MCP_REQUEST_STATE_KEY the same on both, that replica sends the job; without it, the
    state is refused (-32602) and nothing is sent."""
    key = {"request_state_key": STATE_KEY} if shared else {}
    user = User("accept")
    first = create_server(_settings(emu, confirm_above=1, **key))
    other = create_server(_settings(emu, confirm_above=1, **key))
    args = {"prompt": "a fox on two replicas", "num_images": 2}
    async with (
        Client(first, elicitation_callback=user) as a,
        Client(other, elicitation_callback=user) as b,
    ):
        asked = await a.session.call_tool("generate_image", args, allow_input_required=True)
        assert isinstance(asked, InputRequiredResult)
        assert asked.input_requests is not None
        (question,) = asked.input_requests
        assert asked.request_state is not None
        assert STATE_KEY not in asked.request_state
        answer: InputResponses = {
            question: ElicitResult(action="accept", content={"confirm": True})
        }
        if shared:
            result = await b.session.call_tool(
                "generate_image", args, input_responses=answer, request_state=asked.request_state
            )
            assert not result.is_error, _text(result)
        else:
            with pytest.raises(MCPError, match="Invalid or expired requestState"):
                await b.session.call_tool(
                    "generate_image",
                    args,
                    input_responses=answer,
                    request_state=asked.request_state,
                )
    assert emu.control.stats().submissions == sent


def test_a_short_request_state_key_stops_the_server_and_is_never_shown(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from mcp_server import SettingsError

    for key in [k for k in os.environ if k.startswith(("MAI_MCP_", "PIXAZO_"))]:
        monkeypatch.delenv(key)
    short = "sk-canary-short-key"
    monkeypatch.setenv("MAI_MCP_REQUEST_STATE_KEY", short)
    with pytest.raises(SettingsError) as caught:
        Settings.from_env()
    assert str(caught.value).startswith("MAI_MCP_REQUEST_STATE_KEY: the key is too short")
    assert short not in str(caught.value)
    monkeypatch.setenv("MAI_MCP_REQUEST_STATE_KEY", STATE_KEY)
    settings = Settings.from_env()
    assert STATE_KEY not in repr(settings)
    assert settings.request_state_key is not None


_FASTMCP_USER = """
import asyncio, json, sys
import fastmcp_tasks  # noqa: F401  # opts in to SEP-2663 tasks
from fastmcp import Client
from fastmcp.client.elicitation import ElicitResult
from fastmcp.client.transports import StdioTransport

async def main():
    env, cwd = json.loads(sys.argv[2]), sys.argv[3]
    answers, asked, results = ["decline", "accept"], [], []

    async def user(message, response_type, params, context):
        asked.append(message)
        action = answers.pop(0)
        return {"confirm": True} if action == "accept" else ElicitResult(action=action)

    transport = StdioTransport(command=sys.argv[1], args=["-m", "mcp_server"], env=env, cwd=cwd)
    async with Client(transport, init_timeout=60, elicitation_handler=user) as client:
        for _ in range(2):
            result = await client.call_tool(
                "generate_image", {"prompt": "via fastmcp", "num_images": 2}, raise_on_error=False
            )
            results.append({"is_error": result.is_error, "text": result.content[0].text})
        era = client.session.protocol_version
    print(json.dumps({"era": era, "asked": asked, "results": results}))

asyncio.run(main())
"""


def test_fastmcps_client_is_asked_over_stdio(emu: RunningEmulator) -> None:
    """A client nobody here wrote: fastmcp's, with an elicitation handler and fastmcp-tasks
    (2026-07-28, so the question comes as an input_required result before the task)."""
    import json
    import subprocess

    from tests.mcp.test_mcp_tasks import TASKS_VENV

    if not TASKS_VENV.exists():
        pytest.skip(
            "no tasks-client environment: python -m venv .ci/tasks-venv && "
            '.ci/tasks-venv/bin/pip install "pydantic-ai-slim[mcp,mcp-tasks]"'
        )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIXAZO_", "MAI_MCP_"))}
    env.update(
        PIXAZO_API_KEY=KEY,
        PIXAZO_BASE_URL=emu.base_url,
        MAI_MCP_PREVIEW="off",
        MAI_MCP_CONFIRM_ABOVE="1",
    )
    ran = subprocess.run(
        [str(TASKS_VENV), "-c", _FASTMCP_USER, sys.executable, json.dumps(env), str(ROOT)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert ran.returncode == 0, ran.stderr[-3000:]
    out = json.loads(ran.stdout.strip().splitlines()[-1])
    assert out["era"] == "2026-07-28"
    assert len(out["asked"]) == 2
    assert out["asked"][0].startswith("Make 2 images for the prompt “via fastmcp”?")
    declined, accepted = out["results"]
    assert declined["is_error"]
    assert declined["text"].startswith("Not sent: the user did not confirm")
    assert not accepted["is_error"], accepted["text"]
    assert emu.control.stats().submissions == 1


def test_the_mcp_inspector_cli_cannot_be_asked_and_is_refused(emu: RunningEmulator) -> None:
    """The MCP Inspector's CLI declares no elicitation: it is never asked, and the default
    (refuse) answers, on both eras, with nothing sent."""
    import json
    import subprocess

    from tests.mcp.test_mcp_tasks import _inspector

    inspector = _inspector()
    if inspector is None:
        pytest.skip("MCP Inspector not installed (npm install --prefix .ci/node ...)")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIXAZO_", "MAI_MCP_"))}
    server_env = {
        "PIXAZO_API_KEY": KEY,
        "PIXAZO_BASE_URL": emu.base_url,
        "MAI_MCP_CONFIRM_ABOVE": "0",
    }
    env_args = [a for k, v in server_env.items() for a in ("-e", f"{k}={v}")]
    call = [inspector, "--cli", sys.executable, "-m", "mcp_server", *env_args, "--method"]
    call += ["tools/call", "--tool-name", "generate_image", "--tool-arg", "prompt=an inspector cat"]
    for era in ("modern", "legacy"):
        ran = subprocess.run(
            [*call, "--protocol-era", era],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        result = json.loads(ran.stdout)  # exit status 5: the tool answered isError
        assert result["isError"] is True, (era, ran.stdout, ran.stderr)
        assert result["content"][0]["text"].startswith(
            "Not sent: this server asks the user to confirm every image job"
        )
    assert emu.control.stats().submissions == 0


async def test_one_principals_yes_does_not_stand_for_anothers_call(
    emu: RunningEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    """Two principals over authenticated HTTP (2026-07-28): Bob sending Alice's sealed
    request state with a "yes" for the very same arguments is refused and sends nothing;
    Alice's own answer sends her job."""
    import contextlib
    from collections.abc import AsyncIterator

    import httpx2
    from mcp.client.streamable_http import streamable_http_client

    from tests.support.team import TOKENS, team_server

    @contextlib.asynccontextmanager
    async def caller(url: str, name: str) -> AsyncIterator[Client]:
        headers = {"Authorization": f"Bearer {TOKENS[name]}"}
        async with (
            httpx2.AsyncClient(headers=headers, timeout=30) as http,
            Client(
                streamable_http_client(url, http_client=http), elicitation_callback=User()
            ) as client,
        ):
            yield client

    args = {"prompt": "alice's foxes", "num_images": 2}
    with team_server(emu, confirm_above=1) as url:
        async with caller(url, "alice") as alice, caller(url, "bob") as bob:
            asked = await alice.session.call_tool("generate_image", args, allow_input_required=True)
            assert isinstance(asked, InputRequiredResult)
            assert asked.input_requests is not None
            (question,) = asked.input_requests
            yes: InputResponses = {
                question: ElicitResult(action="accept", content={"confirm": True})
            }
            state = asked.request_state
            with pytest.raises(MCPError, match="Invalid or expired requestState"):
                await bob.session.call_tool(
                    "generate_image", args, input_responses=yes, request_state=state
                )
            assert emu.control.stats().submissions == 0
            # Refused for whose it is (the SDK logs the reason; the wire says only "invalid").
            assert "requestState rejected on tools/call: principal" in caplog.text
            sent = await alice.session.call_tool(
                "generate_image", args, input_responses=yes, request_state=state
            )
    assert not sent.is_error, _text(sent)
    assert emu.control.stats().submissions == 1
