"""The one engine's API: request objects, run/submit/wait/save, extra_body, the request gate."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from mai_tools import (
    OPERATIONS,
    EditFields,
    EditRequest,
    GenerateFields,
    GenerateRequest,
    HTTPRequest,
    ImageResult,
    InvalidArgumentError,
    MAIImageClient,
    operation_of,
)
from mai_tools._constants import EDIT_PATH, GENERATE_PATH
from tests.support.fakes import BASE, EDIT_RID, KEY, PNG_1PX, RID, Harness, ok, queued

DATA_URI = "data:image/png;base64," + base64.b64encode(PNG_1PX).decode()


# --------------------------------------------------------------------------- requests


def test_every_operation_is_one_request_class_with_its_path_and_model() -> None:
    assert set(OPERATIONS) == {"generate", "edit"}
    assert OPERATIONS["generate"] is GenerateRequest
    assert OPERATIONS["edit"] is EditRequest
    assert GenerateRequest.path == GENERATE_PATH
    assert EditRequest.path == EDIT_PATH
    for name, cls in OPERATIONS.items():
        assert cls.operation == name
        assert operation_of(f"{cls.model_id}_019d") == name  # the edit id extends the generate id
    assert operation_of("someone-else_019d") is None


def test_requests_are_built_from_the_callers_fields() -> None:
    assert set(GenerateFields.model_fields) <= set(GenerateRequest.model_fields)
    assert set(EditFields.model_fields) <= set(EditRequest.model_fields)
    # Class data is not a field: it never reaches the body.
    body = GenerateRequest(prompt="a fox").model_dump()
    assert "path" not in body
    assert "operation" not in body
    assert "model_id" not in body


def test_an_edit_requests_repr_shortens_its_data_uri() -> None:
    request = EditRequest(prompt="make it blue", image_urls=[DATA_URI])
    assert DATA_URI not in repr(request)
    assert "chars>" in repr(request)


@pytest.mark.parametrize(
    ("given", "match"),
    [
        ({"prompt": "a fox"}, "Expected a GenerateRequest or an EditRequest, got dict"),
        (GenerateFields(prompt="a fox"), "holds a caller's choices"),
        ("a fox", "got str"),
    ],
)
def test_run_refuses_what_is_not_a_request_before_sending(
    harness: Harness, given: object, match: str
) -> None:
    with pytest.raises(InvalidArgumentError, match=match):
        harness.call("run", given)
    assert harness.gateway.requests == []


def test_run_sends_the_requests_body_to_its_path_and_the_result_carries_it(
    harness: Harness,
) -> None:
    harness.gateway.submits = [queued(EDIT_RID)]
    harness.gateway.polls = [ok("COMPLETED", EDIT_RID)]
    request = EditRequest(prompt="make it blue", image_urls=[DATA_URI], num_images=2)
    result = harness.call("run", request)
    (post,) = harness.gateway.posts
    assert post.url.path == EDIT_PATH
    assert harness.gateway.body() == request.model_dump(mode="json")
    assert result.request == request
    assert result.prompt == "make it blue"
    assert DATA_URI not in repr(result)


# --------------------------------------------------------------------------- extra_body


def test_extra_body_adds_unknown_gateway_fields(harness: Harness) -> None:
    harness.call("generate", "a fox", extra_body={"seed": 7, "style": {"preset": "ink"}})
    body = harness.gateway.body()
    assert body["seed"] == 7
    assert body["style"] == {"preset": "ink"}
    assert body["prompt"] == "a fox"


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        ({"num_images": 4}, "extra_body repeats num_images: set it on the GenerateRequest"),
        ({"seed": float("nan")}, "JSON values only"),
        ({"seed": object()}, "JSON values only"),
        ({1: "x"}, "mapping of gateway field names"),
    ],
)
def test_bad_extra_body_is_refused_before_anything_is_sent(
    harness: Harness, extra: dict[Any, Any], match: str
) -> None:
    with pytest.raises(InvalidArgumentError, match=match):
        harness.call("run", GenerateRequest(prompt="a fox"), extra_body=extra)
    with pytest.raises(InvalidArgumentError, match=match):
        harness.call("submit", GenerateRequest(prompt="a fox"), extra_body=extra)
    assert harness.gateway.requests == []


# --------------------------------------------------------------------------- the gate


class _Log:
    def __init__(self, refuse: str | None = None) -> None:
        self.events: list[tuple[str, str, int | None]] = []
        self.refuse = refuse

    def admit(self, request: HTTPRequest) -> None:
        self.events.append(("admit", request.kind, None))
        if request.kind == self.refuse:
            raise RuntimeError(f"no {request.kind} now")

    def observe(self, request: HTTPRequest, reply: httpx.Response | httpx.TransportError) -> None:
        code = reply.status_code if isinstance(reply, httpx.Response) else None
        self.events.append(("observe", request.kind, code))


class _SyncGate(_Log):
    pass


class _AsyncGate(_Log):
    async def admit(self, request: HTTPRequest) -> None:  # type: ignore[override]
        super().admit(request)


def _gate(harness: Harness, refuse: str | None = None) -> _Log:
    return _SyncGate(refuse) if harness.mode == "sync" else _AsyncGate(refuse)


def test_the_gate_admits_each_request_right_before_it_is_sent_and_sees_its_answer(
    harness: Harness,
) -> None:
    gate = _gate(harness)
    sent_before_admit: list[int] = []
    original = gate.admit

    def admit(request: HTTPRequest) -> Any:
        sent_before_admit.append(len(harness.gateway.requests))
        return original(request)

    gate.admit = admit  # type: ignore[method-assign]
    harness.gateway.polls = [ok("PROCESSING"), ok("COMPLETED")]
    job = harness.call("submit", GenerateRequest(prompt="a fox"), gate=gate)
    harness.call("wait", job, gate=gate)
    assert gate.events == [
        ("admit", "submit", None),
        ("observe", "submit", 202),
        ("admit", "status", None),
        ("observe", "status", 200),
        ("admit", "status", None),
        ("observe", "status", 200),
    ]
    assert sent_before_admit == [0, 1, 2]  # each admission came just before its request


def test_a_gate_that_refuses_a_submit_sends_nothing(harness: Harness) -> None:
    gate = _gate(harness, refuse="submit")
    with pytest.raises(RuntimeError, match="no submit now"):
        harness.call("run", GenerateRequest(prompt="a fox"), gate=gate)
    assert harness.gateway.requests == []


def test_get_status_goes_through_the_gate(harness: Harness) -> None:
    gate = _gate(harness)
    harness.gateway.polls = [ok("PROCESSING")]
    harness.call("get_status", RID, gate=gate)
    assert [e[:2] for e in gate.events] == [("admit", "status"), ("observe", "status")]


# --------------------------------------------------------------------------- save


def test_save_names_files_and_writes_a_sidecar_on_request(harness: Harness, tmp_path: Path) -> None:
    harness.gateway.submits = [
        httpx.Response(200, json=ok("COMPLETED", urls=[DATA_URI, DATA_URI]).json())
    ]
    request = GenerateRequest(prompt="a paper crane", num_images=2, sync_mode=True)
    result = harness.call("run", request)
    paths = harness.call("save", result, tmp_path, name="crane", metadata=True)
    assert [p.name for p in paths] == ["crane_1.png", "crane_2.png"]
    sidecar = json.loads((tmp_path / "crane.json").read_text())
    assert sidecar["prompt"] == "a paper crane"
    assert sidecar["request_id"] == RID
    assert sidecar["operation"] == "generate"
    assert sidecar["request"]["num_images"] == 2
    assert [i["file"] for i in sidecar["images"]] == ["crane_1.png", "crane_2.png"]
    assert DATA_URI not in (tmp_path / "crane.json").read_text()  # never a flood of base64
    assert sorted(p.name for p in tmp_path.iterdir()) == ["crane.json", *[p.name for p in paths]]


def test_save_without_options_writes_only_the_images(harness: Harness, tmp_path: Path) -> None:
    result = ImageResult(request_id=RID, image_urls=[DATA_URI])
    assert [p.name for p in harness.call("save", result, tmp_path)] == [f"{RID}_1.png"]
    assert [p.name for p in tmp_path.iterdir()] == [f"{RID}_1.png"]


@pytest.mark.parametrize("name", ["../evil", "a/b", "", "  ", ".."])
def test_a_name_that_is_not_a_file_stem_is_refused_before_any_download(
    name: str, tmp_path: Path
) -> None:
    result = ImageResult(request_id=RID, image_urls=["https://cdn.example.com/a.png"])
    with MAIImageClient(KEY, base_url=BASE) as client, pytest.raises(InvalidArgumentError):
        client.save(result, tmp_path, name=name)
    assert list(tmp_path.iterdir()) == []


def test_save_refuses_what_is_not_a_result(tmp_path: Path) -> None:
    with MAIImageClient(KEY, base_url=BASE) as client:
        with pytest.raises(InvalidArgumentError, match="takes the ImageResult"):
            client.save({"image_urls": []}, tmp_path)  # type: ignore[arg-type]
        result = ImageResult(request_id=RID, image_urls=[DATA_URI])
        with pytest.raises(InvalidArgumentError, match="directory must be a path"):
            client.save(result, 42)  # type: ignore[arg-type]
