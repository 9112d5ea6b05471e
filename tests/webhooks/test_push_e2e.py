"""Both clients end to end against the emulator with push waiting: callbacks on, lost,
duplicated, forged; submit-then-wait; a timed-out wait resumed; bad combinations refused
before anything is sent. The emulator's records prove what reached the gateway."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from mai_tools import (
    AsyncMAIImageClient,
    ConfigurationError,
    GenerateRequest,
    ImageResult,
    InvalidArgumentError,
    Job,
    JobTimeoutError,
    MAIImageClient,
    PollPolicy,
    WebhookReceiver,
)
from mai_tools._webhooks import Ticket
from mai_tools.emulator import EmulatorConfig, RunningEmulator, run_emulator
from tests.support.fakes import KEY

EVIL = "https://evil.example/forged.png"
# With nothing learned, a push wait's first fallback read comes push_cold_delay (5 s) after the
# submission. The tests whose callbacks never come shorten it: a lost callback then costs one
# second of a test, not five (the jobs here take 0.4-0.6 s).
QUICK_FALLBACK = PollPolicy(push_cold_delay=1.0, push_margin=0.5)


@pytest.fixture(scope="module")
def server() -> Iterator[RunningEmulator]:
    config = EmulatorConfig(api_keys=(KEY,), min_duration=0.4, max_duration=0.6, seed=3)
    with run_emulator(config) as emu:
        yield emu


@pytest.fixture
def emu(server: RunningEmulator) -> RunningEmulator:
    server.control.reset()
    return server


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as rx:
        yield rx


class Driver:
    """Runs the same scenario through the sync or the async client."""

    def __init__(self, kind: str, emu: RunningEmulator, receiver: WebhookReceiver) -> None:
        self.kind = kind
        self.emu = emu
        self.receiver = receiver

    def call(
        self, method: str, *args: Any, poll_policy: PollPolicy | None = None, **kwargs: Any
    ) -> Any:
        options: dict[str, Any] = {} if poll_policy is None else {"poll_policy": poll_policy}
        if self.kind == "sync":
            with MAIImageClient(
                KEY, base_url=self.emu.base_url, webhooks=self.receiver, **options
            ) as c:
                return getattr(c, method)(*args, **kwargs)

        async def run() -> Any:
            async with AsyncMAIImageClient(
                KEY, base_url=self.emu.base_url, webhooks=self.receiver, **options
            ) as c:
                return await getattr(c, method)(*args, **kwargs)

        return asyncio.run(run())

    def many(self, count: int) -> list[ImageResult]:
        if self.kind == "sync":
            with MAIImageClient(KEY, base_url=self.emu.base_url, webhooks=self.receiver) as c:
                out: list[ImageResult] = []
                threads = [
                    threading.Thread(target=lambda i=i: out.append(c.generate(f"job {i}")))
                    for i in range(count)
                ]
                for thread in threads:
                    thread.start()
                for thread in threads:
                    thread.join(30)
                return out

        async def run() -> list[ImageResult]:
            async with AsyncMAIImageClient(
                KEY, base_url=self.emu.base_url, webhooks=self.receiver
            ) as c:
                return list(await asyncio.gather(*(c.generate(f"job {i}") for i in range(count))))

        return asyncio.run(run())


@pytest.fixture(params=["sync", "async"])
def driver(
    request: pytest.FixtureRequest, emu: RunningEmulator, receiver: WebhookReceiver
) -> Driver:
    return Driver(request.param, emu, receiver)


def _tickets(receiver: WebhookReceiver, monkeypatch: pytest.MonkeyPatch) -> list[Ticket]:
    issued: list[Ticket] = []
    issue = receiver.issue

    def recording() -> Ticket | None:
        ticket = issue()
        if ticket is not None:
            issued.append(ticket)
        return ticket

    monkeypatch.setattr(receiver, "issue", recording)
    return issued


def test_callbacks_end_each_wait_with_one_status_read(driver: Driver) -> None:
    results = driver.many(8)
    assert len(results) == 8
    stats = driver.emu.control.stats()
    assert [stats.polls[r.request_id] for r in results] == [1] * 8
    # A wait can end (on its one read) just before the emulator records the callback's answer.
    deadline = time.monotonic() + 10
    while len(stats.webhook_deliveries) < 8 and time.monotonic() < deadline:
        time.sleep(0.05)
        stats = driver.emu.control.stats()
    deliveries = stats.webhook_deliveries
    assert {d["outcome"] for d in deliveries} == {"sent"}
    assert {d["status_code"] for d in deliveries} == {200}
    urls = [d["url"] for d in deliveries]
    assert len(set(urls)) == 8  # one token per job
    for url, result in zip(sorted(urls), sorted(r.request_id for r in results), strict=True):
        assert url.startswith(driver.receiver.url + "/")
        assert KEY not in url
        assert result not in url  # never the request id
    assert driver.receiver.stats()["waiting"] == 0  # every token dropped when its wait ended


def test_lost_callbacks_cost_a_fallback_read_not_the_whole_wait(driver: Driver) -> None:
    driver.emu.control.set_faults(webhook_drop_rate=1.0)
    result = driver.call("generate", "a lost callback", timeout=60, poll_policy=QUICK_FALLBACK)
    assert isinstance(result, ImageResult)
    # At once, then the cold fallback read (how soon is the policy's business: tests/webhooks/
    # test_push_flow.py); not a poll loop.
    assert driver.emu.control.stats().polls[result.request_id] <= 3


def test_duplicated_callbacks_are_idempotent(driver: Driver) -> None:
    driver.emu.control.set_faults(webhook_duplicate_rate=1.0)
    results = driver.many(4)
    stats = driver.emu.control.stats()
    assert [stats.polls[r.request_id] for r in results] == [1] * 4
    deadline = time.monotonic() + 5
    while len(stats.webhook_deliveries) < 8 and time.monotonic() < deadline:
        time.sleep(0.02)
        stats = driver.emu.control.stats()
    counts = driver.receiver.stats()
    assert counts["accepted"] + counts["ignored"] == 8
    assert counts["refused"] == 0


def test_a_forged_callback_neither_injects_urls_nor_ends_the_wait_early(
    receiver: WebhookReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The job runs long enough (2 s) for the forgery to reach it while it runs, even on a busy
    # machine; the fallback read comes after it ends.
    config = EmulatorConfig(api_keys=(KEY,), min_duration=2.0, max_duration=2.0)
    with run_emulator(config) as emu:
        _forge_while_waiting(emu, receiver, monkeypatch)


def _forge_while_waiting(
    emu: RunningEmulator, receiver: WebhookReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    emu.control.set_faults(webhook_drop_rate=1.0)  # the forgery is the only callback
    issued = _tickets(receiver, monkeypatch)
    forged: list[int] = []

    def forge() -> None:
        while not issued or issued[0].request_id is None:  # submitted and waiting
            time.sleep(0.005)
        body = {"request_id": "x", "status": "COMPLETED", "output": {"media_url": [EVIL]}}
        forged.append(httpx.post(issued[0].url, json=body, timeout=5).status_code)
        body["request_id"] = issued[0].request_id or ""
        forged.append(httpx.post(issued[0].url, json=body, timeout=5).status_code)

    thread = threading.Thread(target=forge)
    thread.start()
    fallback = PollPolicy(push_cold_delay=2.5, push_margin=0.5)
    with MAIImageClient(
        KEY, base_url=emu.base_url, webhooks=receiver, poll_policy=fallback
    ) as client:
        result = client.generate("a forged callback", timeout=60)
    thread.join(10)
    finished = emu.control.stats().finished_at[result.request_id]
    assert time.time() >= finished  # returned only after the job really finished
    assert EVIL not in result.image_urls
    assert all(url.startswith(emu.base_url) for url in result.image_urls)
    assert forged == [
        400,
        200,
    ]  # wrong job refused; the right one woke a read that found it running
    polls = emu.control.stats().polls[result.request_id]
    assert 2 <= polls <= 4  # the forged wake cost one read, the fallback found the job


def test_submit_then_wait_is_pushed(driver: Driver) -> None:
    if driver.kind == "sync":
        with MAIImageClient(KEY, base_url=driver.emu.base_url, webhooks=driver.receiver) as c:
            job = c.submit(GenerateRequest(prompt="submitted first"))
            assert driver.receiver.stats()["parked"] == 1
            result = c.wait(job)
    else:

        async def run() -> tuple[Job, ImageResult]:
            async with AsyncMAIImageClient(
                KEY, base_url=driver.emu.base_url, webhooks=driver.receiver
            ) as c:
                job = await c.submit(GenerateRequest(prompt="submitted first"))
                assert driver.receiver.stats()["parked"] == 1
                return job, await c.wait(job)

        job, result = asyncio.run(run())
    assert result.request_id == job.request_id
    assert driver.emu.control.stats().polls[job.request_id] <= 2  # at once, then on the callback
    assert driver.receiver.stats()["parked"] == 0
    assert driver.receiver.stats()["accepted"] == 1


def test_a_timed_out_wait_keeps_its_token_for_the_resumed_wait(
    server: RunningEmulator, receiver: WebhookReceiver
) -> None:
    with run_emulator(EmulatorConfig(api_keys=(KEY,), min_duration=1.5, max_duration=1.5)) as emu:
        with MAIImageClient(KEY, base_url=emu.base_url, webhooks=receiver) as client:
            with pytest.raises(JobTimeoutError) as caught:
                client.generate("too slow for this call", timeout=0.5)
            assert receiver.stats()["parked"] == 1
            result = client.wait(caught.value.request_id, timeout=30)
        assert result.request_id == caught.value.request_id
        assert emu.control.stats().polls[result.request_id] <= 3
    assert receiver.stats()["parked"] == 0
    assert receiver.stats()["accepted"] == 1


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_webhook_url_with_webhooks_is_refused_before_anything_is_sent(
    kind: str, emu: RunningEmulator, receiver: WebhookReceiver
) -> None:
    driver = Driver(kind, emu, receiver)
    with pytest.raises(InvalidArgumentError, match="cannot be combined"):
        driver.call("generate", "two hooks", webhook_url="https://example.com/hook")
    with pytest.raises(InvalidArgumentError, match="cannot be combined"):
        driver.call(
            "submit", GenerateRequest(prompt="two hooks"), webhook_url="https://example.com/hook"
        )
    assert emu.control.stats().submissions == 0


def test_a_receiver_with_no_url_is_refused_before_anything_is_sent(emu: RunningEmulator) -> None:
    idle = WebhookReceiver()
    with (
        MAIImageClient(KEY, base_url=emu.base_url, webhooks=idle) as client,
        pytest.raises(ConfigurationError, match="no URL yet"),
    ):
        client.generate("nowhere to call back")
    assert emu.control.stats().submissions == 0


def test_webhooks_must_be_a_receiver() -> None:
    with pytest.raises(ConfigurationError, match="WebhookReceiver"):
        MAIImageClient(KEY, webhooks="http://127.0.0.1:9/hooks")  # type: ignore[arg-type]


def test_a_full_receiver_falls_back_to_polling(
    emu: RunningEmulator, receiver: WebhookReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(receiver, "issue", lambda: None)
    with MAIImageClient(KEY, base_url=emu.base_url, webhooks=receiver) as client:
        result = client.generate("no room for a token")
    assert isinstance(result, ImageResult)
    assert emu.control.stats().webhook_deliveries == []  # no X-Webhook-URL was sent


def test_an_unreachable_receiver_leaves_waits_to_the_fallback_reads(emu: RunningEmulator) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = sock.getsockname()[1]  # nothing listens there once the socket closes
    receiver = WebhookReceiver(f"http://127.0.0.1:{dead}")
    with MAIImageClient(
        KEY, base_url=emu.base_url, webhooks=receiver, poll_policy=QUICK_FALLBACK
    ) as client:
        result = client.generate("the receiver is not there")
    assert isinstance(result, ImageResult)
    deliveries: list[dict[str, Any]] = emu.control.stats().webhook_deliveries
    assert [d["outcome"] for d in deliveries] == ["failed"]
