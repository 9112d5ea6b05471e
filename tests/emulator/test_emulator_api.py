"""The emulator speaks the gateway's API: paths, shapes, codes, auth, validation, lifecycle,
images, sync mode, webhooks, faults, counters and admin endpoints (raw HTTP, not our client)."""

from __future__ import annotations

import base64
import io
import logging
import threading
import time
from collections.abc import Iterator
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
import pytest
from PIL import Image
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from mai_tools import EDIT_ASPECT_RATIOS, GENERATE_ASPECT_RATIOS
from mai_tools.emulator import (
    EmulatorConfig,
    ManualClock,
    RunningEmulator,
    create_app,
    run_emulator,
)
from mai_tools.emulator._render import render, size_for
from tests.support.emulators import EmulatorPool

GEN = "/microsoft-mai-image-2-5/v1/microsoft-mai-image-2-5-request"
EDIT = "/microsoft-mai-image-2-5-edit/v1/microsoft-mai-image-2-5-edit-request"


@pytest.fixture
def emu(emulators: EmulatorPool) -> RunningEmulator:
    server = emulators(
        min_duration=0.3, max_duration=0.4, seed=3, api_keys=("emu-a", "emu-b", "poor", "banned")
    )
    server.control.set_faults(insufficient_balance_keys=("poor",), forbidden_keys=("banned",))
    return server


@pytest.fixture
def http(emu: RunningEmulator) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=emu.base_url, headers={"Ocp-Apim-Subscription-Key": "emu-a"}) as c:
        yield c


def _submit(http: httpx.Client, path: str = GEN, **body: Any) -> httpx.Response:
    payload = {"prompt": "a small red boat", **body}
    return http.post(path, json=payload)


def _wait_done(http: httpx.Client, request_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 60  # ends a broken test only: the jobs last 0.3-0.4 s
    while time.monotonic() < deadline:
        body: dict[str, Any] = http.get(f"/v2/requests/status/{request_id}").json()
        if body["status"] in ("COMPLETED", "FAILED", "ERROR"):
            return body
        time.sleep(0.05)
    raise AssertionError("job did not finish")


def _png(w: int = 40, h: int = 20) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (w, h), (200, 10, 10)).save(out, "PNG")
    return out.getvalue()


def test_submit_status_and_files_shapes(http: httpx.Client, emu: RunningEmulator) -> None:
    answer = _submit(http, num_images=2, aspect_ratio="16:9", output_format="jpeg")
    assert answer.status_code == 202
    job = answer.json()
    assert set(job) == {"request_id", "status", "polling_url"}
    assert job["request_id"].startswith("microsoft-mai-image-2-5_")
    assert job["status"] == "QUEUED"
    assert job["polling_url"] == f"{emu.base_url}/v2/requests/status/{job['request_id']}"
    first = http.get(f"/v2/requests/status/{job['request_id']}").json()
    assert first["status"] in ("QUEUED", "PROCESSING")
    assert first["output"] is None
    assert first["completed_at"] is None
    done = _wait_done(http, job["request_id"])
    assert done["status"] == "COMPLETED"
    assert done["model_id"] == "microsoft-mai-image-2-5"
    assert done["error"] is None
    assert done["output"]["media_type"] == "image/jpeg"
    assert len(done["output"]["media_url"]) == 2
    for stamp in ("created_at", "updated_at", "completed_at"):
        assert done[stamp].endswith("Z")
        assert len(done[stamp]) == len("2026-03-31T10:00:15.000Z")
    images = []
    for url in done["output"]["media_url"]:
        response = httpx.get(url)  # media needs no key, like a CDN
        assert response.headers["content-type"] == "image/jpeg"
        image = Image.open(io.BytesIO(response.content))
        assert image.format == "JPEG"
        assert image.size == (1024, 576)
        images.append(response.content)
    assert images[0] != images[1]


@pytest.mark.parametrize("ratio", GENERATE_ASPECT_RATIOS)
def test_sizes_follow_aspect_ratio(ratio: str) -> None:
    w, h = size_for(ratio, 1024)
    assert max(w, h) == 1024
    if ratio != "auto":
        a, b = (int(x) for x in ratio.split(":"))
        assert abs(w / h - a / b) < 0.01


