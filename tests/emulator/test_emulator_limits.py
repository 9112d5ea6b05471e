"""The emulator is safe to leave running: bodies are capped while they stream in, jobs and
edit sources are forgotten past the retention limits, edit sources are checked for their
declared size before decoding, the admin endpoints take a key, and the counters stay bounded."""

from __future__ import annotations

import base64
import io
import struct
import tracemalloc
import zlib
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from PIL import Image
from starlette.types import Message

from mai_tools.emulator import (
    Emulator,
    EmulatorConfig,
    ManualClock,
    RemoteEmulator,
    RunningEmulator,
    create_app,
    run_emulator,
)
from mai_tools.emulator._state import IMAGE_CACHE_BYTES
from tests.support.emulators import EmulatorPool

GEN = "/microsoft-mai-image-2-5/v1/microsoft-mai-image-2-5-request"
EDIT = "/microsoft-mai-image-2-5-edit/v1/microsoft-mai-image-2-5-edit-request"
KEY = "emulator-key"
AUTH = {"Ocp-Apim-Subscription-Key": KEY}
MiB = 1024 * 1024


def _png(w: int = 40, h: int = 20) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (w, h), (200, 10, 10)).save(out, "PNG")
    return out.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png_declaring(width: int, height: int, *, pixels: bool = False) -> bytes:
    """A PNG whose header declares ``width`` x ``height``: with ``pixels`` a real, valid image
    of zeros (a decompression bomb: tiny file, huge decode), else no pixel data at all."""
    header = _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))  # 8-bit gray
    data = b""
    if pixels:
        packer = zlib.compressobj(9)
        row = b"\x00" * (width + 1)  # filter byte + one gray byte per pixel
        data = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    return b"\x89PNG\r\n\x1a\n" + header + _chunk(b"IDAT", data) + _chunk(b"IEND", b"")


def _data_uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode()


async def _asgi_post(
    app: Any, path: str, *, chunks: int, chunk: bytes, declared: int | None = None
) -> tuple[int, int]:
    """POST ``chunks`` x ``chunk`` to the ASGI app; return (status, chunks the app read)."""
    read = 0

    async def receive() -> Message:
        nonlocal read
        read += 1
        return {"type": "http.request", "body": chunk, "more_body": read < chunks}

    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    headers = [(b"host", b"emu.test"), (b"ocp-apim-subscription-key", KEY.encode())]
    if declared is not None:
        headers.append((b"content-length", str(declared).encode()))
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
        "root_path": "", "headers": headers, "client": ("127.0.0.1", 1),
        "server": ("emu.test", 80),
    }  # fmt: skip
    await app(scope, receive, send)
    (start,) = [m for m in sent if m["type"] == "http.response.start"]
    return start["status"], read


@pytest.fixture
def emu(emulators: EmulatorPool) -> RunningEmulator:
    return emulators(min_duration=0.05, max_duration=0.1, seed=1)


# --------------------------------------------------------------------------- request bodies


async def test_a_streamed_body_is_read_only_up_to_the_cap() -> None:
    app = create_app(EmulatorConfig())
    status, read = await _asgi_post(app, GEN, chunks=100, chunk=b"x" * MiB)  # 100 MiB
    assert status == 413
    assert read <= 33  # 32 MiB cap, +1 chunk to see it crossed: the rest was never read


async def test_a_declared_oversized_body_is_refused_unread() -> None:
    app = create_app(EmulatorConfig(max_body_bytes=MiB))
    status, read = await _asgi_post(app, GEN, chunks=100, chunk=b"x" * MiB, declared=100 * MiB)
    assert status == 413
    assert read == 0


def test_a_100_mib_upload_is_cut_off_early(emu: RunningEmulator) -> None:
    sent = 0

    def upload() -> Iterator[bytes]:
        nonlocal sent
        block = b" " * MiB
        for _ in range(100):
            sent += 1
            yield block

    response = httpx.post(
        f"{emu.base_url}{GEN}",
        content=upload(),
        headers={**AUTH, "Content-Type": "application/json"},
        timeout=30,
    )
    assert response.status_code == 413
    assert response.headers["connection"] == "close"  # the rest is not read, nor waited for
    assert response.json()["error"] == "Payload Too Large"
    assert "33,554,432 bytes (32 MiB)" in response.json()["message"]
    assert sent < 64  # the cap (32) plus what the sockets buffer, far from 100
    assert emu.control.stats().jobs_created == 0


def test_a_20_mib_image_as_a_data_uri_fits(emu: RunningEmulator) -> None:
    # The documented input limit is 20 MiB an image; in base64 inside JSON that is ~27 MiB.
    image = _png(300, 200)
    image += b"\x00" * (20 * MiB - len(image))  # after IEND: still a valid PNG of 20 MiB
    body = {"prompt": "make it blue", "image_urls": [_data_uri(image)]}
    response = httpx.post(f"{emu.base_url}{EDIT}", json=body, headers=AUTH, timeout=30)
    assert response.status_code == 202, response.text
    job = emu.control.job(response.json()["request_id"])
    assert job is not None
    assert job.source is not None
    assert len(job.source) < 200_000  # kept shrunk to the output size, not the 20 MiB sent
    assert job.source_size == (300, 200)


