"""Saving against a hostile media host: retries (429 with Retry-After, 5xx, dropped
connections), the whole-save deadline (stalls, byte drips, a stall mid-body), concurrency per
host, and malformed URLs, through save_images / asave_images / afetch_image and the emulator's
CDN faults."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from mai_tools import (
    AsyncMAIImageClient,
    DownloadError,
    ImageResult,
    InvalidArgumentError,
    MAIImageClient,
    RetryPolicy,
)
from mai_tools._constants import DOWNLOADS_PER_HOST
from mai_tools._download import Saver, afetch_image, asave_images, save_images
from mai_tools._fetch import limit_per_host
from mai_tools.emulator import RunningEmulator
from tests.network.servers import HostileHost
from tests.support.fakes import KEY, PNG_1PX
from tests.support.waiting import aeventually, eventually

NO_BACKOFF = RetryPolicy(initial_backoff=0.0, max_backoff=0.0, jitter=0.0)
QUICK = RetryPolicy(initial_backoff=0.05, max_backoff=0.2, jitter=0.0)
# Seconds a bounded call may take past its deadline. The hosts here stall for an hour or drip
# for far longer than this, and the error text says which deadline ended the call: the bound
# only has to tell "ended by the deadline" from "waited for the host", so it is generous enough
# that no busy machine breaks it.
MARGIN = 10.0

MALFORMED = [
    "https://exa mple.com/x.png",
    "http://[::1",
    "https://xn--/a.png",
    "https://cdn.example/a\tb.png",
    "https://cdn\t.example/a.png",
    "https://xn--ls8h.la/a.png",  # an emoji host: IDNA refuses it
    "https://a..b/x.png",
    "https://" + "a" * 70 + ".example/x.png",
    "https://-bad-.example/x.png",
]


def _save(mode: str, urls: list[str], directory: Path, **kw: Any) -> list[Path]:
    kw.setdefault("retry_policy", QUICK)
    if mode == "sync":
        return save_images("rid", urls, directory, **kw)
    return asyncio.run(asave_images("rid", urls, directory, **kw))


def _timed(work: Callable[[], object]) -> tuple[float, BaseException | None]:
    started = time.monotonic()
    try:
        work()
    except DownloadError as exc:
        return time.monotonic() - started, exc
    return time.monotonic() - started, None


BAD_URL = r"not a valid URL|invalid host name"
MODES = pytest.mark.parametrize("mode", ["sync", "async"])


# --------------------------------------------------------------------------- retries


@MODES
def test_a_rate_limit_is_waited_out_honouring_retry_after(
    mode: str, media: HostileHost, tmp_path: Path
) -> None:
    media.mode, media.failures, media.retry_after = "429", 2, "0.3"
    elapsed, error = _timed(lambda: _save(mode, [media.url()], tmp_path, retry_policy=NO_BACKOFF))
    assert error is None
    assert media.hits["/img.png"] == 3
    assert elapsed >= 0.6  # two Retry-After pauses of 0.3 s, with no backoff of our own
    assert (tmp_path / "rid_1.png").read_bytes() == PNG_1PX


@MODES
def test_a_retry_after_date_is_honoured(mode: str, media: HostileHost, tmp_path: Path) -> None:
    media.mode, media.failures = "429", 1
    media.retry_after = media.retry_after_date(3600)
    with pytest.raises(DownloadError, match=r"HTTP 429.*asks to wait 3[56]\d\ds, too long"):
        _save(mode, [media.url()], tmp_path)
    assert media.hits["/img.png"] == 1


@MODES
def test_a_retry_after_beyond_the_deadline_ends_the_save_at_once(
    mode: str, media: HostileHost, tmp_path: Path
) -> None:
    media.mode, media.failures, media.retry_after = "429", 1, "30"
    elapsed, error = _timed(lambda: _save(mode, [media.url()], tmp_path, timeout=5))
    assert isinstance(error, DownloadError)
    assert "no time left to retry within the 5.0 s save timeout" in str(error)
    assert elapsed < 5
    assert list(tmp_path.iterdir()) == []


@MODES
@pytest.mark.parametrize("fault", ["500", "drop"])
def test_server_errors_and_dropped_connections_are_retried(
    mode: str, fault: str, media: HostileHost, tmp_path: Path
) -> None:
    media.mode, media.failures = fault, 2
    assert _save(mode, [media.url()], tmp_path) == [tmp_path / "rid_1.png"]
    assert media.hits["/img.png"] == 3


@MODES
def test_a_persistent_failure_gives_up_after_a_few_tries(
    mode: str, media: HostileHost, tmp_path: Path
) -> None:
    media.mode, media.failures = "500", 100
    with pytest.raises(DownloadError, match=r"HTTP 500 \(gave up after 5 tries\)"):
        _save(mode, [media.url()], tmp_path, retry_policy=NO_BACKOFF)
    assert media.hits["/img.png"] == 5
    assert list(tmp_path.iterdir()) == []


@MODES
def test_a_404_is_not_retried(mode: str, media: HostileHost, tmp_path: Path) -> None:
    media.mode = "404"
    with pytest.raises(DownloadError, match="answered HTTP 404"):
        _save(mode, [media.url()], tmp_path)
    assert media.hits["/img.png"] == 1


async def test_previews_retry_a_rate_limit_too(media: HostileHost) -> None:
    media.mode, media.failures, media.retry_after = "429", 2, "0"
    assert await afetch_image(media.url(), retry_policy=NO_BACKOFF) == PNG_1PX
    assert media.hits["/img.png"] == 3


# --------------------------------------------------------------------------- the deadline


@MODES
@pytest.mark.parametrize("behaviour", ["stall", "drip", "half"])
def test_a_stalled_or_dripping_host_is_cut_off_by_the_deadline(
    mode: str, behaviour: str, media: HostileHost, tmp_path: Path
) -> None:
    media.mode = behaviour
    before = set(threading.enumerate())
    elapsed, error = _timed(lambda: _save(mode, [media.url()], tmp_path, timeout=1.0))
    assert isinstance(error, DownloadError)
    assert "within the 1.0 s save timeout" in str(error)
    assert elapsed < 1.0 + MARGIN

    # A sync save given up on renames nothing later, and its part file goes away: once its
    # worker thread has ended, the folder is empty.
    def workers() -> list[threading.Thread]:
        return [t for t in threading.enumerate() if t not in before and t.name.startswith("mai")]

    eventually(lambda: not workers(), "the abandoned save's worker thread to end")
    assert list(tmp_path.iterdir()) == []


async def test_a_dripping_preview_is_cut_off_by_the_deadline(media: HostileHost) -> None:
    media.mode = "drip"
    started = time.monotonic()
    with pytest.raises(DownloadError, match=r"within the 0\.8 s save timeout"):
        await afetch_image(media.url(), timeout=0.8)
    assert time.monotonic() - started < 0.8 + MARGIN


@MODES
def test_the_save_timeout_must_be_a_positive_number(mode: str, tmp_path: Path) -> None:
    with pytest.raises(InvalidArgumentError, match="positive"):
        _save(mode, ["https://cdn.example/a.png"], tmp_path, timeout=0)


# --------------------------------------------------------------------------- concurrency


async def test_async_saves_download_a_bounded_number_of_images_per_host_at_once(
    media: HostileHost, tmp_path: Path
) -> None:
    media.hold = 0.2
    saves = 5
    urls = [media.url(f"{n}.png") for n in range(4)]
    async with httpx.AsyncClient() as http:
        results = await asyncio.gather(
            *(asave_images(f"r{i}", urls, tmp_path, http_client=http) for i in range(saves))
        )
    assert [len(r) for r in results] == [4] * saves
    # one client, one host: 20 images, never more than the cap at once across all saves
    assert media.most_at_once == DOWNLOADS_PER_HOST < saves * len(urls)


async def test_a_shared_client_is_not_starved_by_a_few_stalled_downloads(
    media: HostileHost, tmp_path: Path
) -> None:
    """An MCP server saves every caller's images through one client: a few stalled downloads
    (a share of a throttled CDN's connections) must leave slots for the other callers."""
    async with httpx.AsyncClient() as http:

        async def stalled(i: int) -> None:
            await asave_images(
                f"s{i}", [media.url(f"stall/{i}.png")], tmp_path, http_client=http, timeout=300
            )

        hung = [asyncio.ensure_future(stalled(i)) for i in range(4)]
        # The stalled downloads hold their connections first (and keep them: their deadline is
        # far away, so a slow machine cannot free them before the others run).
        await aeventually(
            lambda: all(media.hits[f"/stall/{i}.png"] for i in range(4)), "four stalled requests"
        )
        urls = [media.url(f"{n}.png") for n in range(4)]
        try:
            saved = await asave_images("g", urls, tmp_path, http_client=http, timeout=60)
        finally:
            for task in hung:
                task.cancel()
            await asyncio.gather(*hung, return_exceptions=True)
        assert not any(task.done() and not task.cancelled() for task in hung)
    assert len(saved) == 4


@pytest.mark.parametrize("per_host", [2, 6])
async def test_a_client_can_be_given_another_per_host_limit(
    media: HostileHost, tmp_path: Path, per_host: int
) -> None:
    media.hold = 0.2
    urls = [media.url(f"{n}.png") for n in range(9)]
    async with httpx.AsyncClient() as http:
        limit_per_host(http, per_host)  # what a batch run does with its downloads_per_host
        assert len(await asave_images("c", urls, tmp_path, http_client=http)) == 9
    assert media.most_at_once == per_host


def test_sync_saves_download_one_image_at_a_time(media: HostileHost, tmp_path: Path) -> None:
    media.hold = 0.05
    urls = [media.url(f"{n}.png") for n in range(4)]
    assert [p.name for p in save_images("s", urls, tmp_path)] == [f"s_{n}.png" for n in range(1, 5)]
    assert media.most_at_once == 1


async def test_one_failed_image_fails_the_save_with_its_own_error(
    media: HostileHost, tmp_path: Path
) -> None:
    urls = [media.url("1.png"), "http://127.0.0.1:9/unreachable.png"]
    with pytest.raises(DownloadError, match=r"unreachable\.png"):
        await asave_images("r", urls, tmp_path, retry_policy=NO_BACKOFF, timeout=3)


# --------------------------------------------------------------------------- malformed URLs


@pytest.mark.parametrize("url", MALFORMED)
async def test_a_malformed_media_url_is_a_download_error(url: str, tmp_path: Path) -> None:
    result = ImageResult(request_id="r", image_urls=[url])
    with MAIImageClient(KEY) as client, pytest.raises(DownloadError, match=BAD_URL):
        client.save(result, tmp_path)
    async with AsyncMAIImageClient(KEY) as aclient:
        with pytest.raises(DownloadError, match=BAD_URL):
            await aclient.save(result, tmp_path)
    with pytest.raises(DownloadError, match=BAD_URL):
        await afetch_image(url)
    assert not any(tmp_path.iterdir())  # noqa: ASYNC240 - a test's own temp dir


async def test_a_malformed_url_among_good_ones_is_refused_before_any_download(
    media: HostileHost, tmp_path: Path
) -> None:
    with pytest.raises(DownloadError):
        await asave_images("r", [media.url(), "http://[::1"], tmp_path)
    assert media.hits == {}


# --------------------------------------------------------------------------- the emulator's CDN


def test_the_emulators_cdn_rate_limit_is_waited_out(emu: RunningEmulator, tmp_path: Path) -> None:
    emu.control.set_faults(cdn_rate_limit_first=2, retry_after=0.1)
    with MAIImageClient(KEY, base_url=emu.base_url, retry_policy=QUICK) as client:
        result = client.generate("a throttled cdn", num_images=2)
        assert len(client.save(result, tmp_path / "sync")) == 2
    assert len(emu.control.stats().rate_limited) >= 2


async def test_the_emulators_cdn_rate_limit_is_waited_out_async(
    emu: RunningEmulator, tmp_path: Path
) -> None:
    emu.control.set_faults(cdn_rate_limit_first=3, retry_after=0.1, retry_after_as_date=False)
    async with AsyncMAIImageClient(KEY, base_url=emu.base_url, retry_policy=QUICK) as client:
        result = await client.generate("a throttled cdn", num_images=4)
        assert len(await client.save(result, tmp_path)) == 4


def test_a_saver_carries_the_clients_retry_policy() -> None:
    with MAIImageClient(KEY, retry_policy=QUICK) as client:
        saver = client._saver
    assert isinstance(saver, Saver)
    assert saver.retry_policy is QUICK


async def test_downloads_given_up_on_leave_no_unseen_failure(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """When the deadline wins, a download that had already failed is still marked as seen
    (asyncio would log "Task exception was never retrieved" for it)."""
    import gc

    from mai_tools._download import _cancel_and_reap

    async def fails() -> Path:
        raise DownloadError("an image that could not be fetched")

    async def hangs() -> Path:
        await asyncio.sleep(3600)
        return Path()

    tasks = [asyncio.ensure_future(fails()), asyncio.ensure_future(hangs())]
    await asyncio.sleep(0.01)
    await _cancel_and_reap(tasks)
    assert tasks[1].cancelled()
    del tasks
    gc.collect()
    assert "never retrieved" not in caplog.text


class _Stalls(httpx.SyncByteStream):
    """A body that sends one chunk, then waits until the test lets it go."""

    def __init__(self, release: threading.Event) -> None:
        self.release = release

    def __iter__(self) -> Iterator[bytes]:
        yield PNG_1PX[:16]
        self.release.wait(30)
        yield b"\0" * 16


def test_ctrl_c_during_a_sync_save_leaves_no_part_file(tmp_path: Path) -> None:
    # L6: on Ctrl-C the caller returns at once while the worker thread sits in a read; the
    # process may exit before the worker wakes, so its .part file must go with the caller.
    release = threading.Event()
    http = httpx.Client(
        transport=httpx.MockTransport(lambda r: httpx.Response(200, stream=_Stalls(release)))
    )
    join = threading.Thread.join

    def ctrl_c_while_waiting(self: threading.Thread, timeout: float | None = None) -> None:
        if self.name == "mai-tools-save" and timeout is not None:
            eventually(lambda: list(tmp_path.glob(".mai-*.part")), "the worker writes")
            raise KeyboardInterrupt  # what Ctrl-C does to the caller's wait
        join(self, timeout)

    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(threading.Thread, "join", ctrl_c_while_waiting)
            with pytest.raises(KeyboardInterrupt):
                save_images("rid_1", ["https://cdn.example.com/a.png"], tmp_path, http_client=http)
        assert list(tmp_path.glob(".mai-*.part")) == []
    finally:
        release.set()
        http.close()
