"""What the real gateway adds around Pixazo: API Management's quota 403 and 429 messages, the
CDN's rate limit on image downloads, and time-ordered ``<model>_<UUIDv7>`` request ids."""

from __future__ import annotations

import re
import time
import uuid

import httpx
import pytest

from mai_tools.emulator import EmulatorConfig, ManualClock, RunningEmulator, run_emulator
from mai_tools.emulator._state import uuid7
from tests.support.emulators import EmulatorPool

GEN = "/microsoft-mai-image-2-5/v1/microsoft-mai-image-2-5-request"
QUOTA = re.compile(
    r"^Out of call volume quota\. Quota will be replenished in (\d\d):(\d\d):(\d\d)\.$"
)


@pytest.fixture
def emu(emulators: EmulatorPool) -> RunningEmulator:
    return emulators(min_duration=0, max_duration=0, seed=2, api_keys=("key-a", "key-b"))


def _client(emu: RunningEmulator, key: str = "key-a") -> httpx.Client:
    return httpx.Client(base_url=emu.base_url, headers={"Ocp-Apim-Subscription-Key": key})


def test_quota_403_after_the_calls_allowed(emu: RunningEmulator) -> None:
    emu.control.set_faults(quota_calls=2, quota_period=3600)
    with _client(emu) as a, _client(emu, "key-b") as b:
        rid = a.post(GEN, json={"prompt": "within quota"}).json()["request_id"]
        assert a.get(f"/v2/requests/status/{rid}").status_code == 200  # polls count too
        refused = [a.post(GEN, json={"prompt": "over quota"}), a.get(f"/v2/requests/status/{rid}")]
        assert b.get(f"/v2/requests/status/{rid}").status_code == 200  # a quota per key
    for answer in refused:
        assert answer.status_code == 403
        body = answer.json()
        assert set(body) == {"statusCode", "message"}
        assert body["statusCode"] == 403
        match = QUOTA.match(body["message"])
        assert match, body["message"]
        hours, minutes, seconds = (int(g) for g in match.groups())
        assert 3500 < hours * 3600 + minutes * 60 + seconds <= 3600
    assert emu.control.stats().jobs_created == 1


def test_the_quota_is_replenished_when_the_period_ends() -> None:
    clock = ManualClock()
    with run_emulator(EmulatorConfig(api_keys=("key-a",)), clock=clock) as emu, _client(emu) as c:
        emu.control.set_faults(quota_calls=1, quota_period=60.0)
        assert c.get("/v2/requests/status/x").status_code == 404
        clock.advance(29.5)
        over = c.get("/v2/requests/status/x")
        assert over.status_code == 403
        assert over.json()["message"].endswith("replenished in 00:00:31.")  # 30.5 s, rounded up
        clock.advance(30.4)
        assert c.get("/v2/requests/status/x").status_code == 403  # 0.1 s of the period left
        clock.advance(0.1)
        assert c.get("/v2/requests/status/x").status_code == 404  # a new period


def test_rate_limit_message_gives_fractional_seconds(emu: RunningEmulator) -> None:
    emu.control.set_faults(rate_limit_first_submits=1, retry_after=0.25)
    with _client(emu) as c:
        response = c.post(GEN, json={"prompt": "too fast"})
    assert response.status_code == 429
    assert response.headers["Retry-After"] == "0.25"
    assert response.json() == {
        "statusCode": 429,
        "message": "Rate limit is exceeded. Try again in 0.25 seconds.",
    }


def _media_url(c: httpx.Client) -> str:
    rid = c.post(GEN, json={"prompt": "a download"}).json()["request_id"]
    url: str = c.get(f"/v2/requests/status/{rid}").json()["output"]["media_url"][0]
    return url


def test_cdn_rate_limits_the_first_downloads(emu: RunningEmulator) -> None:
    emu.control.set_faults(cdn_rate_limit_first=2, retry_after=3)
    with _client(emu) as c:
        url = _media_url(c)
    answers = [httpx.get(url) for _ in range(3)]
    assert [a.status_code for a in answers] == [429, 429, 200]
    for throttled in answers[:2]:
        assert throttled.headers["Retry-After"] == "3"
        assert throttled.headers["content-type"].startswith("text/plain")
        assert throttled.text == "error code: 1015"
    assert answers[2].headers["content-type"] == "image/png"
    stats = emu.control.stats()
    assert stats.downloads == 3
    assert [r.path for r in stats.rate_limited] == [url.removeprefix(emu.base_url)] * 2


def test_cdn_rate_limits_a_share_of_downloads(emu: RunningEmulator) -> None:
    with _client(emu) as c:
        url = _media_url(c)
    emu.control.set_faults(cdn_rate_limit_rate=1.0, retry_after=2, retry_after_as_date=True)
    throttled = httpx.get(url)
    assert throttled.status_code == 429
    assert throttled.headers["Retry-After"].endswith(" GMT")
    emu.control.set_faults(cdn_rate_limit_rate=0.0)
    assert httpx.get(url).status_code == 200


# --------------------------------------------------------------------------- request ids


def test_uuid7_version_variant_and_time() -> None:
    before = time.time_ns() // 1_000_000
    value = uuid7()
    after = time.time_ns() // 1_000_000
    assert value.version == 7
    assert value.variant == uuid.RFC_4122
    assert before <= value.int >> 80 <= after  # the first 48 bits: Unix time in ms


def test_uuid7_sort_in_creation_order() -> None:
    values = [uuid7() for _ in range(5000)]  # many share a millisecond
    assert len({v.int >> 80 for v in values}) < len(values)
    assert values == sorted(values)
    assert [str(v) for v in values] == sorted(str(v) for v in values)
    assert len(set(values)) == len(values)


def test_request_ids_are_model_and_uuid7(emu: RunningEmulator) -> None:
    before = time.time_ns() // 1_000_000
    with _client(emu) as c:
        ids = [c.post(GEN, json={"prompt": f"id {i}"}).json()["request_id"] for i in range(20)]
    after = time.time_ns() // 1_000_000
    assert ids == sorted(ids)
    for rid in ids:
        model, _, suffix = rid.rpartition("_")
        assert model == "microsoft-mai-image-2-5"
        value = uuid.UUID(suffix)
        assert str(value) == suffix  # lowercase, hyphenated
        assert value.version == 7
        assert before <= value.int >> 80 <= after
