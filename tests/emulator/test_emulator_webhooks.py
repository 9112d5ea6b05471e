"""Webhook callbacks: loopback-only by default, and the faults a push-waiting client must
survive (dropped, late, duplicated callbacks; callbacks only to the receiver's URL).

The emulator runs on a ManualClock: a job ends, and its callback falls due, when a test
advances the clock; "no other callback came" is read from ``webhooks_pending == 0`` (every
scheduled callback is over), never from sleeping a while.
"""

from __future__ import annotations

import socket
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from mai_tools.emulator import EmulatorConfig, Faults, ManualClock, RunningEmulator, run_emulator
from mai_tools.emulator._callbacks import is_loopback_host

from .conftest import Receiver

GEN = "/microsoft-mai-image-2-5/v1/microsoft-mai-image-2-5-request"


JOBS_END = 1.0  # every job here lasts 0.1-0.2 s of the emulator's clock


@pytest.fixture(scope="module")
def manual_emu() -> Iterator[RunningEmulator]:
    config = EmulatorConfig(min_duration=0.1, max_duration=0.2, seed=5)
    with run_emulator(config, clock=ManualClock()) as emu:
        yield emu


@pytest.fixture
def emu(manual_emu: RunningEmulator) -> RunningEmulator:
    manual_emu.control.reset()
    return manual_emu


def _advance(emu: RunningEmulator, seconds: float = JOBS_END) -> None:
    clock = emu.clock
    assert isinstance(clock, ManualClock)
    clock.advance(seconds)


def _submit(emu: RunningEmulator, hook: str, prompt: str = "a call back") -> str:
    response = httpx.post(
        f"{emu.base_url}{GEN}",
        json={"prompt": prompt},
        headers={"Ocp-Apim-Subscription-Key": emu.api_key, "X-Webhook-URL": hook},
    )
    assert response.status_code == 202, response.text
    request_id: str = response.json()["request_id"]
    return request_id


