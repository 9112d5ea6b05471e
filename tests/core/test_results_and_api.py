"""client.save, the public surface, configuration, and concurrency."""

from __future__ import annotations

import asyncio
import base64
import os
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

import mai_tools
from mai_tools import (
    APITimeoutError,
    AsyncMAIImageClient,
    ConfigurationError,
    DownloadError,
    FakeClock,
    GenerateRequest,
    ImageResult,
    InvalidArgumentError,
    MAIImageClient,
    PollPolicy,
    Status,
)
from mai_tools._download import Saver
from mai_tools.emulator import EmulatorConfig, run_emulator
from tests.support.fakes import BASE, KEY, PNG_1PX, RID, FullDisk, Gateway, Harness, ok

CDN = "https://cdn.example.com"


def _png_response(content: bytes = PNG_1PX, content_type: str = "image/png") -> httpx.Response:
    return httpx.Response(200, content=content, headers={"Content-Type": content_type})


def _save(harness: Harness, result: ImageResult, directory: Path, **kw: int) -> list[Path]:
    return harness.call("save", result, directory, **kw)


def _client_save(result: ImageResult, directory: str | Path) -> list[Path]:
    with MAIImageClient(api_key=KEY, base_url=BASE) as client:
        return client.save(result, directory)


def test_save_streams_to_safe_names(harness: Harness, tmp_path: Path) -> None:
    urls = [f"{CDN}/../../etc/passwd", f"{CDN}/x/evil name.sh"]
    harness.gateway.polls = [ok("COMPLETED", urls=urls)]
    for url in urls:
        harness.gateway.downloads[url.replace("/../..", "")] = _png_response()
        harness.gateway.downloads[url.replace(" ", "%20")] = _png_response()
    result = harness.call("generate", "a cat")
    paths = _save(harness, result, tmp_path / "out")
    assert [p.name for p in paths] == [f"{RID}_1.png", f"{RID}_2.png"]
    assert all(p.parent == tmp_path / "out" for p in paths)
    assert all(p.read_bytes() == PNG_1PX for p in paths)
    assert sorted(x.name for x in (tmp_path / "out").iterdir()) == [p.name for p in paths]
    downloads = [r for r in harness.gateway.requests if r.url.host == "cdn.example.com"]
    assert downloads
    assert all("Ocp-Apim-Subscription-Key" not in r.headers for r in downloads)


@pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")
def test_saved_files_follow_the_umask(tmp_path: Path) -> None:
    # Saved images are ordinary files (0644 under umask 022), not private temp files (0600).
    data_uri = "data:image/png;base64," + base64.b64encode(PNG_1PX).decode()
    result = ImageResult(request_id=RID, image_urls=[data_uri])
    old = os.umask(0o022)
    try:
        (path,) = _client_save(result, tmp_path)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_save_into_an_unwritable_directory_is_a_download_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_open = os.open

    def refuse_part_files(path: Any, flags: int, mode: int = 0o777, **kw: Any) -> int:
        if str(path).endswith(".part"):
            raise PermissionError(13, "Permission denied")
        return real_open(path, flags, mode, **kw)

    monkeypatch.setattr(os, "open", refuse_part_files)  # a read-only directory, even as root
    data_uri = "data:image/png;base64," + base64.b64encode(PNG_1PX).decode()
    with pytest.raises(DownloadError, match=r"Cannot write in directory .*Permission denied"):
        _client_save(ImageResult(request_id=RID, image_urls=[data_uri]), tmp_path)


def test_save_uses_bytes_for_extension(harness: Harness, tmp_path: Path) -> None:
    jpeg = b"\xff\xd8\xff\xe0" + b"\0" * 64
    harness.gateway.polls = [ok("COMPLETED", urls=[f"{CDN}/a.png"])]
    harness.gateway.downloads[f"{CDN}/a.png"] = _png_response(jpeg, "image/png")
    result = harness.call("generate", "a cat")
    assert [p.name for p in _save(harness, result, tmp_path)] == [f"{RID}_1.jpg"]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (
            lambda: httpx.Response(
                200, text="<html>login</html>", headers={"Content-Type": "text/html"}
            ),
            "not an image",
        ),
        (lambda: _png_response(b"not really a png at all"), "did not return"),
        (lambda: httpx.Response(403, text="denied"), "HTTP 403"),
        (lambda: _png_response(PNG_1PX + b"\0" * 5000), "download limit"),
    ],
)
def test_save_refuses_bad_downloads(
    harness: Harness, tmp_path: Path, make: Callable[[], httpx.Response], message: str
) -> None:
    harness.gateway.polls = [ok("COMPLETED", urls=[f"{CDN}/a.png"])]
    harness.gateway.downloads[f"{CDN}/a.png"] = make()
    result = harness.call("generate", "a cat")
    with pytest.raises(DownloadError, match=message):
        _save(harness, result, tmp_path, max_bytes=1000)
    assert list(tmp_path.iterdir()) == []  # no partial or temporary files left