def test_images_differ_by_prompt(http: httpx.Client) -> None:
    contents = []
    for prompt in ("a blue whale", "a green frog"):
        job = _submit(http, prompt=prompt, output_format="png").json()
        done = _wait_done(http, job["request_id"])
        contents.append(httpx.get(done["output"]["media_url"][0]).content)
    a, b = (Image.open(io.BytesIO(c)).convert("RGB") for c in contents)
    assert a.getpixel((10, 10)) != b.getpixel((10, 10))


def test_edit_keeps_source_ratio_and_is_derived(http: httpx.Client) -> None:
    uri = "data:image/png;base64," + base64.b64encode(_png(400, 100)).decode()
    job = _submit(http, EDIT, prompt="make it green", image_urls=[uri], output_format="webp").json()
    assert job["request_id"].startswith("microsoft-mai-image-2-5-edit_")
    done = _wait_done(http, job["request_id"])
    assert done["model_id"] == "microsoft-mai-image-2-5-edit"
    image = Image.open(io.BytesIO(httpx.get(done["output"]["media_url"][0]).content))
    assert image.format == "WEBP"
    assert image.size == (1024, 256)
    r, _g, b = image.convert("RGB").getpixel((5, 5))  # type: ignore[misc]
    assert r > b  # the red source shows through the tint


def test_an_edit_covers_its_sources_caption() -> None:
    common: dict[str, Any] = {
        "request_id": "microsoft-mai-image-2-5_x", "index": 0, "total": 1,
        "aspect_ratio": "1:1", "output_format": "png", "long_side": 256,
    }  # fmt: skip
    original = render(prompt="a lighthouse at dawn", **common)
    edit = render(prompt="make it night", source=original, **common)
    corner = (255, 255)  # inside the caption band, right of any text
    with Image.open(io.BytesIO(edit)) as edited, Image.open(io.BytesIO(original)) as first:
        assert edited.convert("RGB").getpixel(corner) == (0, 0, 0)  # opaque: no old caption
        assert first.convert("RGB").getpixel(corner) != (0, 0, 0)  # a translucent band


def test_edit_from_own_output_url(http: httpx.Client) -> None:
    first = _wait_done(http, _submit(http, aspect_ratio="9:16").json()["request_id"])
    url = first["output"]["media_url"][0]
    job = _submit(http, EDIT, prompt="add snow", image_urls=[url]).json()
    done = _wait_done(http, job["request_id"])
    image = Image.open(io.BytesIO(httpx.get(done["output"]["media_url"][0]).content))
    assert image.size == (576, 1024)


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        (GEN, {"prompt": "hi"}, "prompt"),
        (GEN, {"prompt": "x" * 5001}, "prompt"),
        (GEN, {"num_images": 0}, "num_images"),
        (GEN, {"num_images": 5}, "num_images"),
        (GEN, {"aspect_ratio": "2:1"}, "aspect_ratio"),
        (GEN, {"output_format": "gif"}, "output_format"),
        (GEN, {"sync_mode": "maybe"}, "sync_mode"),
        (GEN, {"sync_mode": 0}, "sync_mode"),  # JSON types as they are: 0 is not false
        (GEN, {"num_images": "2"}, "num_images"),
        (GEN, {"num_images": 2.5}, "num_images"),
        (GEN, {"prompt": "ab\x85"}, "prompt"),  # NEL is whitespace: only 2 characters
        (GEN, {"seed": 3}, "seed"),
        (EDIT, {"image_urls": []}, "image_urls"),
        (EDIT, {"image_urls": ["https://a/x.png", "https://b/y.png"]}, "image_urls"),
        (EDIT, {"image_urls": ["ftp://a/x.png"]}, "image_urls"),
        (EDIT, {"image_urls": ["https://a/x.png"], "aspect_ratio": "21:9"}, "aspect_ratio"),
        (EDIT, {"image_urls": ["data:image/png;base64,aGVsbG8="]}, "image_urls"),
        (EDIT, {}, "image_urls"),
    ],
)
def test_validation_400(
    http: httpx.Client, emu: RunningEmulator, path: str, body: dict[str, Any], field: str
) -> None:
    response = _submit(http, path, **body)
    assert response.status_code == 400
    data = response.json()
    assert set(data) == {"error", "message"}
    assert field in data["message"]
    assert emu.control.stats().jobs_created == 0


