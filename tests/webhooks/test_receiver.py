"""The receiver on its own: tokens, duplicates, forged and oversized bodies, unknown tokens,
bounded memory, construction errors, and the two ways to run it (own server, mounted)."""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from mai_tools import ConfigurationError, WebhookReceiver
from mai_tools import _webhooks as webhooks_module
from mai_tools._constants import MAX_CALLBACK_BYTES, WEBHOOK_PATH
from mai_tools._webhooks import Ticket
from tests.support.serving import serving

PUBLIC = "https://hooks.example.com"
RID = "microsoft-mai-image-2-5_019d0000-0000-0000-0000-000000000001"


@pytest.fixture
def receiver() -> WebhookReceiver:
    return WebhookReceiver(PUBLIC)


@pytest.fixture
def http(receiver: WebhookReceiver) -> Iterator[TestClient]:
    # Mounted in a Starlette app, as a user would: the mount strips the receiver's path.
    app = Starlette(routes=[receiver.mount()])
    with TestClient(app) as client:
        yield client


def _path(ticket: Ticket) -> str:
    return ticket.url.removeprefix(PUBLIC)


def _issue(receiver: WebhookReceiver) -> Ticket:
    ticket = receiver.issue()
    assert ticket is not None
    return ticket


def test_tokens_are_fresh_unguessable_and_name_nothing(receiver: WebhookReceiver) -> None:
    tickets = [_issue(receiver) for _ in range(200)]
    tokens = {t.token for t in tickets}
    assert len(tokens) == 200
    for ticket in tickets:
        assert len(ticket.token) == 43  # 256 random bits, URL-safe base64
        assert ticket.url == f"{PUBLIC}{WEBHOOK_PATH}/{ticket.token}"
        assert ticket.token not in repr(ticket)
    assert receiver.stats()["waiting"] == 200


def test_a_callback_wakes_its_ticket_once_and_duplicates_are_idempotent(
    receiver: WebhookReceiver, http: TestClient
) -> None:
    ticket, other = _issue(receiver), _issue(receiver)
    ticket.bind(RID)
    body = {"request_id": RID, "status": "COMPLETED"}
    first = http.post(_path(ticket), json=body)
    again = http.post(_path(ticket), json=body)
    assert (first.status_code, again.status_code) == (200, 200)
    assert ticket.wait(0) is True  # woken (the two callbacks are one wake-up)
    assert ticket.wait(0) is False
    assert other.wait(0) is False  # another job's wait is untouched
    assert receiver.stats()["accepted"] == 2


def test_unknown_and_malformed_tokens_get_404_and_touch_nothing(
    receiver: WebhookReceiver, http: TestClient
) -> None:
    ticket = _issue(receiver)
    before = receiver.stats()
    for path in [
        f"{WEBHOOK_PATH}/{'A' * 43}",  # well-formed, never issued
        f"{WEBHOOK_PATH}/{ticket.token[:-1]}",
        f"{WEBHOOK_PATH}/{ticket.token}x",
        f"{WEBHOOK_PATH}/{ticket.token}/more",
        f"{WEBHOOK_PATH}/",
        f"{WEBHOOK_PATH}/{RID}",  # the request id alone is never a token
    ]:
        response = http.post(path, json={"request_id": RID})
        assert response.status_code == 404, path
    assert ticket.wait(0) is False
    after = receiver.stats()
    assert after["unknown"] == before["unknown"] + 6
    assert after["accepted"] == 0
    assert after["waiting"] == before["waiting"]


@pytest.mark.parametrize(
    "content",
    [b"not json", b"[1, 2]", b'"COMPLETED"', b"\xff\xfe", b"", b'{"request_id": 5}'],
)
def test_bodies_that_are_not_a_json_object_are_refused_without_a_wake(
    receiver: WebhookReceiver, http: TestClient, content: bytes
) -> None:
    ticket = _issue(receiver)
    response = http.post(_path(ticket), content=content)
    assert response.status_code == 400
    assert ticket.wait(0) is False
    assert receiver.stats()["refused"] == 1


