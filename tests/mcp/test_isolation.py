"""Principals on one HTTP server see only their own jobs: listing, reading (get_image_job,
tasks/get, tasks/cancel) and adopting an identical call's undelivered job; another principal's
request id is answered exactly like an unknown one. An operator sees and reads every job.

The servers are real uvicorn servers on loopback ports with a named-tokens file, called by the
SDK's client over Streamable HTTP with each principal's token.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mcp import MCPError
from mcp.client.session import ClientSession
from mcp.types import CallToolResult, TextContent

from mai_tools import GenerateRequest, MAIImageClient
from mai_tools.emulator import EmulatorConfig, RunningEmulator, run_emulator
from mai_tools.jobbook import JobScope
from mcp_server import Settings, SettingsError
from mcp_server._arguments import ARGUMENTS
from mcp_server._jobs import argument_key
from mcp_server._tokens import NamedToken, digest, write
from tests.mcp.test_mcp_tasks import send_task_request
from tests.support.fakes import KEY
from tests.support.team import TOKENS, as_principal, team_server


@pytest.fixture(scope="module")
def module_emu() -> Iterator[RunningEmulator]:
    with run_emulator(EmulatorConfig(api_keys=(KEY,), min_duration=0.1, max_duration=0.1)) as emu:
        yield emu


@pytest.fixture
def emu(module_emu: RunningEmulator) -> RunningEmulator:
    module_emu.control.reset()
    return module_emu


def _text(result: CallToolResult) -> str:
    first = result.content[0]
    assert isinstance(first, TextContent)
    return first.text


def _rid(result: CallToolResult) -> str:
    assert result.structured_content is not None, _text(result)
    rid = result.structured_content["request_id"]
    assert isinstance(rid, str)
    return rid


def _guess(real: str) -> str:
    """An id of the same shape as ``real`` that no job has."""
    return real.rsplit("_", 1)[0] + "_" + str(uuid.uuid4())


def _masked(text: str, rid: str) -> str:
    return text.replace(rid, "<id>")


async def _task_error(session: ClientSession, method: Any, rid: str) -> str:
    with pytest.raises(MCPError) as caught:
        await send_task_request(session, method, rid)
    return _masked(str(caught.value), rid[:80])


async def test_a_principal_sees_only_its_own_jobs_and_foreign_ids_look_unknown(
    emu: RunningEmulator,
) -> None:
    with team_server(emu) as url:
        async with as_principal(url, "alice") as alice:
            made = await alice.call_tool("generate_image", {"prompt": "alice's secret garden"})
            mine = _rid(made)
            assert not (await alice.call_tool("get_image_job", {"request_id": mine})).is_error
        reads_before = emu.control.stats().status_requests
        async with as_principal(url, "bob") as bob:
            listed = await bob.call_tool("list_recent_jobs", {})
            foreign = await bob.call_tool("get_image_job", {"request_id": mine})
            guessed_id = _guess(mine)
            guessed = await bob.call_tool("get_image_job", {"request_id": guessed_id})
            foreign_task = await _task_error(bob.session, "tasks/get", mine)
            guessed_task = await _task_error(bob.session, "tasks/get", guessed_id)
            foreign_cancel = await _task_error(bob.session, "tasks/cancel", mine)
            guessed_cancel = await _task_error(bob.session, "tasks/cancel", guessed_id)
    assert listed.structured_content == {"jobs": []}
    assert "alice" not in _text(listed)
    assert foreign.is_error
    assert guessed.is_error
    assert _masked(_text(foreign), mine) == _masked(_text(guessed), guessed_id)
    assert foreign.structured_content == guessed.structured_content
    assert "garden" not in _text(foreign)
    assert foreign_task == guessed_task
    assert foreign_cancel == guessed_cancel
    assert "not found" in foreign_task
    # Neither the foreign nor the guessed id was read at the gateway: no timing oracle either.
    assert emu.control.stats().status_requests == reads_before


async def test_an_identical_call_never_adopts_another_principals_undelivered_job(
    emu: RunningEmulator,
) -> None:
    args = {"prompt": "the same words from two people"}
    with team_server(emu) as url:
        # Alice's identical call is undelivered (her client went away): adoptable by her only.
        with MAIImageClient(KEY, base_url=emu.base_url) as api:
            validated = ARGUMENTS["generate_image"].model_validate(args).model_dump(mode="json")
            twin = argument_key("generate_image", validated)
            theirs = api.submit(
                GenerateRequest(prompt=args["prompt"]),
                job_scope=JobScope(principal="alice", surface="mcp", twin_key=twin),
            )
        created = emu.control.stats().jobs_created
        async with as_principal(url, "bob") as bob:
            result = await bob.call_tool("generate_image", args)
        assert emu.control.stats().jobs_created == created + 1  # Bob's own, paid job
        assert _rid(result) != theirs.request_id
        async with as_principal(url, "alice") as alice:
            again = await alice.call_tool("generate_image", args)
        assert emu.control.stats().jobs_created == created + 1  # Alice continued hers
        assert _rid(again) == theirs.request_id


async def test_an_operator_lists_every_principals_jobs_marked_and_reads_any(
    emu: RunningEmulator,
) -> None:
    with team_server(emu) as url:
        rids = {}
        for name in ("alice", "bob"):
            async with as_principal(url, name) as client:
                rids[name] = _rid(await client.call_tool("generate_image", {"prompt": name}))
        async with as_principal(url, "carol") as carol:
            listed = await carol.call_tool("list_recent_jobs", {"limit": 10})
            read = await carol.call_tool("get_image_job", {"request_id": rids["alice"]})
        async with as_principal(url, "alice") as alice:
            own = await alice.call_tool("list_recent_jobs", {})
    assert listed.structured_content is not None
    marked = {j["request_id"]: j["principal"] for j in listed.structured_content["jobs"]}
    assert marked == {rids["alice"]: "alice", rids["bob"]: "bob"}
    assert re.search(rf"\[alice\]\s+{re.escape(rids['alice'])}", _text(listed))
    assert not read.is_error
    assert _rid(read) == rids["alice"]
    assert own.structured_content is not None
    assert [j["request_id"] for j in own.structured_content["jobs"]] == [rids["alice"]]
    assert own.structured_content["jobs"][0]["principal"] is None  # no marks for a principal


async def test_view_image_shows_only_the_callers_images_and_an_operators(
    emu: RunningEmulator,
) -> None:
    """view_image answers another principal's request id exactly like an unknown one (and like
    get_image_job), refuses another principal's URL without fetching it; an operator sees it."""
    with team_server(emu) as url:
        async with as_principal(url, "alice") as alice:
            made = await alice.call_tool("generate_image", {"prompt": "alice's secret garden"})
            mine = _rid(made)
            assert made.structured_content is not None
            image_url = made.structured_content["image_urls"][0]
            own = await alice.call_tool("view_image", {"request_id": mine})
        reads_before = emu.control.stats().status_requests
        async with as_principal(url, "bob") as bob:
            foreign = await bob.call_tool("view_image", {"request_id": mine})
            guessed_id = _guess(mine)
            guessed = await bob.call_tool("view_image", {"request_id": guessed_id})
            waited = await bob.call_tool("get_image_job", {"request_id": mine})
            by_url = await bob.call_tool("view_image", {"url": image_url})
            paired = await bob.call_tool("view_image", {"request_id": mine, "url": image_url})
        async with as_principal(url, "carol") as carol:
            operator = await carol.call_tool("view_image", {"url": image_url})
    assert not own.is_error
    assert [c.type for c in own.content] == ["text", "image"]
    assert foreign.is_error
    assert _masked(_text(foreign), mine) == _masked(_text(guessed), guessed_id)
    assert _text(foreign) == _text(waited)
    assert "garden" not in _text(foreign)
    assert by_url.is_error
    assert "not an image one of your jobs returned" in _text(by_url)
    assert _text(paired) == _text(foreign)
    assert emu.control.stats().status_requests == reads_before  # nothing asked of the gateway
    assert not operator.is_error
    assert [c.type for c in operator.content] == ["text", "image"]


