"""The server's memory of undelivered jobs is the durable job book: a call whose answer never
arrived is continued by an identical call on a restarted server, on a fresh per-call stdio
server and on another server sharing the book, and listed by them; a bad book stops the server.

Jobs here run on a :class:`ManualClock`: one ends only when the test advances the clock, so a
busy machine can delay a step but never change what happens.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.types import CallToolResult, TextContent

from mai_tools import GenerateRequest, MAIImageClient
from mai_tools.emulator import ManualClock, RunningEmulator
from mai_tools.jobbook import JobBook, JobRecord, JobScope, open_job_book
from mcp_server import Settings, create_server
from tests.support.emulators import held_emulator
from tests.support.fakes import KEY
from tests.support.jobbook import dead_call_intent
from tests.support.waiting import aeventually

ROOT = Path(__file__).resolve().parents[2]
D = 30.0
"""Emulator seconds a job takes: it ends only when a test advances the clock by this much."""


@pytest.fixture
def held() -> Iterator[tuple[RunningEmulator, ManualClock]]:
    with held_emulator(D, api_keys=(KEY,)) as held:
        yield held


def _book() -> JobBook:
    book = open_job_book()  # the test's own book (MAI_JOB_BOOK, set by the suite's conftest)
    assert book is not None
    return book


def _submitted() -> list[JobRecord]:
    return [r for r in _book().list(surface="mcp") if r.state == "submitted"]


def _text(result: CallToolResult) -> str:
    first = result.content[0]
    assert isinstance(first, TextContent)
    return first.text


def _env(emu: RunningEmulator) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIXAZO_", "MAI_MCP_"))}
    env.update(
        {
            "PIXAZO_API_KEY": KEY,
            "PIXAZO_BASE_URL": emu.base_url,
            "MAI_MCP_MAX_WAIT": "60",
            "MAI_MCP_PREVIEW": "off",
        }
    )
    return env  # MAI_JOB_BOOK is inherited: every server here shares the test's book


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def _http_server(emu: RunningEmulator) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """``mai-image-mcp --transport streamable-http`` as a subprocess: its URL and process."""
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "mcp_server", "--transport", "streamable-http", "--port", str(port)],
        cwd=ROOT,
        env=_env(emu),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 60
    try:
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if proc.poll() is not None:
                    raise AssertionError(
                        proc.stderr.read().decode() if proc.stderr else ""
                    ) from None
                assert time.monotonic() < deadline, "the server did not start"
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}/mcp", proc
    finally:
        if proc.poll() is None:
            proc.terminate()
        proc.communicate(timeout=20)


async def _call_and_forget(target: Any, args: dict[str, Any]) -> None:
    """A host's call whose answer never arrives (the test drops it, or kills its server)."""
    with contextlib.suppress(Exception):
        async with Client(target) as client:
            await client.call_tool("generate_image", args)


async def _call_with(client: Client, args: dict[str, Any], progress: Any) -> None:
    await client.call_tool("generate_image", args, progress_callback=progress)


async def _drop_once_submitted(target: Any, args: dict[str, Any], also: Any = None) -> str:
    """Call, wait until the book holds the call's job with its request id, then drop the call
    (after ``also()``, e.g. a kill -9 of the server). Returns the job's request id."""
    async with anyio.create_task_group() as group:
        group.start_soon(_call_and_forget, target, args)
        await aeventually(_submitted, "the job's request id in the book")
        if also is not None:
            also()
        group.cancel_scope.cancel()
    (record,) = _submitted()
    assert record.request_id is not None
    assert record.twin_key is not None
    assert not record.delivered
    return record.request_id


async def test_a_killed_servers_job_is_continued_by_the_restarted_server(
    held: tuple[RunningEmulator, ManualClock],
) -> None:
    emu, clock = held
    args = {"prompt": "a lighthouse that survives kill -9", "num_images": 2}
    with _http_server(emu) as (url, proc):

        def kill() -> None:
            proc.kill()  # SIGKILL, mid-wait: nothing is flushed, nothing said goodbye
            proc.wait()

        rid = await _drop_once_submitted(url, args, also=kill)
    clock.advance(D)  # the job ends while no server waits for it
    with _http_server(emu) as (url, _):
        async with Client(url) as client:
            listed = await client.call_tool("list_recent_jobs", {})
            retry = await client.call_tool("generate_image", args)
            assert emu.control.stats().jobs_created == 1  # the retry paid for nothing new
            # Its answer was delivered: the same call again is a new job, as the model asked.
            async with anyio.create_task_group() as group:
                again: list[CallToolResult] = []

                async def call_again() -> None:
                    again.append(await client.call_tool("generate_image", args))

                group.start_soon(call_again)
                await aeventually(lambda: emu.control.stats().jobs_created == 2, "a new job")
                clock.advance(D)
    assert rid in _text(listed)  # the new server lists the killed one's job
    assert listed.structured_content is not None
    assert [j["request_id"] for j in listed.structured_content["jobs"]] == [rid]
    assert not retry.is_error
    assert "Continuing the job you started at" in _text(retry)
    assert _text(retry).startswith(f"{emu.base_url}/files/")
    assert retry.structured_content is not None
    assert retry.structured_content["done"] is True
    assert retry.structured_content["request_id"] == rid
    assert len(retry.structured_content["image_urls"]) == 2
    assert "Continuing" not in _text(again[0])
    assert emu.control.stats().jobs_created == 2
    record = _book().find(rid)
    assert record is not None
    assert (record.state, record.status, record.delivered) == ("finished", "COMPLETED", True)