def test_save_decodes_data_uris(harness: Harness, tmp_path: Path) -> None:
    uri = "data:image/png;base64," + base64.b64encode(PNG_1PX).decode()
    harness.gateway.submits = [httpx.Response(200, json=ok("COMPLETED", urls=[uri, uri]).json())]
    result = harness.call("generate", "a cat", sync_mode=True)
    paths = _save(harness, result, tmp_path)
    assert [p.read_bytes() for p in paths] == [PNG_1PX, PNG_1PX]
    assert base64.b64encode(PNG_1PX).decode()[:20] not in repr(result)
    assert result.summary()["image_urls"][0].startswith("data:image/png;base64,...<")


def test_save_to_an_unknown_users_home_is_a_clear_error() -> None:
    result = ImageResult(request_id=RID, image_urls=["https://cdn.example.com/a.png"])
    with pytest.raises(DownloadError, match="no such user's home directory"):
        _client_save(result, "~no-such-user-here/images")


def test_save_refuses_other_schemes(tmp_path: Path) -> None:
    result = ImageResult(request_id=RID, image_urls=["file:///etc/passwd"])
    with pytest.raises(DownloadError, match="non-http"):
        _client_save(result, tmp_path)


# --------------------------------------------------------------------------- public surface


def test_public_names() -> None:
    assert mai_tools.__all__ == sorted(mai_tools.__all__, key=lambda n: (not n.isupper(), n))
    for name in mai_tools.__all__:
        if name.startswith("MAIImage") and name.endswith(("Tool", "Toolkit")):
            continue  # lazily imported LangChain tools have their own tests
        assert getattr(mai_tools, name) is not None
    for name in (
        "MAIImageClient",
        "AsyncMAIImageClient",
        "ImageResult",
        "Job",
        "JobStatus",
        "MAIImageError",
        "APIStatusError",
        "BadRequestError",
        "AuthenticationError",
        "InsufficientBalanceError",
        "PermissionDeniedError",
        "NotFoundError",
        "RateLimitError",
        "ServerError",
        "APIConnectionError",
        "APITimeoutError",
        "JobFailedError",
        "JobTimeoutError",
        "ConfigurationError",
        "GenerateRequest",
        "EditRequest",
    ):
        assert name in mai_tools.__all__