async def test_isolation_holds_across_replicas_sharing_a_postgres_book(
    emu: RunningEmulator, postgres_url: str
) -> None:
    with (
        team_server(emu, job_book=postgres_url) as first,
        team_server(emu, job_book=postgres_url) as two,
    ):
        async with as_principal(first, "alice") as alice:
            mine = _rid(await alice.call_tool("generate_image", {"prompt": "replica one"}))
        async with as_principal(two, "bob") as bob:
            foreign = await bob.call_tool("get_image_job", {"request_id": mine})
            listed = await bob.call_tool("list_recent_jobs", {})
        async with as_principal(two, "alice") as alice:
            own = await alice.call_tool("get_image_job", {"request_id": mine})
            own_list = await alice.call_tool("list_recent_jobs", {})
    assert foreign.is_error
    assert "not found" in _text(foreign)
    assert listed.structured_content == {"jobs": []}
    assert not own.is_error
    assert own_list.structured_content is not None
    assert [j["request_id"] for j in own_list.structured_content["jobs"]] == [mine]


def test_principals_without_a_job_book_are_refused_at_start(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens.json"
    write(tokens, {"alice": NamedToken("alice", digest(TOKENS["alice"]), "2026-12-07T08:00:00Z")})
    with pytest.raises(SettingsError, match="job book") as refused:
        Settings(api_key=KEY, tokens_file=tokens, job_book="off")
    assert "--job-book" in str(refused.value)
    Settings(api_key=KEY, job_book="off")  # one principal: the book may be off