# --------------------------------------------------------------------------- retention


def _status(c: httpx.Client, rid: str) -> httpx.Response:
    return c.get(f"/v2/requests/status/{rid}", headers=AUTH)


def test_jobs_past_max_jobs_are_forgotten() -> None:
    with (
        run_emulator(EmulatorConfig(min_duration=0, max_duration=0, max_jobs=3)) as emu,
        httpx.Client(base_url=emu.base_url) as c,
    ):
        rids = [c.post(GEN, json={"prompt": f"job {i}"}, headers=AUTH).json() for i in range(5)]
        ids = [r["request_id"] for r in rids]
        kept = _status(c, ids[4]).json()
        assert kept["status"] == "COMPLETED"
        media = kept["output"]["media_url"][0]
        assert c.get(media).status_code == 200
        for rid in ids[:2]:
            gone = _status(c, rid)
            assert gone.status_code == 404  # like an id that never existed
            assert gone.json() == {"error": "Not Found", "message": f"Request '{rid}' not found."}
            assert c.get(f"{emu.base_url}/files/{rid}/1.png").status_code == 404
        assert [_status(c, rid).status_code for rid in ids[2:]] == [200, 200, 200]
        stats = emu.control.stats()
    assert stats.jobs_created == 5
    assert stats.jobs_forgotten == 2
    assert set(stats.outcomes) == set(ids[2:])


def test_jobs_are_forgotten_job_ttl_after_they_end() -> None:
    clock = ManualClock()
    with (
        run_emulator(
            EmulatorConfig(min_duration=2, max_duration=2, job_ttl=60), clock=clock
        ) as emu,
        httpx.Client(base_url=emu.base_url) as c,
    ):
        rid = c.post(GEN, json={"prompt": "short lived"}, headers=AUTH).json()["request_id"]
        clock.advance(2 + 60)  # the job ends, then is kept exactly job_ttl
        media = _status(c, rid).json()["output"]["media_url"][0]
        assert c.get(media).status_code == 200
        clock.advance(0.001)
        assert _status(c, rid).status_code == 404
        assert c.get(media).status_code == 404
        assert emu.control.job(rid) is None
        assert emu.control.stats().jobs_forgotten == 1


def test_a_job_still_running_outlives_its_ttl() -> None:
    # The age counts from the end of the job: a slow job is not forgotten while it runs.
    clock = ManualClock()
    with (
        run_emulator(
            EmulatorConfig(min_duration=2, max_duration=2, job_ttl=0.5), clock=clock
        ) as emu,
        httpx.Client(base_url=emu.base_url) as c,
    ):
        rid = c.post(GEN, json={"prompt": "slow job"}, headers=AUTH).json()["request_id"]
        clock.advance(1.5)  # far past the TTL, counted from the start
        assert _status(c, rid).json()["status"] == "PROCESSING"
        clock.advance(0.5 + 0.5)  # ended, and kept exactly job_ttl
        assert _status(c, rid).json()["status"] == "COMPLETED"
        clock.advance(0.25)
        assert _status(c, rid).status_code == 404


def _edit_jobs(emulator: Emulator, count: int, source_size: int) -> None:
    for i in range(count):
        emulator.create_job(
            operation="edit", prompt=f"edit {i}", num_images=1, aspect_ratio="auto",
            output_format="png", source=bytes(source_size), webhook_url=None,
        )  # fmt: skip


@pytest.mark.parametrize(
    "config",
    [
        EmulatorConfig(max_jobs=10),  # bounded by count
        EmulatorConfig(max_source_bytes=30 * MiB),  # bounded by the bytes of kept sources
    ],
)
def test_memory_held_by_jobs_is_bounded(config: EmulatorConfig) -> None:
    emulator = Emulator(config)
    tracemalloc.start()
    try:
        _edit_jobs(emulator, 200, 3 * MiB)  # 600 MiB of sources were sent
        held, _peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert held < 40 * MiB
    assert emulator.stats().jobs_forgotten >= 189