def test_exception_tree() -> None:
    for name in mai_tools.__all__:
        obj = vars(mai_tools).get(name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            assert issubclass(obj, mai_tools.MAIImageError)
    assert issubclass(mai_tools.APITimeoutError, mai_tools.APIConnectionError)
    assert issubclass(mai_tools.RateLimitError, mai_tools.APIStatusError)
    assert issubclass(mai_tools.InvalidImageError, ValueError)
    assert issubclass(mai_tools.ConfigurationError, ValueError)


def test_import_does_not_import_mcp_or_langchain() -> None:
    code = (
        "import sys, mai_tools; "
        "bad = [m for m in ('mcp', 'langchain_core', 'mai_tools.emulator') if m in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


# --------------------------------------------------------------------------- configuration


def test_missing_key_names_the_variable_and_the_emulator() -> None:
    with pytest.raises(ConfigurationError) as info:
        MAIImageClient()
    assert "PIXAZO_API_KEY" in str(info.value)
    assert "emulator" in str(info.value)
    with pytest.raises(ConfigurationError):
        AsyncMAIImageClient(api_key="   ")


def test_env_fallbacks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIXAZO_API_KEY", KEY)
    monkeypatch.setenv("PIXAZO_BASE_URL", "http://127.0.0.1:9999/")
    with MAIImageClient() as client:
        assert client.base_url == "http://127.0.0.1:9999"
        assert KEY not in repr(client)
    with MAIImageClient(base_url="https://other.example") as client:
        assert client.base_url == "https://other.example"


@pytest.mark.parametrize("url", ["gateway.pixazo.ai", "ftp://x", "https://", "https://h/?q=1"])
def test_bad_base_url(url: str) -> None:
    with pytest.raises(ConfigurationError, match="base_url"):
        MAIImageClient(KEY, base_url=url)


def test_key_with_control_characters_refused_without_echo() -> None:
    with pytest.raises(ConfigurationError) as info:
        MAIImageClient("abc\r\nX-Injected: 1")
    assert "X-Injected" not in str(info.value)


def test_wrong_http_client_type() -> None:
    with pytest.raises(TypeError, match=r"httpx\.Client"):
        MAIImageClient(KEY, http_client=httpx.AsyncClient())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"httpx\.AsyncClient"):
        AsyncMAIImageClient(KEY, http_client=httpx.Client())  # type: ignore[arg-type]


def test_owned_pool_closed_and_foreign_pool_kept() -> None:
    own = MAIImageClient(KEY)
    with own:
        pass
    assert own._http.is_closed
    foreign = httpx.Client()
    with MAIImageClient(KEY, http_client=foreign):
        pass
    assert not foreign.is_closed
    foreign.close()


# --------------------------------------------------------------------------- concurrency


def _in_threads(work: Callable[[], None], count: int) -> None:
    threads = [threading.Thread(target=work) for _ in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def test_sync_client_is_thread_safe() -> None:
    gw = Gateway()
    lock = threading.Lock()
    counter = iter(range(10_000))

    def handler(request: httpx.Request) -> httpx.Response:
        with lock:
            if request.method == "POST":
                rid = f"microsoft-mai-image-2-5_{next(counter):05d}"
                return httpx.Response(202, json={"request_id": rid, "status": "QUEUED"})
        rid = request.url.path.rsplit("/", 1)[-1]
        return ok("COMPLETED", rid)

    gw_client = httpx.Client(transport=httpx.MockTransport(handler))
    client = MAIImageClient(
        KEY, base_url=BASE, http_client=gw_client, poll_policy=PollPolicy.immediate()
    )
    results: list[str] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(20):
                results.append(client.generate("thread safety").request_id)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    _in_threads(work, 8)
    assert errors == []
    assert len(set(results)) == 160
    assert gw.requests == []


@pytest.mark.slow  # a 3,200-request stress: skipped by the quick local lane (-m "not slow")
def test_sync_client_with_more_threads_than_connections(connects: Callable[[], int]) -> None:
    # More threads than pooled connections used to queue inside httpcore's sync pool, which can
    # close a connection it just handed to a waiting thread (encode/httpcore#1110): a raw
    # httpx.Client with 2 connections and 8 threads fails a few of 3,000 requests this way.
    with (
        run_emulator(EmulatorConfig(api_keys=(KEY,), min_duration=60, max_duration=60)) as emu,
        MAIImageClient(
            KEY, base_url=emu.base_url, max_retries=0, max_concurrent_requests=2
        ) as client,
    ):
        request_id = client.submit(GenerateRequest(prompt="crowded")).request_id
        errors: list[BaseException] = []

        def work() -> None:
            try:
                for _ in range(400):
                    client.get_status(request_id)
            except BaseException as exc:  # reported below
                errors.append(exc)

        _in_threads(work, 8)
        assert errors == []
        assert emu.control.stats().status_requests == 3200
        assert connects() <= 2
    for bad in (0, True, 2.5):
        with pytest.raises(ConfigurationError, match="max_concurrent_requests"):
            MAIImageClient(KEY, max_concurrent_requests=bad)  # type: ignore[arg-type]


@pytest.mark.slow  # 1,920 downloads from 8 threads: skipped by the quick local lane
def test_sync_saves_from_many_threads_share_the_client_safely(tmp_path: Path) -> None:
    # Downloads take no API request slot: with more threads than slots they still may not
    # queue in (or be trimmed from) the shared pool.
    config = EmulatorConfig(api_keys=(KEY,), min_duration=0, max_duration=0, long_side=16)
    with (
        run_emulator(config) as emu,
        MAIImageClient(
            KEY,
            base_url=emu.base_url,
            max_retries=0,
            max_concurrent_requests=2,
            poll_policy=PollPolicy.immediate(),
        ) as client,
    ):
        result = client.generate("saved again and again", num_images=4)
        errors: list[BaseException] = []

        def work() -> None:
            try:
                for i in range(60):
                    saved = client.save(result, tmp_path / f"{threading.get_ident()}-{i}")
                    assert len(saved) == 4
            except BaseException as exc:  # reported below
                errors.append(exc)

        _in_threads(work, 8)
        assert errors == []


async def test_async_client_serves_hundreds_of_jobs() -> None:
    clock = FakeClock()
    submitted: dict[str, float] = {}

    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            rid = f"microsoft-mai-image-2-5_{len(submitted):05d}"
            submitted[rid] = clock.monotonic()
            return httpx.Response(202, json={"request_id": rid, "status": "QUEUED"})
        rid = request.url.path.rsplit("/", 1)[-1]
        done = clock.monotonic() - submitted[rid] >= 2
        return ok("COMPLETED" if done else "PROCESSING", rid)

    async with AsyncMAIImageClient(
        KEY,
        base_url=BASE,
        clock=clock,
        http_client=httpx.AsyncClient(transport=httpx.MockTransport(handler)),
    ) as client:
        results = await asyncio.gather(*(client.generate(f"job {i}") for i in range(300)))
    assert len({r.request_id for r in results}) == 300
    assert all(r.status is Status.COMPLETED for r in results)


async def test_async_client_bounds_requests_in_flight() -> None:
    in_flight = 0
    peak = 0

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.01)
        in_flight -= 1
        if request.method == "POST":
            return httpx.Response(202, json={"request_id": RID, "status": "QUEUED"})
        return ok("COMPLETED")

    async with AsyncMAIImageClient(
        KEY,
        base_url=BASE,
        poll_policy=PollPolicy.immediate(),
        max_concurrent_requests=4,
        http_client=httpx.AsyncClient(transport=httpx.MockTransport(handler)),
    ) as client:
        await asyncio.gather(*(client.generate(f"job {i}") for i in range(40)))
    assert peak == 4
    with pytest.raises(ConfigurationError, match="max_concurrent_requests"):
        AsyncMAIImageClient(KEY, max_concurrent_requests=0)


async def test_waiting_for_a_request_slot_is_bounded_by_the_call_deadline() -> None:
    release = asyncio.Event()

    async def handler(request: httpx.Request) -> httpx.Response:
        await release.wait()  # the one slot stays busy
        return httpx.Response(202, json={"request_id": RID, "status": "QUEUED"})

    async with AsyncMAIImageClient(
        KEY,
        base_url=BASE,
        max_concurrent_requests=1,
        http_client=httpx.AsyncClient(transport=httpx.MockTransport(handler)),
    ) as client:
        busy = asyncio.create_task(client.submit(GenerateRequest(prompt="holds the only slot")))
        await asyncio.sleep(0.05)
        started = time.monotonic()
        with pytest.raises(APITimeoutError):
            await client.generate("queued behind it", timeout=0.5)
        assert time.monotonic() - started < 5  # not until the busy request ends
        release.set()
        assert (await busy).request_id == RID


def test_sync_waiting_for_a_request_slot_is_bounded_by_the_call_deadline() -> None:
    release = threading.Event()

    def handler(request: httpx.Request) -> httpx.Response:
        release.wait(10)
        return httpx.Response(202, json={"request_id": RID, "status": "QUEUED"})

    with MAIImageClient(
        KEY,
        base_url=BASE,
        max_concurrent_requests=1,
        http_client=httpx.Client(transport=httpx.MockTransport(handler)),
    ) as client:
        busy = threading.Thread(
            target=client.submit, args=(GenerateRequest(prompt="holds the only slot"),)
        )
        busy.start()
        time.sleep(0.05)
        started = time.monotonic()
        try:
            with pytest.raises(APITimeoutError):
                client.generate("queued behind it", timeout=0.5)
            assert time.monotonic() - started < 5
        finally:
            release.set()
            busy.join()


# --------------------------------------------------------------------------- robustness


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"request_timeout": 0}, "request_timeout"),
        ({"request_timeout": -1}, "request_timeout"),
        ({"request_timeout": float("nan")}, "request_timeout"),
        ({"request_timeout": "30"}, "request_timeout"),
        ({"wait_timeout": None}, "wait_timeout"),
        ({"wait_timeout": "x"}, "wait_timeout"),
        ({"max_retries": "3"}, "max_retries"),
        ({"max_retries": 1.5}, "max_retries"),
        ({"max_retries": -1}, "max_retries"),
        ({"max_download_bytes": 0}, "max_download_bytes"),
        ({"max_input_image_bytes": 0}, "max_input_image_bytes"),
        ({"base_url": 5}, "base_url must be a string"),
        ({"base_url": "http://gateway..pixazo.ai"}, "malformed host"),
        ({"base_url": "https://xn--/v1"}, "malformed host"),
        ({"base_url": "http://gate\tway.pixazo.ai"}, "tabs"),
        ({"base_url": "https://exa mple.com"}, "spaces"),
        ({"base_url": "http://gatewäy.pixazo.ai"}, "non-ASCII"),
        ({"base_url": "http://[::1"}, "http\\(s\\) URL"),
    ],
)
@pytest.mark.parametrize("cls", [MAIImageClient, AsyncMAIImageClient])
def test_bad_constructor_arguments_are_configuration_errors(
    cls: type[MAIImageClient] | type[AsyncMAIImageClient], kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message):
        cls(KEY, **kwargs)