def test_json_numbers_and_malformed_urls(http: httpx.Client) -> None:
    assert _submit(http, num_images=2.0).status_code == 202  # 2.0 is the integer 2 in JSON
    # A URL we cannot parse is, like any external URL, not fetched here: the job is created.
    assert _submit(http, EDIT, prompt="edit it", image_urls=["http://["]).status_code == 202
    bad_hook = http.post(GEN, json={"prompt": "a cat"}, headers={"X-Webhook-URL": "http://["})
    assert bad_hook.status_code == 400
    assert "X-Webhook-URL" in bad_hook.json()["message"]


def test_non_json_body(http: httpx.Client) -> None:
    response = http.post(GEN, content=b"<xml/>", headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    assert "JSON" in response.json()["message"]


def test_a_deeply_nested_body_is_a_400_not_a_traceback(
    http: httpx.Client, caplog: pytest.LogCaptureFixture
) -> None:
    deep = b'{"prompt": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    response = http.post(GEN, content=deep, headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    assert "nested too deeply" in response.json()["message"]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


MISSING_KEY = (
    "Access denied due to missing subscription key. Make sure to include subscription key "
    "when making requests to an API."
)
INVALID_KEY = (
    "Access denied due to invalid subscription key. Make sure to provide a valid key for an "
    "active subscription."
)


@pytest.mark.parametrize(
    ("key", "code", "body"),
    [
        # The gateway in front (Azure API Management) checks keys, in its own shape...
        (None, 401, {"statusCode": 401, "message": MISSING_KEY}),
        ("wrong", 401, {"statusCode": 401, "message": INVALID_KEY}),
        # ...Pixazo behind it answers for wallets and models, in its shape.
        (
            "poor",
            402,
            {
                "error": "Insufficient Balance",
                "message": "Your wallet does not have enough balance.",
            },
        ),
        (
            "banned",
            403,
            {"error": "Forbidden", "message": "This subscription may not use this model."},
        ),
    ],
)
def test_auth(emu: RunningEmulator, key: str | None, code: int, body: dict[str, Any]) -> None:
    headers = {} if key is None else {"Ocp-Apim-Subscription-Key": key}
    response = httpx.post(f"{emu.base_url}{GEN}", json={"prompt": "a cat"}, headers=headers)
    assert response.status_code == code
    assert response.json() == body
    if code != 402:
        status = httpx.get(f"{emu.base_url}/v2/requests/status/x", headers=headers)
        assert status.status_code == code
        assert status.json() == body
    assert emu.control.stats().jobs_created == 0


def test_unknown_request_404_is_pixazos(http: httpx.Client) -> None:
    # The status route matched: the id is unknown to Pixazo, which answers in its shape.
    response = http.get("/v2/requests/status/microsoft-mai-image-2-5_nope")
    assert response.status_code == 404
    assert response.json() == {
        "error": "Not Found",
        "message": "Request 'microsoft-mai-image-2-5_nope' not found.",
    }


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v2/requests/nothing-here"),
        ("POST", "/microsoft-mai-image-2-5/v2/microsoft-mai-image-2-5-request"),
        ("GET", GEN),  # a known path with the wrong method matches no operation either
        ("DELETE", "/v2/requests/status/x"),
    ],
)
def test_unmatched_routes_get_the_gateways_404(http: httpx.Client, method: str, path: str) -> None:
    response = http.request(method, path)
    assert response.status_code == 404
    assert response.json() == {"statusCode": 404, "message": "Resource not found"}


