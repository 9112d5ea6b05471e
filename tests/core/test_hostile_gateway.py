"""A gateway that answers oddly: huge, deep, echoing the key, or 2xx without a job.

Each answer is contained: memory is bounded, errors stay in the exception tree, the key never
comes back in any text or body the client keeps, and a submit that may have made a job says so.
"""

from __future__ import annotations

import gzip
import json
from typing import Any

import httpx
import pytest

from mai_tools import (
    APIResponseError,
    BadRequestError,
    JobFailedError,
    JobTimeoutError,
)
from mai_tools._constants import MAX_ANSWER_BYTES
from tests.support.fakes import KEY, RID, Harness, ok, queued, status_body


def _json(body: Any, code: int = 200, **headers: str) -> httpx.Response:
    return httpx.Response(code, content=json.dumps(body).encode(), headers=headers)


def test_a_huge_status_answer_is_not_read(harness: Harness) -> None:
    big = {**status_body("PROCESSING"), "padding": "x" * (MAX_ANSWER_BYTES + 10)}
    harness.gateway.polls = [_json(big)]
    with pytest.raises(APIResponseError, match=r"larger than \d+ bytes"):
        harness.call("get_status", RID)


def test_a_gzip_bomb_status_is_cut_off_at_the_cap(harness: Harness) -> None:
    inflated = json.dumps({**status_body("PROCESSING"), "pad": " " * (50 * MAX_ANSWER_BYTES)})
    bomb = gzip.compress(inflated.encode())
    assert len(bomb) < MAX_ANSWER_BYTES // 4  # small on the wire
    harness.gateway.polls = [
        httpx.Response(
            200,
            content=bomb,
            headers={"Content-Encoding": "gzip", "Content-Type": "application/json"},
        )
    ]
    with pytest.raises(APIResponseError, match="larger than"):
        harness.call("get_status", RID)


def test_a_huge_status_while_waiting_ends_as_still_running(harness: Harness) -> None:
    big = {**status_body("PROCESSING"), "padding": "x" * (MAX_ANSWER_BYTES + 10)}
    harness.gateway.polls = [_json(big)]
    with pytest.raises(JobTimeoutError) as info:
        harness.call("generate", "a cat", timeout=10)
    assert info.value.request_id == RID
    assert len(harness.gateway.posts) == 1


def test_deeply_nested_json_is_an_api_response_error_not_a_recursion_error(
    harness: Harness,
) -> None:
    deep = '{"x":' * 100_000 + "1" + "}" * 100_000  # json.dumps itself cannot write this
    text = json.dumps({**status_body("PROCESSING"), "extra": "@"}).replace('"@"', deep)
    harness.gateway.polls = [httpx.Response(200, content=text.encode())]
    with pytest.raises(APIResponseError):
        harness.call("get_status", RID)


def test_the_key_echoed_by_the_gateway_is_scrubbed_everywhere(harness: Harness) -> None:
    echoed = f"key {KEY} is not allowed"
    harness.gateway.submits = [_json({"error": echoed, "message": echoed, "key": KEY}, 400)]
    with pytest.raises(BadRequestError) as info:
        harness.call("generate", "a cat")
    assert KEY not in str(info.value)
    assert KEY not in json.dumps(info.value.body)
    assert KEY not in repr(info.value.error)

    harness.gateway.submits = [queued()]
    harness.gateway.polls = [_json({**status_body("FAILED"), "error": echoed, KEY: [KEY]})]
    with pytest.raises(JobFailedError) as failed:
        harness.call("generate", "a cat")
    assert KEY not in str(failed.value)
    assert KEY not in (failed.value.error or "")
    assert KEY not in failed.value.job.model_dump_json()


def test_a_2xx_submit_we_cannot_read_may_have_made_a_job(harness: Harness) -> None:
    harness.gateway.submits = [httpx.Response(200, text="<html>busy</html>")]
    with pytest.raises(APIResponseError) as info:
        harness.call("generate", "a cat")
    assert info.value.may_have_arrived
    assert "not re-sent" in str(info.value)
    assert len(harness.gateway.posts) == 1


def test_a_2xx_submit_without_an_id_keeps_the_gateways_words(harness: Harness) -> None:
    harness.gateway.submits = [_json({"error": "model_overloaded", "message": "try later"})]
    with pytest.raises(APIResponseError) as info:
        harness.call("generate", "a cat")
    assert "model_overloaded" in str(info.value)
    assert "try later" in str(info.value)
    assert not info.value.may_have_arrived  # the gateway said why it made no job


def test_an_ordinary_status_still_reads(harness: Harness) -> None:
    harness.gateway.polls = [ok("PROCESSING")]
    assert harness.call("get_status", RID).status.value == "PROCESSING"