@pytest.mark.parametrize("cls", [MAIImageClient, AsyncMAIImageClient])
def test_the_old_constructor_timeout_name_still_works_with_a_warning(
    cls: type[MAIImageClient] | type[AsyncMAIImageClient],
) -> None:
    with pytest.warns(DeprecationWarning, match="request_timeout"):
        client = cls(KEY, timeout=7.0)
    assert client.options.request_timeout == httpx.Timeout(7.0)
    with (
        pytest.raises(ConfigurationError, match="request_timeout"),
        pytest.warns(DeprecationWarning, match="renamed"),
    ):
        cls(KEY, timeout=0)


def test_a_non_string_key_is_refused_without_echoing_it() -> None:
    with pytest.raises(ConfigurationError, match="api_key must be a string; got int") as info:
        MAIImageClient(123456789)  # type: ignore[arg-type]
    assert "123456789" not in str(info.value)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"timeout": "x"}, "timeout must be a number"),
        ({"timeout": [1]}, "timeout must be a number"),
        ({"webhook_url": 5}, "webhook_url must be a string"),
        ({"webhook_url": "http://hook.example/é"}, "printable ASCII"),
        ({"webhook_url": "http://hook.example/\x00"}, "printable ASCII"),
        ({"webhook_url": "http://hook.example/a b"}, "printable ASCII"),
    ],
)
def test_bad_call_arguments_fail_before_sending(
    harness: Harness, kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidArgumentError, match=message):
        harness.call("generate", "a cat", **kwargs)
    assert harness.gateway.requests == []


