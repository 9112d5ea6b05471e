"""Property-based tests: arbitrary input never fails with anything but the documented errors,
and invalid input never reaches the gateway."""

from __future__ import annotations

import base64
import json
import math
import os
import re
from pathlib import Path
from typing import Any

import httpx
import pydantic
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mai_tools import (
    EDIT_ASPECT_RATIOS,
    GENERATE_ASPECT_RATIOS,
    OUTPUT_FORMATS,
    EditRequest,
    GenerateRequest,
    InvalidArgumentError,
    InvalidImageError,
    JobStatus,
    MAIImageClient,
    PollPolicy,
    image_to_url,
    sniff_image_type,
)
from mai_tools._duration_cache import cache_file, restore, store
from mai_tools._images import decode_data_uri
from mai_tools._policies import DurationStats, parse_retry_after
from tests.support.fakes import BASE, KEY, PNG_1PX, Gateway, ok

SETTINGS = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

anything = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True),
    st.text(max_size=60),
    st.binary(max_size=60),
    st.lists(st.integers(), max_size=3),
)


def _client(gw: Gateway) -> MAIImageClient:
    return MAIImageClient(
        KEY,
        base_url=BASE,
        poll_policy=PollPolicy.immediate(),
        http_client=httpx.Client(transport=httpx.MockTransport(gw.handler)),
    )


@SETTINGS
@given(
    prompt=st.one_of(st.text(max_size=5100), anything),
    num_images=st.one_of(st.integers(-3, 8), anything),
    aspect_ratio=st.one_of(st.sampled_from((*GENERATE_ASPECT_RATIOS, "1:2", "AUTO")), anything),
    output_format=st.one_of(st.sampled_from((*OUTPUT_FORMATS, "gif", "PNG")), anything),
)
def test_generate_arguments(
    prompt: Any, num_images: Any, aspect_ratio: Any, output_format: Any
) -> None:
    gw = Gateway()
    with _client(gw) as client:
        try:
            client.generate(
                prompt,
                num_images=num_images,
                aspect_ratio=aspect_ratio,
                output_format=output_format,
            )
        except InvalidArgumentError:
            assert gw.requests == []  # refused before anything was sent
            return
    body = gw.body()
    # What was sent satisfies the documented limits.
    assert 3 <= len(body["prompt"]) <= 5000
    assert body["prompt"].strip()
    assert 1 <= body["num_images"] <= 4
    assert body["aspect_ratio"] in GENERATE_ASPECT_RATIOS
    assert body["output_format"] in OUTPUT_FORMATS
    GenerateRequest.model_validate(body)


@SETTINGS
@given(
    image=st.one_of(
        st.binary(max_size=200),
        st.text(max_size=200),
        st.builds(lambda b: "data:image/png;base64," + base64.b64encode(b).decode(), st.binary()),
        st.builds(lambda s: "https://" + s, st.text(max_size=50)),
        st.just(PNG_1PX),
        anything,
    ),
    aspect_ratio=st.sampled_from(GENERATE_ASPECT_RATIOS),
)
def test_edit_arguments(image: Any, aspect_ratio: Any) -> None:
    gw = Gateway()
    with _client(gw) as client:
        try:
            client.edit("change the sky", image, aspect_ratio=aspect_ratio)
        except InvalidArgumentError:
            assert gw.requests == []
            return
    body = gw.body()
    assert body["aspect_ratio"] in EDIT_ASPECT_RATIOS
    (url,) = body["image_urls"]
    if url.startswith("data:"):
        mime, data = decode_data_uri(url)
        assert mime == sniff_image_type(data)
    else:
        assert url.lower().startswith(("http://", "https://"))
    EditRequest.model_validate(body)


@SETTINGS
@given(data=st.binary(max_size=64), name=st.text(min_size=1, max_size=20))
def test_image_files(tmp_path: Path, data: bytes, name: str) -> None:
    safe = "".join(c for c in name if c.isalnum()) or "f"
    path = tmp_path / safe
    path.write_bytes(data)
    if sniff_image_type(data) is None:
        with pytest.raises(InvalidImageError, match=re.escape(repr(str(path)))):
            image_to_url(path)
        return
    url = image_to_url(path)
    assert url == f"data:{sniff_image_type(data)};base64,{base64.b64encode(data).decode()}"
    assert image_to_url(os.fspath(path)) == url


@SETTINGS
@given(request_id=st.text(max_size=80))
def test_request_ids(request_id: str) -> None:
    gw = Gateway(polls=[ok("PROCESSING", request_id)])
    with _client(gw) as client:
        try:
            client.get_status(request_id)
        except InvalidArgumentError:
            assert gw.requests == []
            return
    (sent,) = gw.requests
    assert sent.url.host == "gateway.pixazo.ai"
    assert sent.url.path.startswith("/v2/requests/status/")
    assert "/" not in sent.url.path.removeprefix("/v2/requests/status/")


@SETTINGS
@given(
    body=st.dictionaries(
        st.sampled_from(["request_id", "status", "output", "error", "x"]), anything
    )
)
def test_status_bodies_never_crash(body: dict[str, Any]) -> None:
    body.setdefault("request_id", "microsoft-mai-image-2-5_x")
    try:
        status = JobStatus.from_body(body)
    except pydantic.ValidationError:
        return
    assert status.status.value in {
        "QUEUED",
        "PROCESSING",
        "COMPLETED",
        "FAILED",
        "ERROR",
        "UNKNOWN",
    }


@SETTINGS
@given(value=st.text(max_size=40))
def test_retry_after_never_crashes(value: str) -> None:
    result = parse_retry_after(value)
    assert result is None or result >= 0


@pytest.mark.parametrize("ratio", EDIT_ASPECT_RATIOS)
def test_every_edit_ratio_is_a_generate_ratio(ratio: str) -> None:
    assert ratio in GENERATE_ASPECT_RATIOS


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=10**300, max_value=10**400)  # beyond any float
    | st.floats()
    | st.text(max_size=12),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=12), children, max_size=5)
    ),
    max_leaves=25,
)


@SETTINGS
@given(
    document=st.one_of(
        json_values,
        st.fixed_dictionaries(
            {
                "format": st.just(1),
                "gateways": st.dictionaries(
                    st.sampled_from([BASE, "emulator"]) | st.text(max_size=8),
                    json_values,
                    max_size=4,
                ),
            }
        ),
    )
)
def test_any_duration_cache_content_is_survivable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, document: Any
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    cache_file().parent.mkdir(parents=True, exist_ok=True)
    cache_file().write_text(json.dumps(document), encoding="utf-8")
    durations = DurationStats()
    restore(durations, BASE)  # never raises, whatever the file holds
    assert all(
        isinstance(v, float) and v >= 0 and math.isfinite(v)
        for values in durations.to_dict().values()
        for v in values
    )
    durations.record("generate", 1.5)
    store(durations, BASE)
    again = DurationStats()
    restore(again, BASE)
    assert again.to_dict() == durations.to_dict()