def test_lifecycle_goes_through_processing() -> None:
    clock = ManualClock()
    config = EmulatorConfig(min_duration=1.0, max_duration=1.0, queued_fraction=0.5)
    with (
        run_emulator(config, clock=clock) as slow,
        httpx.Client(
            base_url=slow.base_url, headers={"Ocp-Apim-Subscription-Key": slow.api_key}
        ) as c,
    ):
        rid = _submit(c).json()["request_id"]
        seen: list[str] = []
        for step in (0.25, 0.25, 0.25, 0.25, 0.25):  # the job's 1 s, then 0.25 s more
            seen.append(c.get(f"/v2/requests/status/{rid}").json()["status"])
            clock.advance(step)
        seen.append(c.get(f"/v2/requests/status/{rid}").json()["status"])
    assert seen == ["QUEUED", "QUEUED", "PROCESSING", "PROCESSING", "COMPLETED", "COMPLETED"]
    stats = slow.control.stats()
    assert stats.finished_at[rid] == stats.first_seen_finished_at[rid]  # seen the moment it ended
    assert stats.polls[rid] == len(seen)


def test_sync_mode_answers_inline(http: httpx.Client) -> None:
    response = _submit(http, sync_mode=True, num_images=2, output_format="webp")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "COMPLETED"
    urls = body["output"]["media_url"]
    assert len(urls) == 2
    for url in urls:
        assert url.startswith("data:image/webp;base64,")
        image = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
        assert image.format == "WEBP"


def test_sync_mode_falls_back_to_a_job_past_the_cap(emu: RunningEmulator) -> None:
    with run_emulator(EmulatorConfig(min_duration=1, max_duration=1, sync_max_wait=0.1)) as e:
        response = httpx.post(
            f"{e.base_url}{GEN}",
            json={"prompt": "a cat", "sync_mode": True},
            headers={"Ocp-Apim-Subscription-Key": e.api_key},
        )
    assert response.status_code == 202
    assert response.json()["status"] == "QUEUED"


def test_webhook_receives_final_status(http: httpx.Client, emu: RunningEmulator) -> None:
    received: list[dict[str, Any]] = []
    got = threading.Event()

    async def hook(request: Request) -> JSONResponse:
        received.append(await request.json())
        got.set()
        return JSONResponse({"ok": True})

    import uvicorn

    from mai_tools.emulator._server import uvicorn_config

    app = Starlette(routes=[Route("/hook", hook, methods=["POST"])])
    import socket

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn_config(app, "127.0.0.1", port))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        while not server.started:
            time.sleep(0.01)
        response = http.post(
            GEN,
            json={"prompt": "hook me please"},
            headers={"X-Webhook-URL": f"http://127.0.0.1:{port}/hook"},
        )
        rid = response.json()["request_id"]
        assert got.wait(10)
    finally:
        server.should_exit = True
        thread.join(5)
        sock.close()
    assert received[0]["request_id"] == rid
    assert received[0]["status"] == "COMPLETED"
    assert received[0]["output"]["media_url"]
    deliveries = emu.control.stats().webhook_deliveries
    assert deliveries[0]["status_code"] == 200


def test_fail_and_error_markers(http: httpx.Client) -> None:
    failed = _wait_done(http, _submit(http, prompt="draw [fail] this").json()["request_id"])
    assert failed["status"] == "FAILED"
    assert failed["error"]
    assert failed["output"] is None
    errored = _wait_done(http, _submit(http, prompt="draw [error] this").json()["request_id"])
    assert errored["status"] == "ERROR"


def test_rate_limit_first_submissions(http: httpx.Client, emu: RunningEmulator) -> None:
    emu.control.set_faults(rate_limit_first_submits=2, retry_after=4)
    answers = [_submit(http) for _ in range(3)]
    assert [a.status_code for a in answers] == [429, 429, 202]
    assert answers[0].headers["Retry-After"] == "4"
    assert answers[0].json() == {
        "statusCode": 429,
        "message": "Rate limit is exceeded. Try again in 4 seconds.",
    }
    emu.control.set_faults(
        rate_limit_first_submits=0,
        rate_limit_submit_rate=1.0,
        retry_after=30,
        retry_after_as_date=True,
    )
    response = _submit(http)
    assert response.status_code == 429
    when = parsedate_to_datetime(response.headers["Retry-After"])
    assert 20 < when.timestamp() - time.time() <= 31
    stats = emu.control.stats()
    assert stats.submissions == 4
    assert stats.jobs_created == 1