def test_a_deeply_nested_body_is_refused_with_a_400(
    receiver: WebhookReceiver, http: TestClient
) -> None:
    ticket = _issue(receiver)
    response = http.post(_path(ticket), content=b"[" * 50_000 + b"]" * 50_000)
    assert response.status_code == 400
    assert "nested too deeply" in response.json()["message"]
    assert ticket.wait(0) is False
    assert receiver.stats()["refused"] == 1


def test_a_callback_for_another_job_is_refused(receiver: WebhookReceiver, http: TestClient) -> None:
    ticket = _issue(receiver)
    ticket.bind(RID)
    other = RID[:-1] + "2"
    assert http.post(_path(ticket), json={"request_id": other}).status_code == 400
    assert ticket.wait(0) is False
    # Before the submit is answered the id is unknown: the callback still counts (fast jobs).
    early = _issue(receiver)
    assert http.post(_path(early), json={"request_id": other}).status_code == 200
    assert early.wait(0) is True


def test_bodies_are_size_capped_declared_or_streamed(
    receiver: WebhookReceiver, http: TestClient
) -> None:
    ticket = _issue(receiver)
    big = b'{"x": "' + b"a" * MAX_CALLBACK_BYTES + b'"}'
    declared = http.post(_path(ticket), content=big)
    assert declared.status_code == 413

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted while read
        yield b'{"x": "'
        for _ in range(MAX_CALLBACK_BYTES // 4096 + 1):
            yield b"a" * 4096
        yield b'"}'

    streamed = http.post(_path(ticket), content=chunks())
    assert streamed.status_code == 413
    assert ticket.wait(0) is False
    assert http.post(_path(ticket), json={"ok": 1}).status_code == 200  # a normal one works


def test_only_post_is_accepted(receiver: WebhookReceiver, http: TestClient) -> None:
    ticket = _issue(receiver)
    response = http.get(_path(ticket))
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"
    assert ticket.wait(0) is False


def test_a_token_is_dropped_when_its_wait_ends_and_late_callbacks_are_ignored(
    receiver: WebhookReceiver, http: TestClient
) -> None:
    ticket = _issue(receiver)
    receiver.release(ticket)
    assert receiver.stats()["waiting"] == 0
    late = http.post(_path(ticket), json={"request_id": RID})
    assert late.status_code == 200  # acknowledged, so a gateway does not retry it...
    assert "ended" in late.json()["message"]
    assert ticket.wait(0) is False  # ...and nothing wakes
    assert receiver.stats()["ignored"] == 1


def test_parked_tokens_are_claimed_by_request_id(
    receiver: WebhookReceiver, http: TestClient
) -> None:
    ticket = _issue(receiver)
    ticket.bind(RID)
    receiver.release(ticket, keep=True)  # submitted without waiting / the wait timed out
    assert receiver.stats()["parked"] == 1
    assert http.post(_path(ticket), json={"request_id": RID}).status_code == 200
    claimed = receiver.claim(RID)
    assert claimed is ticket
    assert ticket.wait(0) is False  # the wait's first read covers what came before the claim
    assert receiver.claim(RID) is None
    unbound = _issue(receiver)
    receiver.release(unbound, keep=True)  # nothing to claim it by: dropped
    assert receiver.stats()["parked"] == 0


def test_memory_is_bounded(receiver: WebhookReceiver, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(webhooks_module, "WEBHOOK_MAX_WAITING", 3)
    monkeypatch.setattr(webhooks_module, "WEBHOOK_MAX_PARKED", 2)
    monkeypatch.setattr(webhooks_module, "WEBHOOK_RECENT", 4)
    waiting = [_issue(receiver) for _ in range(3)]
    assert receiver.issue() is None  # full: that job polls instead
    for i, ticket in enumerate(waiting):
        ticket.bind(f"{RID[:-1]}{i}")
        receiver.release(ticket, keep=True)
    assert receiver.stats()["parked"] == 2  # the oldest parked token went first
    assert receiver.claim(f"{RID[:-1]}0") is None
    for _ in range(10):
        receiver.release(_issue(receiver))
    assert len(receiver._ended) == 4
    monkeypatch.setattr(webhooks_module, "WEBHOOK_PARKED_TTL", 0.0)
    _issue(receiver)  # issuing prunes parked tokens past their time
    assert receiver.stats()["parked"] == 0


def test_a_wake_from_another_thread_ends_a_blocking_wait() -> None:
    ticket = Ticket("t" * 43, "http://127.0.0.1/x")
    timer = threading.Timer(0.05, ticket.signal)
    start = time.monotonic()
    timer.start()
    assert ticket.wait(10) is True
    assert time.monotonic() - start < 5
    assert ticket.wait(0.01) is False


async def test_a_wake_from_another_thread_ends_an_async_wait() -> None:
    ticket = Ticket("t" * 43, "http://127.0.0.1/x")
    threading.Timer(0.05, ticket.signal).start()
    start = time.monotonic()
    assert await ticket.await_signal(10) is True
    assert time.monotonic() - start < 5
    assert await ticket.await_signal(0.01) is False
    ticket.signal()  # before the wait began: not lost
    assert await ticket.await_signal(10) is True


# --------------------------------------------------------------------------- construction


@pytest.mark.parametrize(
    ("public_url", "match"),
    [
        ("ftp://hooks.example.com", "http"),
        ("hooks.example.com", "http"),
        ("https://", "http"),
        ("https://hooks.example.com/?a=1", "query"),
        ("https://user:pw@hooks.example.com", "credentials"),
        ("https://hooks.example.com/a b", "printable"),
        (5, "string"),
    ],
)
def test_a_public_url_that_is_not_http_is_refused_at_construction(
    public_url: object, match: str
) -> None:
    with pytest.raises(ConfigurationError, match=match):
        WebhookReceiver(public_url)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"path": "no-slash"},
        {"path": "/a?b"},
        {"port": 70000},
        {"port": True},
        {"host": ""},
        {"host": "0.0.0.0"},  # noqa: S104 - every interface, and no public_url
    ],
)
def test_bad_options_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigurationError):
        WebhookReceiver(**kwargs)  # type: ignore[arg-type]