def test_save_failures_on_disk_are_download_errors(tmp_path: Path) -> None:
    data_uri = "data:image/png;base64," + base64.b64encode(PNG_1PX).decode()
    result = ImageResult(request_id=RID, image_urls=[data_uri])
    (tmp_path / f"{RID}_1.png").mkdir()  # the image's name is taken by a directory
    with pytest.raises(DownloadError, match="Cannot save"):
        _client_save(result, tmp_path)
    with pytest.raises(DownloadError, match="not a usable directory name"):
        _client_save(result, str(tmp_path / "a\x00b"))
    assert [p.name for p in tmp_path.iterdir()] == [f"{RID}_1.png"]  # no temp file left


def test_save_reports_a_full_disk_as_a_download_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(os, "fdopen", FullDisk)
    data_uri = "data:image/png;base64," + base64.b64encode(PNG_1PX).decode()
    with pytest.raises(DownloadError, match="File too large"):
        _client_save(ImageResult(request_id=RID, image_urls=[data_uri]), tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_asave_from_another_event_loop_uses_a_fresh_connection(tmp_path: Path) -> None:
    with (
        run_emulator(EmulatorConfig(api_keys=(KEY,), min_duration=0, max_duration=0)) as emu,
        MAIImageClient(KEY, base_url=emu.base_url) as client,
    ):
        result = client.generate("made elsewhere")

        def must_not_be_used(request: httpx.Request) -> httpx.Response:
            raise AssertionError("the connection of another event loop was used")

        # As if made by an AsyncMAIImageClient in an earlier asyncio.run(), left open.
        stale = httpx.AsyncClient(transport=httpx.MockTransport(must_not_be_used))

        async def saver_of_an_earlier_loop() -> Saver:
            return Saver(ahttp=stale)

        saver = asyncio.run(saver_of_an_earlier_loop())
        (path,) = asyncio.run(saver.asave(result.request_id, result.image_urls, tmp_path))
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        asyncio.run(stale.aclose())