def _deliveries(emu: RunningEmulator, count: int, timeout: float = 30) -> list[dict[str, Any]]:
    """The callback records once there are ``count`` (the timeout only ends a broken test)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = emu.control.stats().webhook_deliveries
        if len(found) >= count:
            return found
        time.sleep(0.01)
    raise AssertionError(f"fewer than {count} webhook records")


def _all_over(emu: RunningEmulator, timeout: float = 30) -> None:
    """Wait until no scheduled callback is left: none can arrive after this."""
    deadline = time.monotonic() + timeout
    while emu.control.stats().webhooks_pending:
        assert time.monotonic() < deadline, "callbacks still pending"
        time.sleep(0.01)


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("localhost", True),
        ("LOCALHOST.", True),
        ("hooks.localhost", True),
        ("0.0.0.0", False),  # noqa: S104 - reaches this machine on Linux, but is not loopback
        ("192.0.2.1", False),
        ("localhost.example.com", False),
        ("example.com", False),
        ("", False),
        (None, False),
    ],
)
def test_loopback_hosts(host: str | None, loopback: bool) -> None:
    assert is_loopback_host(host) is loopback


def test_a_remote_webhook_url_gets_no_callback(emu: RunningEmulator) -> None:
    rid = _submit(emu, "http://192.0.2.1:8080/hook")  # TEST-NET-1: must never be contacted
    _advance(emu)
    (delivery,) = _deliveries(emu, 1)
    assert delivery["request_id"] == rid
    assert delivery["outcome"] == "refused"
    assert "loopback" in delivery["reason"]
    assert "status_code" not in delivery
    assert "error" not in delivery  # no connection was even tried


@pytest.mark.skipif(sys.platform != "linux", reason="connecting to 0.0.0.0 reaches localhost")
def test_allow_remote_webhooks_sends_anywhere(receiver: Receiver, emu: RunningEmulator) -> None:
    # 0.0.0.0 is not a loopback address, yet on Linux it reaches our loopback receiver.
    remote = f"http://0.0.0.0:{receiver.port}/remote"
    _submit(emu, remote)
    _advance(emu)
    assert _deliveries(emu, 1)[0]["outcome"] == "refused"
    assert receiver.callbacks == []
    config = EmulatorConfig(min_duration=0.1, max_duration=0.1, allow_remote_webhooks=True)
    with run_emulator(config, clock=ManualClock()) as anywhere:
        rid = _submit(anywhere, remote)
        _advance(anywhere)
        (callback,) = receiver.wait_for(1)
        (delivery,) = _deliveries(anywhere, 1)
    assert callback.body["request_id"] == rid
    assert callback.path == "/remote"
    assert delivery["outcome"] == "sent"
    assert delivery["status_code"] == 200


def test_plain_callback_is_sent_once(receiver: Receiver, emu: RunningEmulator) -> None:
    rid = _submit(emu, receiver.url())
    assert emu.control.stats().webhooks_pending == 1
    _advance(emu)
    (callback,) = receiver.wait_for(1)
    assert callback.body["request_id"] == rid
    assert callback.body["status"] == "COMPLETED"
    _all_over(emu)
    assert len(receiver.callbacks) == 1
    (delivery,) = emu.control.stats().webhook_deliveries
    assert (delivery["outcome"], delivery["status_code"], delivery["attempt"]) == ("sent", 200, 1)


def test_dropped_callbacks(receiver: Receiver, emu: RunningEmulator) -> None:
    emu.control.set_faults(webhook_drop_rate=1.0)
    rids = {_submit(emu, receiver.url(), f"dropped {i}") for i in range(3)}
    _advance(emu)
    deliveries = _deliveries(emu, 3)
    assert {d["request_id"] for d in deliveries} == rids
    assert {d["outcome"] for d in deliveries} == {"dropped"}
    _all_over(emu)
    assert receiver.callbacks == []


def test_a_share_of_callbacks_is_dropped(receiver: Receiver, emu: RunningEmulator) -> None:
    emu.control.set_faults(webhook_drop_rate=0.5)
    for i in range(20):
        _submit(emu, receiver.url(), f"maybe dropped {i}")
    _advance(emu)
    deliveries = _deliveries(emu, 20)
    sent = [d for d in deliveries if d["outcome"] == "sent"]
    dropped = [d for d in deliveries if d["outcome"] == "dropped"]
    assert len(sent) + len(dropped) == 20
    assert sent  # seeded dice: both happen
    assert dropped
    assert len(receiver.wait_for(len(sent))) == len(sent)


def test_late_callbacks(receiver: Receiver, emu: RunningEmulator) -> None:
    emu.control.set_faults(webhook_delay_rate=1.0, webhook_delay_seconds=60)
    rid = _submit(emu, receiver.url())
    _advance(emu)  # the job ends: its callback starts waiting out its delay
    clock = emu.clock
    assert isinstance(clock, ManualClock)
    clock.wait_for_sleepers(1)
    assert receiver.callbacks == []
    assert emu.control.stats().webhook_deliveries == []
    clock.advance(59)
    clock.wait_for_sleepers(1)  # one second of its delay is left
    assert receiver.callbacks == []
    clock.advance(1)
    (callback,) = receiver.wait_for(1)
    assert callback.body["request_id"] == rid
    (delivery,) = _deliveries(emu, 1)
    assert delivery["at"] == clock.time()  # the emulator's clock, not the wall's
    assert delivery["at"] - emu.control.stats().finished_at[rid] >= 60


def test_duplicated_callbacks(receiver: Receiver, emu: RunningEmulator) -> None:
    emu.control.set_faults(webhook_duplicate_rate=1.0)
    rid = _submit(emu, receiver.url())
    _advance(emu)
    first, second = receiver.wait_for(2)
    assert first.body == second.body
    assert first.body["request_id"] == rid
    attempts = [d["attempt"] for d in _deliveries(emu, 2)]
    assert attempts == [1, 2]


def test_callbacks_only_to_the_receivers_url(receiver: Receiver, emu: RunningEmulator) -> None:
    emu.control.set_faults(webhook_only_to=(receiver.url("/hooks/"),))
    wanted = _submit(emu, receiver.url("/hooks/job-1"), "to the receiver")
    _submit(emu, receiver.url("/elsewhere"), "same host, other path")
    _submit(emu, f"http://localhost:{receiver.port}/hooks/job-3", "other host name")
    _submit(emu, "http://127.0.0.1:9/hooks/job-4", "other port")
    _advance(emu)
    deliveries = _deliveries(emu, 4)
    (callback,) = receiver.wait_for(1)
    assert callback.body["request_id"] == wanted
    assert callback.path == "/hooks/job-1"
    outcomes = sorted(d["outcome"] for d in deliveries)
    assert outcomes == ["refused", "refused", "refused", "sent"]
    assert all("webhook_only_to" in d["reason"] for d in deliveries if d["outcome"] == "refused")
    _all_over(emu)
    assert len(receiver.callbacks) == 1


def test_reset_forgets_pending_callbacks(receiver: Receiver, emu: RunningEmulator) -> None:
    emu.control.set_faults(webhook_delay_rate=1.0, webhook_delay_seconds=0.3)
    _submit(emu, receiver.url(), "forgotten by a reset")
    emu.control.reset()  # e.g. the next test starts while this callback waits
    _advance(emu)  # past the job's end and the delay
    _all_over(emu)
    assert receiver.callbacks == []
    assert emu.control.stats().webhook_deliveries == []


@pytest.mark.parametrize("url", ["/hooks/", "ftp://127.0.0.1/x", "http://[", "http:///path"])
def test_webhook_only_to_takes_http_urls(url: str) -> None:
    with pytest.raises(ValueError, match=r"webhook_only_to: .* is not an http"):
        Faults(webhook_only_to=(url,))


def test_a_path_with_a_space_is_sent_percent_encoded(
    receiver: Receiver, emu: RunningEmulator
) -> None:
    rid = _submit(emu, receiver.url("/hooks/my job?token=a b"))
    _advance(emu)
    (callback,) = receiver.wait_for(1)
    assert callback.body["request_id"] == rid
    assert callback.path == "/hooks/my job"  # as the receiver decodes /hooks/my%20job
    (delivery,) = _deliveries(emu, 1)
    assert (delivery["outcome"], delivery["status_code"]) == ("sent", 200)


def test_a_webhook_url_no_callback_could_reach_is_refused_at_submit(
    emu: RunningEmulator,
) -> None:
    response = httpx.post(
        f"{emu.base_url}{GEN}",
        json={"prompt": "never called back"},
        headers={
            b"Ocp-Apim-Subscription-Key": emu.api_key.encode(),
            b"X-Webhook-URL": "http://h\u00f6st.example/hook".encode(),
        },
    )
    assert response.status_code == 400
    message = response.json()["message"]
    assert message.startswith("X-Webhook-URL: the host ")
    assert "is not an ASCII name or address" in message
    assert emu.control.stats().jobs_created == 0


def test_a_receiver_that_never_answers_delays_no_one_else(receiver: Receiver) -> None:
    # 40 callbacks (more than the emulator sends at once) to a receiver that accepts
    # connections and never answers, then 5 to an honest one: those 5 arrive while the 40
    # still wait for their own (long) timeout. Nothing here depends on how fast the machine is.
    config = EmulatorConfig(min_duration=0.1, max_duration=0.2, webhook_timeout=600)
    with socket.socket() as stalled, run_emulator(config, clock=ManualClock()) as emu:
        stalled.bind(("127.0.0.1", 0))
        stalled.listen(64)  # the kernel completes the handshakes; nobody ever reads
        never = f"http://127.0.0.1:{stalled.getsockname()[1]}/never"
        for n in range(40):
            _submit(emu, never, f"stalled {n}")
        _advance(emu)
        honest = {_submit(emu, receiver.url(), f"honest {n}") for n in range(5)}
        _advance(emu)
        callbacks = receiver.wait_for(5, timeout=120)  # the timeout only ends a broken test
        assert {c.body["request_id"] for c in callbacks} == honest
        records = _deliveries(emu, 5, timeout=120)
        # Only the honest ones are over; every stalled one is still waiting (600 s).
        assert {r["request_id"] for r in records} == honest
        assert all(r["outcome"] == "sent" for r in records)
        assert emu.control.stats().webhooks_pending >= 40