def test_the_url_in_use() -> None:
    assert WebhookReceiver("https://a.example/").url == f"https://a.example{WEBHOOK_PATH}"
    assert WebhookReceiver(f"https://a.example{WEBHOOK_PATH}").url == (
        f"https://a.example{WEBHOOK_PATH}"
    )
    assert WebhookReceiver("https://lb.example/replica-3", path="/hooks").url == (
        "https://lb.example/replica-3/hooks"
    )
    idle = WebhookReceiver()
    with pytest.raises(ConfigurationError, match="no URL yet"):
        _ = idle.url
    with pytest.raises(ConfigurationError, match="no URL yet"):
        idle.issue()
    assert "not running" in repr(idle)


def test_its_own_server_takes_callbacks_over_http() -> None:
    with WebhookReceiver() as receiver:
        assert receiver.running
        assert receiver.url.startswith("http://127.0.0.1:")
        ticket = _issue(receiver)
        response = httpx.post(ticket.url, json={"status": "COMPLETED"}, timeout=10)
        assert response.status_code == 200
        assert ticket.wait(0) is True
        elsewhere = ticket.url.replace(WEBHOOK_PATH, "/other")
        assert httpx.post(elsewhere, json={}, timeout=10).status_code == 404
    assert not receiver.running


async def test_async_with_runs_the_server() -> None:
    async with WebhookReceiver() as receiver:
        ticket = _issue(receiver)
        async with httpx.AsyncClient() as http:
            response = await http.post(ticket.url, json={})
        assert response.status_code == 200
        assert await ticket.await_signal(1) is True
    assert not receiver.running


