"""End to end: the core clients against the emulator over real loopback HTTP, with faults.

The key used is the suite's canary key, so the global log guard (tests/conftest.py) proves it
never reaches a log record, httpcore's DEBUG records included.
"""

from __future__ import annotations

import asyncio
import base64
import io
import time
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from mai_tools import (
    AsyncMAIImageClient,
    AuthenticationError,
    InsufficientBalanceError,
    JobFailedError,
    JobTimeoutError,
    MAIImageClient,
    PollPolicy,
    RetryPolicy,
    Status,
)
from mai_tools.emulator import EmulatorConfig, ManualClock, RunningEmulator, run_emulator
from tests.support.emulators import EmulatorPool
from tests.support.fakes import KEY

FAST_POLL = PollPolicy(first_delay=0.05, min_interval=0.05, cold_max_interval=0.2, min_samples=3)
FAST_RETRY = RetryPolicy(initial_backoff=0.01, max_backoff=0.1, jitter=0.0)


@pytest.fixture
def emu(emulators: EmulatorPool) -> RunningEmulator:
    return emulators(api_keys=(KEY, "sk-canary-poor"), min_duration=0.2, max_duration=0.4, seed=11)


class Runner:
    """Calls the sync or the async client with the same arguments."""

    def __init__(self, mode: str, emu: RunningEmulator, **kw: Any) -> None:
        self.mode = mode
        self.kwargs: dict[str, Any] = {
            "base_url": emu.base_url,
            "poll_policy": FAST_POLL,
            "retry_policy": FAST_RETRY,
            **kw,
        }
        self.key = self.kwargs.pop("api_key", KEY)

    def __call__(self, method: str, *args: Any, **kwargs: Any) -> Any:
        if self.mode == "sync":
            with MAIImageClient(self.key, **self.kwargs) as client:
                return getattr(client, method)(*args, **kwargs)

        async def run() -> Any:
            async with AsyncMAIImageClient(self.key, **self.kwargs) as client:
                return await getattr(client, method)(*args, **kwargs)

        return asyncio.run(run())

    def save(self, method: str, directory: Path, *args: Any, **kwargs: Any) -> list[Path]:
        if self.mode == "sync":
            with MAIImageClient(self.key, **self.kwargs) as client:
                paths: list[Path] = client.save(getattr(client, method)(*args, **kwargs), directory)
                return paths

        async def run() -> list[Path]:
            async with AsyncMAIImageClient(self.key, **self.kwargs) as client:
                result = await getattr(client, method)(*args, **kwargs)
                saved: list[Path] = await client.save(result, directory)
                return saved

        return asyncio.run(run())


@pytest.fixture(params=["sync", "async"])
def run(request: pytest.FixtureRequest, emu: RunningEmulator) -> Runner:
    return Runner(request.param, emu)


def _decodes(path: Path, fmt: str) -> tuple[int, int]:
    with Image.open(path) as image:
        assert image.format == fmt
        return image.size


def test_generate_and_save(run: Runner, emu: RunningEmulator, tmp_path: Path) -> None:
    seen: list[Status] = []
    paths = run.save(
        "generate",
        tmp_path,
        "a lighthouse at dawn",
        num_images=2,
        aspect_ratio="3:2",
        on_status=lambda s, e: seen.append(s.status),
    )
    assert len(paths) == 2
    assert all(_decodes(p, "PNG") == (1024, 683) for p in paths)
    assert seen[0] is Status.QUEUED
    assert seen[-1] is Status.COMPLETED
    stats = emu.control.stats()
    assert stats.submissions == 1
    assert stats.jobs_created == 1


def _png_bytes() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (300, 200), (0, 90, 200)).save(out, "PNG")
    return out.getvalue()


@pytest.mark.parametrize("kind", ["path", "bytes", "data_uri"])
def test_edit_inputs(run: Runner, tmp_path: Path, kind: str) -> None:
    data = _png_bytes()
    image: Any
    if kind == "path":
        image = tmp_path / "in.png"
        image.write_bytes(data)
    elif kind == "bytes":
        image = data
    else:
        image = "data:image/png;base64," + base64.b64encode(data).decode()
    (path,) = run.save("edit", tmp_path / "out", "make it sunset", image, output_format="jpeg")
    assert _decodes(path, "JPEG") == (1024, 683)  # auto keeps the 3:2 input ratio


def test_edit_previous_result_url(run: Runner, tmp_path: Path) -> None:
    first = run("generate", "a blue car", aspect_ratio="9:16")
    (path,) = run.save("edit", tmp_path, "paint it red", first.image_urls[0])
    assert _decodes(path, "PNG") == (576, 1024)