async def test_a_fresh_stdio_server_per_call_continues_the_earlier_ones_job(
    held: tuple[RunningEmulator, ManualClock], tmp_path: Path
) -> None:
    # llama-index and langchain-mcp-adapters' get_tools() start a server per call: a host
    # timeout ends the call and its server; the retry starts another one.
    emu, clock = held
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "mcp_server"], cwd=str(ROOT), env=_env(emu)
    )
    args = {"prompt": "one image, however many servers"}
    with (tmp_path / "stderr.log").open("w") as errlog:
        rid = await _drop_once_submitted(stdio_client(params, errlog=errlog), args)
        clock.advance(D)
        async with Client(stdio_client(params, errlog=errlog)) as client:
            retry = await client.call_tool("generate_image", args)
    assert emu.control.stats().jobs_created == 1
    assert "Continuing the job you started at" in _text(retry)
    assert retry.structured_content is not None
    assert retry.structured_content["request_id"] == rid
    assert retry.structured_content["done"] is True


@pytest.fixture(params=["sqlite", "postgres"])
def shared_book(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The book every server of the test shares: the test's file, or a Postgres database (the
    ``postgres_url`` fixture of the job book's suite: a real server the tests start)."""
    if request.param == "postgres":
        try:
            url: str = request.getfixturevalue("postgres_url")
        except pytest.FixtureLookupError:
            pytest.skip("no postgres_url fixture (it comes with the job book's Postgres tests)")
        monkeypatch.setenv("MAI_JOB_BOOK", url)  # servers (subprocesses) inherit it
    return os.environ["MAI_JOB_BOOK"]


async def test_two_servers_sharing_a_book_a_retry_sent_to_the_other_one_pays_nothing(
    held: tuple[RunningEmulator, ManualClock], shared_book: str
) -> None:
    emu, clock = held
    args = {"prompt": "two replicas, one job"}
    with _http_server(emu) as (first, _), _http_server(emu) as (second, _):
        rid = await _drop_once_submitted(first, args)
        # The retry lands on the other replica while the job still runs; the job ends only
        # once that replica is seen waiting on it (its progress names the request id).
        waiting = anyio.Event()

        async def progress(progress: float, total: float | None, message: str | None) -> None:
            if message and rid in message:
                waiting.set()

        results: list[CallToolResult] = []
        async with Client(second) as client, anyio.create_task_group() as group:

            async def retry() -> None:
                results.append(
                    await client.call_tool("generate_image", args, progress_callback=progress)
                )

            group.start_soon(retry)
            with anyio.fail_after(60):
                await waiting.wait()
            clock.advance(D)
    assert emu.control.stats().jobs_created == 1
    (result,) = results
    assert not result.is_error
    assert "Continuing the job you started at" in _text(result)
    assert result.structured_content is not None
    assert result.structured_content["request_id"] == rid
    assert result.structured_content["done"] is True


async def test_list_recent_jobs_on_a_new_server_shows_the_earlier_servers_jobs(
    emulators: Any,
) -> None:
    emu = emulators(api_keys=(KEY,), min_duration=0.1, max_duration=0.1)
    settings = Settings(api_key=KEY, base_url=emu.base_url, preview="off")
    async with Client(create_server(settings)) as client:
        made = await client.call_tool("generate_image", {"prompt": "remembered across runs"})
    assert made.structured_content is not None
    rid = made.structured_content["request_id"]
    async with Client(create_server(settings)) as client:  # another run: a new process's view
        listed = await client.call_tool("list_recent_jobs", {"limit": 5})
    assert listed.structured_content is not None
    (job,) = listed.structured_content["jobs"]
    assert job["request_id"] == rid
    assert job["status"] == "COMPLETED"
    assert job["tool"] == "generate_image"
    assert job["prompt"] == "remembered across runs"
    assert job["image_urls"] == made.structured_content["image_urls"]


async def test_with_the_book_off_identical_calls_still_share_a_job_in_one_process(
    held: tuple[RunningEmulator, ManualClock],
) -> None:
    emu, clock = held
    settings = Settings(api_key=KEY, base_url=emu.base_url, preview="off", job_book="off")
    server = create_server(settings)
    args = {"prompt": "nothing written to disk"}
    waiting = anyio.Event()

    async def progress(progress: float, total: float | None, message: str | None) -> None:
        if message and "microsoft-mai-image" in message:  # "QUEUED 0s <request id>"
            waiting.set()

    async with Client(server) as client:
        async with anyio.create_task_group() as group:
            group.start_soon(_call_with, client, args, progress)
            with anyio.fail_after(60):
                await waiting.wait()  # the call waits on a job whose request id it knows
            group.cancel_scope.cancel()  # ... and the host gives up on it
        clock.advance(D)
        retry = await client.call_tool("generate_image", args)
    assert emu.control.stats().jobs_created == 1
    assert "Continuing the job you started at" in _text(retry)
    assert _book().list() == []  # the user's book (MAI_JOB_BOOK) was not written


def test_a_bad_job_book_stops_the_server_at_start(tmp_path: Path) -> None:
    not_a_book = tmp_path / "jobs.sqlite3"
    not_a_book.write_bytes(b"this is not a database, and it is long enough to say so" * 100)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIXAZO_", "MAI_MCP_"))}
    for how, extra in (
        ("flag", ["--job-book", str(not_a_book)]),
        ("variable", []),
    ):
        run_env = {**env, "MAI_JOB_BOOK": str(not_a_book)} if how == "variable" else env
        ran = subprocess.run(
            [sys.executable, "-m", "mcp_server", *extra],
            cwd=ROOT,
            env=run_env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert ran.returncode == 2, (how, ran.stderr)
        assert "not a job book" in ran.stderr, ran.stderr
        assert "Traceback" not in ran.stderr
    unreachable = subprocess.run(
        [sys.executable, "-m", "mcp_server", "--job-book", "postgresql://u:s3cret@127.0.0.1:1/x"],
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert unreachable.returncode == 2, unreachable.stderr
    assert "cannot be reached" in unreachable.stderr
    assert "s3cret" not in unreachable.stderr


async def test_another_principals_job_is_unknown_to_this_one(emulators: Any) -> None:
    emu = emulators(api_keys=(KEY,), min_duration=0.1, max_duration=0.1)
    with MAIImageClient(KEY, base_url=emu.base_url) as api:
        theirs = api.submit(
            GenerateRequest(prompt="someone else's job"), job_scope=JobScope(principal="alice")
        )
    settings = Settings(api_key=KEY, base_url=emu.base_url, preview="off")
    async with Client(create_server(settings)) as client:
        result = await client.call_tool("get_image_job", {"request_id": theirs.request_id})
        listed = await client.call_tool("list_recent_jobs", {})
    assert result.is_error
    assert f"Request '{theirs.request_id}' not found" in _text(result)
    assert "alice" not in _text(result)
    assert listed.structured_content == {"jobs": []}
    assert emu.control.stats().status_requests == 0  # not even read at the gateway


async def test_an_earlier_submit_that_may_have_arrived_is_told_once_then_the_call_is_sent(
    emulators: Any,
) -> None:
    # The server that sent it died during its POST: no request id was ever recorded.
    emu = emulators(api_keys=(KEY,), min_duration=0.1, max_duration=0.1)
    args = {"prompt": "a submit that may have arrived"}
    with MAIImageClient(KEY, base_url=emu.base_url) as api:
        orphan = dead_call_intent("generate_image", args, gateway=api.base_url)
    settings = Settings(api_key=KEY, base_url=emu.base_url, preview="off")
    async with Client(create_server(settings)) as client:
        told = await client.call_tool("generate_image", args)
        assert emu.control.stats().jobs_created == 0  # not sent: it may exist already
        again = await client.call_tool("generate_image", args)
    assert told.is_error
    assert "may have been created at" in _text(told)
    assert not again.is_error  # told once: the same call again is sent, as it said
    assert emu.control.stats().jobs_created == 1
    record = _book().get(orphan.id)
    assert record is not None
    assert (record.state, record.twin_key) == ("unknown", None)


async def test_an_answer_given_while_the_server_stops_keeps_its_job_for_an_identical_call(
    emulators: Any,
) -> None:
    # A SIGTERM'd HTTP server lets waiting calls finish, but their clients' other requests
    # already fail: the answer may go nowhere, so the next server's identical call adopts.
    from mcp_server import _state

    emu = emulators(api_keys=(KEY,), min_duration=0.1, max_duration=0.1)
    settings = Settings(api_key=KEY, base_url=emu.base_url, preview="off")
    args = {"prompt": "answered while stopping"}
    with pytest.MonkeyPatch.context() as stopping:
        stopping.setattr(_state.STOPPING, "is_set", lambda: True)
        async with Client(create_server(settings)) as client:
            first = await client.call_tool("generate_image", args)
    async with Client(create_server(settings)) as client:
        again = await client.call_tool("generate_image", args)
        adopted = emu.control.stats().jobs_created
        third = await client.call_tool("generate_image", args)
    rid = _text(first).rsplit("request_id: ", 1)[-1]
    assert not first.is_error
    assert adopted == 1
    assert f"request_id: {rid}" in _text(again)
    assert "Continuing the job you started at" in _text(again)
    assert rid not in _text(third)  # the answer before it was delivered: a new job
    assert emu.control.stats().jobs_created == 2