def test_a_receiver_that_cannot_bind_says_so_at_start() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        receiver = WebhookReceiver(host="127.0.0.1", port=port)
        with pytest.raises(ConfigurationError, match=f"cannot listen on 127.0.0.1:{port}"):
            receiver.start()
    assert not receiver.running


def test_wrap_serves_callbacks_and_passes_everything_else_on() -> None:
    receiver = WebhookReceiver(PUBLIC)
    inner = Starlette(routes=[Route("/mcp", lambda request: PlainTextResponse("inner"))])
    with TestClient(receiver.wrap(inner)) as http:  # lifespan passes through
        ticket = _issue(receiver)
        assert http.post(_path(ticket), json={}).status_code == 200
        assert http.get("/mcp").text == "inner"
        assert http.post(f"{WEBHOOK_PATH}/{'B' * 43}", json={}).status_code == 404
    assert ticket.wait(0) is True


def test_no_token_in_any_log_line(
    receiver: WebhookReceiver, http: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    ticket = _issue(receiver)
    http.post(_path(ticket), json={})
    http.post(_path(ticket), content=b"junk")
    ours = [r for r in caplog.records if r.name.startswith("mai_tools")]
    assert ours  # the callback was logged (the test's own HTTP client logs the URL it calls)
    assert all(ticket.token not in record.getMessage() for record in ours)


def test_no_token_in_the_access_log_of_the_server_that_hosts_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # As mai-image-mcp serves it: receiver.wrap(app) under uvicorn with its access log on.
    caplog.set_level(logging.INFO)
    receiver = WebhookReceiver(PUBLIC)
    inner = Starlette(routes=[Route("/mcp", lambda request: PlainTextResponse("inner"))])
    app = receiver.wrap(inner)
    options: dict[str, Any] = {
        "log_config": None,
        "log_level": "info",
        "access_log": True,
        "lifespan": "off",
    }
    with serving(app, **options) as base:
        ticket = _issue(receiver)
        with httpx.Client(base_url=base, timeout=10) as http:
            assert http.post(_path(ticket), json={}).status_code == 200
            assert http.post(f"{_path(ticket)}?x=1", json={}).status_code == 200
            assert http.get("/mcp").text == "inner"
    access = [r.getMessage() for r in caplog.records if r.name == "uvicorn.access"]
    assert len(access) == 3
    assert f'"POST {WEBHOOK_PATH}/<token> HTTP/1.1" 200' in access[0]
    assert "/mcp" in access[2]
    # Every record but the test's own HTTP client's (it logs the URL it calls).
    server_side = [r for r in caplog.records if not r.name.startswith(("httpx", "httpcore"))]
    assert all(ticket.token not in record.getMessage() for record in server_side)


def test_waiting_sync_and_async_for_the_same_receiver_from_many_threads() -> None:
    receiver = WebhookReceiver(PUBLIC)
    tickets = [_issue(receiver) for _ in range(50)]
    results: list[bool] = []

    def wait(ticket: Ticket) -> None:
        results.append(ticket.wait(10))

    threads = [threading.Thread(target=wait, args=(t,)) for t in tickets]
    for thread in threads:
        thread.start()
    for ticket in tickets:
        ticket.signal()
    for thread in threads:
        thread.join(10)
    assert results == [True] * 50

    async def many() -> list[bool]:
        more = [_issue(receiver) for _ in range(50)]
        waits = [asyncio.ensure_future(t.await_signal(10)) for t in more]
        await asyncio.sleep(0.01)
        for ticket in more:
            threading.Thread(target=ticket.signal).start()
        return list(await asyncio.gather(*waits))

    assert asyncio.run(many()) == [True] * 50
