"""The client against the real gateway's error shapes, as the emulator serves them.

API Management answers bad keys, unknown routes, rate limits and quotas as
``{"statusCode", "message"}``; Pixazo answers job and validation errors as
``{"error", "message"}``. Each must map to the right exception and advice.
"""

from __future__ import annotations

import pytest

from mai_tools import (
    AuthenticationError,
    GenerateRequest,
    JobTimeoutError,
    MAIImageClient,
    NotFoundError,
    PollPolicy,
    QuotaExceededError,
    RetryPolicy,
)
from mai_tools._agent import FailureKind, failure_of
from mai_tools.emulator import RunningEmulator
from tests.support.emulators import EmulatorPool

KEY = "sk-canary-gateway-errors"


@pytest.fixture
def emu(emulators: EmulatorPool) -> RunningEmulator:
    return emulators(api_keys=(KEY,), min_duration=0.3, max_duration=0.3)


def test_a_wrong_key_is_an_authentication_error_in_the_gateways_words(emu: RunningEmulator) -> None:
    with (
        MAIImageClient("sk-canary-wrong", base_url=emu.base_url) as client,
        pytest.raises(AuthenticationError) as info,
    ):
        client.generate("a cat")
    text = str(info.value)
    assert "invalid subscription key" in text
    assert ".." not in text  # the gateway's sentence and our hint are joined once
    assert failure_of(info.value).kind is FailureKind.OPERATOR


def test_a_submit_to_an_unknown_route_blames_the_base_url_not_the_id(
    emu: RunningEmulator,
) -> None:
    with (
        MAIImageClient(KEY, base_url=emu.base_url + "/wrong-prefix") as client,
        pytest.raises(NotFoundError) as info,
    ):
        client.generate("a cat")
    assert info.value.request_id is None
    assert "PIXAZO_BASE_URL" in str(info.value)
    assert "request id" not in str(info.value)
    assert failure_of(info.value).kind is FailureKind.OPERATOR


def test_a_used_up_quota_is_retry_later_with_the_replenish_time(emu: RunningEmulator) -> None:
    emu.control.set_faults(quota_calls=0, quota_period=754)
    with (
        MAIImageClient(KEY, base_url=emu.base_url) as client,
        pytest.raises(QuotaExceededError) as info,
    ):
        client.generate("a cat")
    assert info.value.status_code == 403
    assert info.value.retry_after is not None
    assert 700 <= info.value.retry_after <= 754
    assert "replenished" in str(info.value)
    assert "may not use this model" not in str(info.value)
    failure = failure_of(info.value)
    assert failure.kind is FailureKind.RATE_LIMITED
    assert "no job was created" in failure.message
    assert emu.control.stats().jobs_created == 0


def test_a_quota_used_up_while_waiting_ends_the_wait_as_still_running(
    emu: RunningEmulator,
) -> None:
    with MAIImageClient(
        KEY,
        base_url=emu.base_url,
        poll_policy=PollPolicy.fixed(0.5),
        retry_policy=RetryPolicy(initial_backoff=0.05, jitter=0, max_retry_after=5),
    ) as client:
        job = client.submit(GenerateRequest(prompt="a cat"))
        emu.control.set_faults(quota_calls=0, quota_period=3600)
        with pytest.raises(JobTimeoutError) as info:
            client.wait(job, timeout=30)
    assert isinstance(info.value.__cause__, QuotaExceededError)
    assert info.value.request_id == job.request_id
    assert emu.control.stats().jobs_created == 1