def test_sync_mode(run: Runner, emu: RunningEmulator, tmp_path: Path) -> None:
    seen: list[tuple[Status, float]] = []
    (path,) = run.save(
        "generate",
        tmp_path,
        "inline image",
        sync_mode=True,
        output_format="webp",
        on_status=lambda s, elapsed: seen.append((s.status, elapsed)),
    )
    assert _decodes(path, "WEBP") == (1024, 1024)
    assert emu.control.stats().status_requests == 0
    # The job ran inside the POST (0.2-0.4 s here): its time is reported, not 0.
    ((status, elapsed),) = seen
    assert status is Status.COMPLETED
    assert elapsed >= 0.15


def test_webhook_header_reaches_the_gateway(run: Runner, emu: RunningEmulator) -> None:
    run("generate", "hook", webhook_url="http://127.0.0.1:9/unreachable")
    deadline = time.monotonic() + 30  # ends a broken test only: the callback is due already
    while not emu.control.stats().webhook_deliveries and time.monotonic() < deadline:
        time.sleep(0.02)
    (delivery,) = emu.control.stats().webhook_deliveries
    assert delivery["url"] == "http://127.0.0.1:9/unreachable"


def test_429_burst_on_submit_is_honoured(run: Runner, emu: RunningEmulator) -> None:
    emu.control.set_faults(rate_limit_first_submits=2, retry_after=0.3)
    start = time.monotonic()
    result = run("generate", "after the burst")
    assert time.monotonic() - start >= 0.6
    stats = emu.control.stats()
    assert stats.submissions == 3
    assert stats.jobs_created == 1
    assert result.status is Status.COMPLETED


def test_faulty_polls_are_survived(run: Runner, emu: RunningEmulator) -> None:
    emu.control.set_faults(
        error_500_rate=0.15,
        error_502_rate=0.15,
        drop_rate=0.15,
        rate_limit_poll_rate=0.1,
        retry_after=0.05,
    )
    for i in range(6):
        assert run("generate", f"resilient {i}").status is Status.COMPLETED
    stats = emu.control.stats()
    assert stats.submissions == 6
    assert stats.jobs_created == 6  # exactly one job per successful call


@pytest.mark.parametrize(("marker", "status"), [("[fail]", "FAILED"), ("[error]", "ERROR")])
def test_failed_jobs_surface(run: Runner, marker: str, status: str) -> None:
    with pytest.raises(JobFailedError) as info:
        run("generate", f"please {marker} now")
    assert info.value.status is Status(status)
    assert "emulated" in str(info.value)


def test_foreign_polling_url_is_not_used(run: Runner, emu: RunningEmulator) -> None:
    emu.control.set_faults(foreign_polling_url=True)
    assert run("generate", "stay home").status is Status.COMPLETED
    hosts = {r.host for r in emu.control.stats().requests}
    assert hosts == {emu.base_url.removeprefix("http://")}


def test_timeout_then_resume() -> None:
    # The job ends only when the emulator's clock is moved: the client's 0.3 s (real) is over
    # first however slow the machine is, and the wait after it finds the job done.
    clock = ManualClock()
    config = EmulatorConfig(api_keys=(KEY,), min_duration=1.0, max_duration=1.0)
    with (
        run_emulator(config, clock=clock) as slow,
        MAIImageClient(KEY, base_url=slow.base_url, poll_policy=FAST_POLL) as client,
    ):
        with pytest.raises(JobTimeoutError) as info:
            client.generate("slow one", timeout=0.3)
        assert info.value.last_status is not None
        clock.advance(1.0)
        result = client.wait(info.value.request_id, timeout=60)
        assert result.status is Status.COMPLETED
        assert slow.control.stats().jobs_created == 1


def test_typed_auth_errors(emu: RunningEmulator) -> None:
    emu.control.set_faults(insufficient_balance_keys=("sk-canary-poor",))
    with pytest.raises(InsufficientBalanceError):
        Runner("sync", emu, api_key="sk-canary-poor")("generate", "no money")
    with pytest.raises(AuthenticationError) as info:
        Runner("sync", emu, api_key="sk-canary-wrong-key")("generate", "bad key")
    assert "sk-canary-wrong-key" not in str(info.value)


async def test_many_concurrent_jobs_one_async_client(emu: RunningEmulator) -> None:
    async with AsyncMAIImageClient(
        KEY, base_url=emu.base_url, poll_policy=FAST_POLL, retry_policy=FAST_RETRY
    ) as client:
        results = await asyncio.gather(*(client.generate(f"crowd {i}") for i in range(100)))
    # How fast is a benchmark's question (benchmarks/run.py), not a test's.
    assert len({r.request_id for r in results}) == 100
    assert emu.control.stats().jobs_created == 100