def test_the_image_cache_is_bounded_by_bytes_and_follows_its_jobs() -> None:
    emulator = Emulator(EmulatorConfig(min_duration=0, max_duration=0, max_jobs=2))
    _edit_jobs(emulator, 2, 10)
    first, second = emulator.stats().outcomes
    block = bytes(IMAGE_CACHE_BYTES // 3)
    emulator.cache_image(first, 0, block)
    emulator.cache_image(second, 0, block)
    assert emulator.cached_image(first, 0) is not None
    _edit_jobs(emulator, 1, 10)  # the first job is forgotten: its image goes with it
    assert emulator.cached_image(first, 0) is None
    (third,) = set(emulator.stats().outcomes) - {second}
    for index in range(1, 4):  # a job has 1 image here, but the cache only counts bytes
        emulator.cache_image(third, index, block)
    assert emulator.cached_image(second, 0) is None  # the oldest entry made room
    assert emulator.cached_image(third, 3) is not None
    emulator.cache_image("unknown_job", 0, b"x")
    assert emulator.cached_image("unknown_job", 0) is None


# --------------------------------------------------------------------------- image bombs


@pytest.mark.parametrize(
    ("width", "height", "pixels"),
    [
        (8000, 7000, False),  # 56 Mpx: over our 50 Mpx limit (Pillow itself warns at 89 Mpx)
        (9000, 9000, True),  # 81 Mpx of real pixel data in a ~100 KB file
        (20000, 20000, False),  # 400 Mpx: Pillow's own guard also refuses it
    ],
)
def test_edit_sources_are_refused_by_declared_size(
    emu: RunningEmulator, width: int, height: int, pixels: bool
) -> None:
    bomb = _png_declaring(width, height, pixels=pixels)
    assert len(bomb) < 200_000
    body = {"prompt": "edit the bomb", "image_urls": [_data_uri(bomb)]}
    response = httpx.post(f"{emu.base_url}{EDIT}", json=body, headers=AUTH)
    assert response.status_code == 400
    data = response.json()
    assert set(data) == {"error", "message"}  # Pixazo's shape
    assert data["message"].startswith("image_urls[0]: the image ")
    assert "the limit is 50,000,000 pixels" in data["message"]
    if width < 10000:
        assert f"{width}x{height}" in data["message"]
    # Refused on the header: the first and last cases carry no pixels, so a decode would
    # have failed and (as before this check) the edit would have been accepted.
    assert emu.control.stats().jobs_created == 0


async def test_the_pixel_limit_is_configurable() -> None:
    app = create_app(EmulatorConfig(max_source_pixels=1000))
    transport = httpx.ASGITransport(app=app)

    async def submit(w: int, h: int) -> httpx.Response:
        async with httpx.AsyncClient(transport=transport, base_url="http://emu.test") as c:
            body = {"prompt": "small edit", "image_urls": [_data_uri(_png(w, h))]}
            return await c.post(EDIT, json=body, headers=AUTH)

    assert (await submit(40, 25)).status_code == 202  # 1000 px: at the limit
    refused = await submit(40, 26)
    assert refused.status_code == 400
    assert "40x26 (1,040 pixels); the limit is 1,000 pixels" in refused.json()["message"]


# --------------------------------------------------------------------------- admin endpoints


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({}, "missing subscription key"),
        ({"Ocp-Apim-Subscription-Key": "not-a-key"}, "invalid subscription key"),
    ],
)
def test_admin_endpoints_take_the_key(
    emu: RunningEmulator, headers: dict[str, str], message: str
) -> None:
    with httpx.Client(base_url=emu.base_url, headers=headers) as c:
        answers = [
            c.get("/_emulator/stats"),
            c.get("/_emulator/faults"),
            c.put("/_emulator/faults", json={"error_500_rate": 1.0}),
            c.post("/_emulator/reset"),
        ]
    for answer in answers:
        assert answer.status_code == 401
        assert answer.json()["statusCode"] == 401
        assert message in answer.json()["message"]
    assert emu.control.faults.error_500_rate == 0.0  # the PUT changed nothing


def test_remote_emulator_sends_the_key(emu: RunningEmulator) -> None:
    remote = RemoteEmulator(emu.base_url, emu.api_key)
    try:
        assert remote.set_faults(error_500_rate=0.25).error_500_rate == 0.25
        assert remote.stats().jobs_created == 0
        remote.reset()
        assert emu.control.faults.error_500_rate == 0.0
    finally:
        remote.close()
    wrong = RemoteEmulator(emu.base_url, "not-a-key")
    try:
        with pytest.raises(httpx.HTTPStatusError):
            wrong.stats()
    finally:
        wrong.close()
    assert "emulator-key" not in repr(RemoteEmulator(emu.base_url, emu.api_key))


def test_an_admin_body_is_capped(emu: RunningEmulator) -> None:
    response = httpx.put(
        f"{emu.base_url}/_emulator/faults",
        content=b'{"x": "' + b"y" * (2 * MiB) + b'"}',
        headers=AUTH,
    )
    assert response.status_code == 413


# --------------------------------------------------------------------------- counters


def test_request_records_are_bounded() -> None:
    emulator = Emulator(EmulatorConfig(max_records=5))
    for i in range(12):
        emulator.record_request("GET", f"/v2/requests/status/{i}", "emu.test", None)
        emulator.record_rate_limit(f"/{i}", 1.0, False)
        emulator.record_webhook({"n": i})
    stats = emulator.stats()
    assert [r.path for r in stats.requests] == [f"/v2/requests/status/{i}" for i in range(7, 12)]
    assert [r.path for r in stats.rate_limited] == [f"/{i}" for i in range(7, 12)]
    assert [d["n"] for d in stats.webhook_deliveries] == list(range(7, 12))


def test_keys_counted_are_bounded() -> None:
    emulator = Emulator()
    for i in range(1500):  # a client trying random keys
        emulator.record_request("GET", "/", "emu.test", f"guess-{i}")
    per_key = emulator.stats().requests_per_key
    assert len(per_key) <= 1001
    assert per_key["other"] == 500
    assert sum(per_key.values()) == 1500
