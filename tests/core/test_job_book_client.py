"""The client and the job book: idempotency keys, the intent before the POST, outcomes recorded.

Every scenario runs on the sync and the async client against a scripted gateway, and counts
the POSTs: a key that is repeated never pays twice.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import httpx
import pytest

from mai_tools import (
    APIConnectionError,
    AsyncMAIImageClient,
    GenerateRequest,
    InvalidArgumentError,
    JobFailedError,
    MAIImageClient,
)
from mai_tools._exceptions import IdempotencyKeyReusedError, JobBookError, JobUnknownError
from mai_tools.jobbook import JobBook, open_job_book
from tests.support.fakes import BASE, KEY, PNG_1PX, Harness, ok, queued
from tests.support.jobbook import dead_intent

REQUEST = GenerateRequest(prompt="a lighthouse at dawn", num_images=1)


def _book() -> JobBook:
    book = open_job_book()
    assert book is not None
    return book


def test_the_same_key_continues_the_same_job(harness: Harness) -> None:
    first = harness.call("run", REQUEST, idempotency_key="step-1")
    again = harness.call("run", REQUEST, idempotency_key="step-1")
    assert again.request_id == first.request_id
    assert again.image_urls == first.image_urls
    assert len(harness.gateway.posts) == 1
    record = _book().find(first.request_id)
    assert record is not None
    assert (record.state, record.status, record.idempotency_key) == (
        "finished",
        "COMPLETED",
        "step-1",
    )
    assert record.image_urls == first.image_urls
    assert record.surface == "client"
    assert record.prompt == "a lighthouse at dawn"


def test_submit_with_a_used_key_returns_the_earlier_job(harness: Harness) -> None:
    job = harness.call("submit", REQUEST, idempotency_key="k")
    again = harness.call("submit", REQUEST, idempotency_key="k")
    assert again.request_id == job.request_id
    assert len(harness.gateway.posts) == 1
    # And a run with the key waits for that job instead of sending another.
    result = harness.call("run", REQUEST, idempotency_key="k")
    assert result.request_id == job.request_id
    assert len(harness.gateway.posts) == 1


def test_a_key_reused_for_another_request_is_refused_before_sending(harness: Harness) -> None:
    harness.call("run", REQUEST, idempotency_key="order-7")
    other = GenerateRequest(prompt="a lighthouse at dusk", num_images=1)
    with pytest.raises(InvalidArgumentError) as err:
        harness.call("run", other, idempotency_key="order-7")
    text = str(err.value)
    assert "'order-7'" in text
    assert "prompt was 'a lighthouse at dawn' there and is 'a lighthouse at dusk' here" in text
    assert "Nothing was sent" in text
    more = GenerateRequest(prompt="a lighthouse at dawn", num_images=2)
    with pytest.raises(InvalidArgumentError, match="num_images was 1 there and is 2 here"):
        harness.call("run", more, idempotency_key="order-7")
    assert len(harness.gateway.posts) == 1


def test_a_submit_that_may_have_arrived_is_unknown_and_never_resent(harness: Harness) -> None:
    harness.gateway.submits = [httpx.ReadTimeout("no answer"), queued()]
    with pytest.raises(APIConnectionError) as first:
        harness.call("run", REQUEST, idempotency_key="maybe")
    assert first.value.may_have_arrived
    with pytest.raises(JobUnknownError) as again:
        harness.call("run", REQUEST, idempotency_key="maybe")
    text = str(again.value)
    assert "idempotency key 'maybe' may have been created at " in text
    assert "not sent again" in text
    assert "new idempotency_key" in text
    assert again.value.idempotency_key == "maybe"
    assert len(harness.gateway.posts) == 1
    (record,) = _book().list()
    assert record.state == "unknown"
    assert record.request_id is None
    # A new key is a new job.
    harness.call("run", REQUEST, idempotency_key="maybe-2")
    assert len(harness.gateway.posts) == 2


def test_a_submit_that_never_left_frees_its_key(harness: Harness) -> None:
    harness.gateway.submits = [httpx.ConnectError("refused")]
    with pytest.raises(APIConnectionError) as first:
        harness.call("run", REQUEST, idempotency_key="retry-me")
    assert not first.value.may_have_arrived
    assert _book().list() == []
    harness.gateway.submits = [queued()]
    result = harness.call("run", REQUEST, idempotency_key="retry-me")
    assert result.request_id
    assert [r.state for r in _book().list()] == ["finished"]


def test_a_refused_submit_frees_its_key(harness: Harness) -> None:
    harness.gateway.submits = [httpx.Response(400, json={"error": "bad prompt"}), queued()]
    with pytest.raises(Exception, match=r"400|bad prompt"):
        harness.call("run", REQUEST, idempotency_key="k400")
    assert _book().list() == []
    harness.call("run", REQUEST, idempotency_key="k400")
    assert len(harness.gateway.posts) == 2


def test_a_failed_job_is_recorded_and_its_key_answers_the_same(harness: Harness) -> None:
    harness.gateway.polls = [ok("FAILED", error="content policy")]
    with pytest.raises(JobFailedError):
        harness.call("run", REQUEST, idempotency_key="f")
    with pytest.raises(JobFailedError, match="content policy"):
        harness.call("run", REQUEST, idempotency_key="f")
    assert len(harness.gateway.posts) == 1
    (record,) = _book().list()
    assert (record.state, record.status, record.error) == ("finished", "FAILED", "content policy")


def test_every_job_is_in_the_book_without_a_key(harness: Harness, tmp_path: Path) -> None:
    url = "https://cdn.example.com/v1/x/output.png"
    harness.gateway.polls = [ok("COMPLETED", urls=[url])]
    harness.gateway.downloads[url] = httpx.Response(200, content=PNG_1PX)
    result = harness.call("run", REQUEST)
    harness.call("run", REQUEST)
    assert len(harness.gateway.posts) == 2  # no key: two calls are two jobs
    paths = harness.call("save", result, tmp_path)
    record = _book().find(result.request_id)
    assert record is not None
    assert record.paths == [str(p) for p in paths]
    assert len(_book().list()) == 2


def test_a_stale_intent_of_a_dead_process_is_unknown(harness: Harness) -> None:
    book = _book()
    record = dead_intent(book, REQUEST, key="crashed", gateway=BASE)
    with pytest.raises(JobUnknownError, match="may have been created"):
        harness.call("run", REQUEST, idempotency_key="crashed")
    assert harness.gateway.posts == []
    got = book.get(record.id)
    assert got is not None
    assert got.state == "unknown"


def test_a_key_is_scoped_to_its_gateway(harness: Harness) -> None:
    dead_intent(_book(), REQUEST, key="elsewhere", gateway="http://127.0.0.1:9")
    # The same key on another gateway (an emulator's) is not this gateway's job.
    result = harness.call("run", REQUEST, idempotency_key="elsewhere")
    assert result.request_id
    assert len(harness.gateway.posts) == 1


def test_a_key_needs_a_book(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAI_JOB_BOOK", "off")
    with MAIImageClient(api_key=KEY, base_url=BASE) as client:
        assert client.job_book is None
        with pytest.raises(InvalidArgumentError, match="needs a job book"):
            client.run(REQUEST, idempotency_key="k")


@pytest.mark.parametrize("key", ["", "   ", 7, "x" * 256])
def test_a_bad_key_is_refused(harness: Harness, key: object) -> None:
    with pytest.raises(InvalidArgumentError, match="idempotency_key"):
        harness.call("run", REQUEST, idempotency_key=key)
    assert harness.gateway.posts == []


def test_the_book_location_follows_the_environment(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "book.sqlite3"
    with MAIImageClient(api_key=KEY, base_url=BASE, job_book=path) as client:
        assert client.job_book is not None
        assert client.job_book.location == str(path)
    assert path.exists()
    assert os.environ["MAI_JOB_BOOK"] != str(path)


def test_a_book_that_fails_before_the_submit_stops_it(harness: Harness) -> None:
    book = _book()
    book.close()
    Path(os.environ["MAI_JOB_BOOK"]).unlink()
    Path(os.environ["MAI_JOB_BOOK"]).mkdir()  # the file is now a directory: unusable
    with pytest.raises(JobBookError, match="Nothing was sent"):
        harness.call("run", REQUEST, idempotency_key="k")
    assert harness.gateway.posts == []


async def test_a_call_cancelled_during_its_post_leaves_an_unknown_job() -> None:
    arrived = asyncio.Event()
    release = asyncio.Event()

    async def hold(request: httpx.Request) -> httpx.Response:
        arrived.set()
        await release.wait()
        return queued()

    http = httpx.AsyncClient(transport=httpx.MockTransport(hold))
    async with AsyncMAIImageClient(api_key=KEY, base_url=BASE, http_client=http) as client:
        task = asyncio.ensure_future(client.run(REQUEST, idempotency_key="cut"))
        await arrived.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        (record,) = _book().list()
        assert record.state == "unknown"
        with pytest.raises(JobUnknownError):
            await client.run(REQUEST, idempotency_key="cut")
    await http.aclose()


async def test_a_call_cancelled_before_its_post_left_frees_its_key() -> None:
    gate_entered = asyncio.Event()

    class Stall:
        async def admit(self, request: object) -> None:
            gate_entered.set()
            await asyncio.Event().wait()  # never admits

        def observe(self, request: object, reply: object) -> None:
            pass

    http = httpx.AsyncClient(transport=httpx.MockTransport(lambda r: queued()))
    async with AsyncMAIImageClient(api_key=KEY, base_url=BASE, http_client=http) as client:
        task = asyncio.ensure_future(client.run(REQUEST, idempotency_key="early", gate=Stall()))
        await gate_entered.wait()
        assert [r.state for r in _book().list()] == ["intent"]
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert _book().list() == []
    await http.aclose()


def test_an_edit_key_reused_with_another_image_names_the_image(harness: Harness) -> None:
    import base64

    from mai_tools import EditRequest

    def edit(pixel: bytes) -> EditRequest:
        uri = "data:image/png;base64," + base64.b64encode(PNG_1PX + pixel * 4000).decode()
        return EditRequest(prompt="make it warmer", image_urls=[uri])

    harness.call("run", edit(b"a"), idempotency_key="edit-1")
    harness.call("run", edit(b"a"), idempotency_key="edit-1")  # the same image: the same job
    with pytest.raises(IdempotencyKeyReusedError) as err:
        harness.call("run", edit(b"b"), idempotency_key="edit-1")
    assert err.value.field == "image_urls"
    assert len(harness.gateway.posts) == 1