@pytest.mark.parametrize(
    ("fault", "check"),
    [
        (
            "rate_limit_poll_rate",
            lambda r: (
                r.status_code == 429
                and r.headers["Retry-After"] == "1"
                and r.json()
                == {"statusCode": 429, "message": "Rate limit is exceeded. Try again in 1 seconds."}
            ),
        ),
        ("error_500_rate", lambda r: r.status_code == 500 and r.json()["error"]),
        ("error_502_rate", lambda r: r.status_code == 502 and "<html>" in r.text),
    ],
)
def test_poll_faults(http: httpx.Client, emu: RunningEmulator, fault: str, check: Any) -> None:
    rid = _submit(http).json()["request_id"]
    emu.control.set_faults(None, **{fault: 1.0})
    assert check(http.get(f"/v2/requests/status/{rid}"))


def test_dropped_connection(http: httpx.Client, emu: RunningEmulator) -> None:
    rid = _submit(http).json()["request_id"]
    emu.control.set_faults(drop_rate=1.0)
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        http.get(f"/v2/requests/status/{rid}")
    emu.control.set_faults(drop_rate=0.0)
    assert http.get(f"/v2/requests/status/{rid}").status_code == 200


def test_submit_500_creates_nothing(http: httpx.Client, emu: RunningEmulator) -> None:
    emu.control.set_faults(submit_error_rate=1.0)
    assert _submit(http).status_code == 500
    assert emu.control.stats().jobs_created == 0


def test_slow_answers(http: httpx.Client, emu: RunningEmulator) -> None:
    emu.control.set_faults(slow_rate=1.0, slow_seconds=0.3)
    start = time.monotonic()
    _submit(http)
    assert time.monotonic() - start >= 0.3


def test_foreign_polling_url(http: httpx.Client, emu: RunningEmulator) -> None:
    emu.control.set_faults(foreign_polling_url=True)
    assert not _submit(http).json()["polling_url"].startswith(emu.base_url)


def test_counters_and_request_log_hold_no_key(http: httpx.Client, emu: RunningEmulator) -> None:
    rid = _submit(http).json()["request_id"]
    _wait_done(http, rid)
    stats = emu.control.stats()
    assert stats.submissions == 1
    assert stats.polls[rid] >= 1
    assert stats.status_requests == stats.polls[rid]
    assert rid in stats.finished_at
    assert rid in stats.first_seen_finished_at
    assert stats.first_seen_finished_at[rid] >= stats.finished_at[rid]
    assert all(r.has_key for r in stats.requests)
    assert "emu-a" not in stats.model_dump_json()


def test_admin_endpoints(emu: RunningEmulator) -> None:
    with httpx.Client(base_url=emu.base_url, headers={"Ocp-Apim-Subscription-Key": "emu-b"}) as c:
        assert (
            c.put("/_emulator/faults", json={"error_500_rate": 0.5}).json()["error_500_rate"] == 0.5
        )
        assert emu.control.faults.error_500_rate == 0.5
        assert c.put("/_emulator/faults", json={"error_500_rate": 7}).status_code == 400
        assert c.put("/_emulator/faults", json={"nonsense": 1}).status_code == 400
        assert c.get("/_emulator/faults").json()["error_500_rate"] == 0.5
        assert c.get("/_emulator/stats").json()["jobs_created"] == 0
        assert c.post("/_emulator/reset").json() == {"reset": True}
        assert emu.control.faults.error_500_rate == 0.0


async def test_app_in_process_over_asgi() -> None:
    app = create_app(EmulatorConfig(min_duration=0, max_duration=0))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://emu.test") as c:
        r = await c.post(
            GEN,
            json={"prompt": "in process"},
            headers={"Ocp-Apim-Subscription-Key": "emulator-key"},
        )
        assert r.status_code == 202
        body = (
            await c.get(
                r.json()["polling_url"], headers={"Ocp-Apim-Subscription-Key": "emulator-key"}
            )
        ).json()
        assert body["status"] == "COMPLETED"
        assert body["output"]["media_url"][0].startswith("http://emu.test/files/")


def test_edit_ratios_are_enforced_exactly() -> None:
    assert set(GENERATE_ASPECT_RATIOS) - set(EDIT_ASPECT_RATIOS) == {"21:9", "5:4", "4:5"}
