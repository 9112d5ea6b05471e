"""The batch engine against the emulator: resume rules, faults, pacing, budget, refusals."""

from __future__ import annotations

import json
import re
import threading
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from mai_tools import InvalidArgumentError
from mai_tools.batch import (
    BatchDirectoryError,
    BatchEvent,
    BatchItem,
    BatchRun,
    LineStatus,
    _engine,
    _outcomes,
    run_batch,
)
from mai_tools.emulator import Faults, RunningEmulator
from tests.batch.conftest import FAST_RETRY, client, jobs_per_prompt, run_all
from tests.network.servers import HostileHost, hostile_host
from tests.support.emulators import EmulatorPool
from tests.support.fakes import KEY


def prompts(n: int, tag: str = "p") -> list[str]:
    return [f"{tag} prompt number {i}" for i in range(n)]


def posts(emu: RunningEmulator) -> int:
    """POSTs that reached the emulator (counted on arrival, also those it never answered)."""
    return sum(1 for r in emu.control.stats().requests if r.method == "POST")


def manifest(out: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]


async def test_every_line_completes_is_saved_and_listed_in_the_manifest(
    emu: RunningEmulator, tmp_path: Path
) -> None:
    items: list[object] = [*prompts(12), {"id": "two", "prompt": "two", "num_images": 2}]
    outcomes, summary = await run_all(emu, items, tmp_path, concurrency=5)  # type: ignore[arg-type]
    assert summary.clean
    assert summary.saved == 13
    assert summary.images_saved == 14
    assert sorted(o.id for o in outcomes) == sorted([f"line-{i}" for i in range(1, 13)] + ["two"])
    for outcome in outcomes:
        assert outcome.status is LineStatus.COMPLETED
        assert outcome.saved
        for path in outcome.paths:
            with Image.open(path) as image:
                image.load()
    lines = manifest(tmp_path)
    assert [d["id"] for d in lines] == [*(f"line-{i}" for i in range(1, 13)), "two"]
    assert all(d["status"] == "COMPLETED" and d["error"] is None for d in lines)
    assert all((tmp_path / str(p)).is_file() for d in lines for p in d["paths"])  # type: ignore[attr-defined]
    assert max(jobs_per_prompt(emu).values()) == 1


async def test_a_rerun_of_a_finished_run_sends_nothing(
    emu: RunningEmulator, tmp_path: Path
) -> None:
    await run_all(emu, prompts(8), tmp_path)
    before = emu.control.stats()
    outcomes, summary = await run_all(emu, prompts(8), tmp_path)
    after = emu.control.stats()
    assert summary.clean
    assert summary.submitted_now == 0
    assert all(o.resumed for o in outcomes)
    assert after.submissions == before.submissions == 8
    assert after.status_requests == before.status_requests


async def test_invalid_lines_are_refused_unsent_and_the_rest_runs(
    emu: RunningEmulator, tmp_path: Path
) -> None:
    items: list[object] = [
        "a fine prompt",
        "no",  # too short
        {"prompt": "a banner", "aspect_ratio": "7:3"},
        {"prompt": "an edit", "image": "missing.png"},
        {"prompt": "an edit", "aspect_ratio": "21:9", "image": "https://example.com/a.png"},
        {"prompt": "a typo", "aspect": "16:9"},
        {"id": "x", "prompt": "first x"},
        {"id": "x", "prompt": "second x"},
        {"prompt": "too many", "num_images": 9},
    ]
    outcomes, summary = await run_all(emu, items, tmp_path, base_dir=tmp_path)  # type: ignore[arg-type]
    by_line = {o.line: o for o in outcomes}
    assert by_line[1].saved
    assert by_line[7].saved
    invalid = {n: by_line[n].error for n in (2, 3, 4, 5, 6, 8, 9)}
    assert all(by_line[n].status is LineStatus.INVALID for n in invalid)
    assert "at least 3 characters" in str(invalid[2])
    assert "aspect_ratio" in str(invalid[3])
    assert "aspect_ratio" in str(invalid[5])
    assert "missing.png" in str(invalid[4])
    assert "unknown field 'aspect'" in str(invalid[6])
    assert "duplicate id 'x' (first used on line 7)" in str(invalid[8])
    assert "num_images" in str(invalid[9])
    assert emu.control.stats().submissions == 2  # only the two valid lines were sent
    assert summary.counts == {"COMPLETED": 2, "INVALID": 7}
    assert [d["status"] for d in manifest(tmp_path)].count("INVALID") == 7


async def test_edit_lines_read_images_relative_to_the_base_dir(
    emu: RunningEmulator, tmp_path: Path
) -> None:
    source = tmp_path / "in" / "photo.png"
    source.parent.mkdir()
    Image.new("RGB", (8, 8), "red").save(source)
    items = [{"prompt": "make it blue", "image": "photo.png"}]
    outcomes, summary = await run_all(emu, items, tmp_path / "out", base_dir=source.parent)
    assert summary.clean
    (rid,) = emu.control.stats().outcomes
    job = emu.control.job(rid)
    assert job is not None
    assert job.operation == "edit"
    assert job.source is not None
    assert outcomes[0].request_id == rid


async def test_a_stopped_run_resumes_without_sending_any_line_twice(
    emu: RunningEmulator, tmp_path: Path
) -> None:
    items = prompts(40)
    submitted: list[str] = []

    async with client(emu) as c:
        run = BatchRun(c, items, tmp_path, concurrency=8, retry_policy=FAST_RETRY)

        def stop_after_some(event: BatchEvent) -> None:
            if event.kind == "submitted":
                submitted.append(event.id or "")
                if len(submitted) == 15:
                    run.stop("test stop")

        run._on_event = stop_after_some
        async with run:
            first = [o async for o in run]
            summary = run.summary()
    assert summary.stop_reason == "test stop"
    assert len(first) == 40  # one outcome per line, also for the unfinished ones
    assert summary.saved < 40
    left = [o for o in first if not o.saved]
    assert all(o.status in (LineStatus.QUEUED, LineStatus.PROCESSING) for o in left)
    assert any(o.request_id is None and "not submitted" in str(o.error) for o in left)

    _, summary = await run_all(emu, items, tmp_path, concurrency=8)
    assert summary.clean
    assert emu.control.stats().submissions == 40
    assert set(jobs_per_prompt(emu).values()) == {1}


async def test_a_line_is_submitting_only_while_its_post_holds_a_request_slot(
    emu: RunningEmulator, tmp_path: Path
) -> None:
    # Ten lines at once through a client with two request slots, every answer late: the other
    # eight wait for a slot, and none of them may be journaled "submitting" (a crash would make
    # them UNKNOWN although their POST never left).
    emu.control.set_faults(slow_rate=1.0, slow_seconds=0.05)
    most: list[int] = []
    async with client(emu, max_concurrent_requests=2) as c:
        run = BatchRun(c, prompts(12), tmp_path, concurrency=10, retry_policy=FAST_RETRY)

        def count(event: BatchEvent) -> None:
            if event.kind == "submitted":
                most.append(run.counts().submitting)

        run._on_event = count
        async with run:
            await run.run()
            summary = run.summary()
    assert summary.clean
    assert len(most) == 12
    assert max(most) <= 2, most


async def test_a_job_past_the_job_timeout_is_left_running_and_the_rerun_waits_for_it(
    emulators: EmulatorPool, tmp_path: Path
) -> None:
    emu = emulators(api_keys=(KEY,), min_duration=1.0, max_duration=1.0, long_side=32)
    outcomes, summary = await run_all(emu, prompts(3), tmp_path, job_timeout=0.2)
    assert {o.status for o in outcomes} <= {LineStatus.QUEUED, LineStatus.PROCESSING}
    assert all(o.request_id for o in outcomes)
    assert all(
        # The time actually waited: 0.2 s and whatever the last read took on a busy machine.
        re.match(
            r"still (QUEUED|PROCESSING) after \d+(\.\d)?s; rerun to keep waiting$", str(o.error)
        )
        for o in outcomes
    ), [o.error for o in outcomes]
    assert summary.running == 3

    _, summary = await run_all(emu, prompts(3), tmp_path)
    assert summary.clean
    assert posts(emu) == 3


async def test_a_post_whose_answer_was_lost_is_unknown_and_resent_only_when_asked(
    emulators: EmulatorPool, tmp_path: Path
) -> None:
    # Every answer is 1.5 s late and the client gives up after 0.3 s: the POSTs were sent,
    # their answers never came (whether a job exists, the client cannot know). An emulator of
    # its own: the abandoned POSTs are still being answered after this test ends, and a shared
    # one would count them in the next test (its reset cannot stop requests in progress).
    emu = emulators(
        api_keys=(KEY,),
        min_duration=0.1,
        max_duration=0.3,
        long_side=32,
        faults=Faults(slow_rate=1.0, slow_seconds=1.5),
    )
    outcomes, summary = await run_all(
        emu, prompts(3), tmp_path, client_options={"request_timeout": 0.3}
    )
    assert {o.status for o in outcomes} == {LineStatus.UNKNOWN}
    assert all("may have received" in str(o.error) for o in outcomes)
    assert summary.counts == {"UNKNOWN": 3}
    assert summary.gateway_trouble
    emu.control.set_faults(slow_rate=0.0)

    outcomes, summary = await run_all(emu, prompts(3), tmp_path)
    assert {o.status for o in outcomes} == {LineStatus.UNKNOWN}  # reported again, not sent
    assert posts(emu) == 3

    outcomes, summary = await run_all(emu, prompts(3), tmp_path, resubmit_unknown=True)
    assert summary.clean
    assert posts(emu) == 6


async def test_a_429_pauses_the_whole_run_once(emu: RunningEmulator, tmp_path: Path) -> None:
    emu.control.set_faults(rate_limit_first_submits=6, retry_after=0.5)
    events: list[BatchEvent] = []
    _, summary = await run_all(emu, prompts(6), tmp_path, concurrency=6, events=events)
    assert summary.clean
    stats = emu.control.stats()
    assert stats.jobs_created == 6
    assert len(stats.rate_limited) == 6
    pauses = [e for e in events if e.kind == "paused"]
    assert len(pauses) == 1, pauses  # six 429s at once: one pause, not six backoffs
    first_429 = min(r.at for r in stats.rate_limited)
    later = [
        r.at
        for r in stats.requests
        if r.method == "POST" and r.at > max(x.at for x in stats.rate_limited)
    ]
    assert later
    assert min(later) >= first_429 + 0.5 - 0.02


async def test_status_read_faults_are_survived(emu: RunningEmulator, tmp_path: Path) -> None:
    emu.control.set_faults(
        error_500_rate=0.15,
        error_502_rate=0.15,
        drop_rate=0.1,
        rate_limit_poll_rate=0.1,
        retry_after=0.05,
    )
    _, summary = await run_all(emu, prompts(25), tmp_path, concurrency=10)
    assert summary.clean
    assert emu.control.stats().submissions == 25


class _FlakyDownloads(httpx.AsyncBaseTransport):
    """Fails the first attempt at each image with 503/429/a dropped connection, in turn."""

    def __init__(self, permanent: bool = False) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.seen: dict[str, int] = {}
        self.permanent = permanent

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = str(request.url)
        count = self.seen[url] = self.seen.get(url, 0) + 1
        if self.permanent:
            return httpx.Response(404, request=request)
        if count == 1:
            kind = len(self.seen) % 3
            if kind == 0:
                return httpx.Response(503, headers={"Retry-After": "0.05"}, request=request)
            if kind == 1:
                return httpx.Response(429, headers={"Retry-After": "0"}, request=request)
            raise httpx.ReadError("connection dropped", request=request)
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_download_faults_are_retried(emu: RunningEmulator, tmp_path: Path) -> None:
    transport = _FlakyDownloads()
    async with httpx.AsyncClient(transport=transport) as downloads:
        _, summary = await run_all(emu, prompts(9), tmp_path, download_client=downloads)
    assert summary.clean
    assert summary.images_saved == 9
    assert sorted(set(transport.seen.values())) == [2]  # each image: one failure, one success


async def test_a_rate_limiting_cdn_is_survived(emu: RunningEmulator, tmp_path: Path) -> None:
    # The emulator's CDN answers 429 (Cloudflare's "error code: 1015", with Retry-After) to the
    # first downloads of a burst, as r2.dev does: 4, fewer than the 5 tries of one download,
    # so the run is clean even if they all fall on one image.
    emu.control.set_faults(cdn_rate_limit_first=4, retry_after=0.05)
    _, summary = await run_all(emu, prompts(12), tmp_path)
    assert summary.clean
    assert summary.images_saved == 12
    stats = emu.control.stats()
    assert len(stats.rate_limited) == 4
    assert stats.downloads == 12 + 4  # every 429 was followed by one more try
    assert stats.submissions == 12  # a download retry never resubmits


class _ToHost(httpx.AsyncBaseTransport):
    """Sends every download to ``host`` instead of the emulator's media URL (real sockets)."""

    def __init__(self, host: HostileHost) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.origin = httpx.URL(host.origin)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        request.url = request.url.copy_with(host=self.origin.host, port=self.origin.port)
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


@pytest.mark.parametrize(
    "settings",
    [
        {"mode": "429", "failures": 2, "retry_after": "0"},
        {"mode": "500", "failures": 2},
        {"mode": "drop", "failures": 2},
    ],
    ids=["429-then-ok", "5xx-then-ok", "dropped-connections"],
)
async def test_a_hostile_media_host_is_survived(
    emu: RunningEmulator, tmp_path: Path, settings: dict[str, object]
) -> None:
    with hostile_host(**settings) as host:
        async with httpx.AsyncClient(transport=_ToHost(host)) as downloads:
            _, summary = await run_all(emu, prompts(5), tmp_path, download_client=downloads)
    assert summary.clean
    assert summary.images_saved == 5
    assert sorted(set(host.hits.values())) == [3]  # each image: two failures, then saved
    assert emu.control.stats().submissions == 5


@pytest.mark.parametrize("per_host", [2, 6])
async def test_downloads_per_host_caps_the_downloads_at_once(
    emu: RunningEmulator, tmp_path: Path, per_host: int
) -> None:
    with hostile_host(hold=0.1) as host:
        async with httpx.AsyncClient(transport=_ToHost(host)) as downloads:
            _, summary = await run_all(
                emu, prompts(16), tmp_path, download_client=downloads, downloads_per_host=per_host
            )
    assert summary.clean
    assert sum(host.hits.values()) == 16
    assert 1 <= host.most_at_once <= per_host


async def test_completed_but_unsaved_lines_are_downloaded_again_without_a_new_job(
    emu: RunningEmulator, tmp_path: Path
) -> None:
    async with httpx.AsyncClient(transport=_FlakyDownloads(permanent=True)) as downloads:
        outcomes, summary = await run_all(emu, prompts(4), tmp_path, download_client=downloads)
    assert summary.unsaved == 4
    assert not summary.clean
    assert all(o.status is LineStatus.COMPLETED and not o.saved for o in outcomes)
    assert all("images not saved" in str(o.error) for o in outcomes)
    polls = emu.control.stats().status_requests

    _, summary = await run_all(emu, prompts(4), tmp_path)
    assert summary.clean
    assert summary.images_saved == 4
    stats = emu.control.stats()
    assert stats.submissions == 4
    assert stats.status_requests == polls


async def test_a_deleted_image_is_downloaded_again(emu: RunningEmulator, tmp_path: Path) -> None:
    outcomes, _ = await run_all(emu, prompts(2), tmp_path)
    outcomes[0].paths[0].unlink()
    _, summary = await run_all(emu, prompts(2), tmp_path)
    assert summary.clean
    assert outcomes[0].paths[0].is_file()
    assert emu.control.stats().submissions == 2


async def test_max_images_counts_what_the_journal_holds(
    emu: RunningEmulator, tmp_path: Path
) -> None:
    items = [{"prompt": f"pair number {i}", "num_images": 2} for i in range(6)]
    outcomes, summary = await run_all(emu, items, tmp_path, max_images=7, concurrency=6)
    assert summary.saved == 3
    assert summary.not_submitted == 3
    assert summary.budget_reached
    held = [o for o in outcomes if not o.saved]
    assert all("--max-images 7" in str(o.error) for o in held)

    _, summary = await run_all(emu, items, tmp_path, max_images=7)
    assert summary.submitted_now == 0
    assert emu.control.stats().submissions == 3

    _, summary = await run_all(emu, items, tmp_path, max_images=12)
    assert summary.clean
    assert emu.control.stats().submissions == 6


async def test_max_spend_holds_lines_back_like_max_images(
    emu: RunningEmulator, tmp_path: Path
) -> None:
    """0.30 at 0.04 an image buys 7 images: three pairs, then the fourth would pass it."""
    items = [{"prompt": f"priced pair {i}", "num_images": 2} for i in range(6)]
    money: dict[str, Any] = {"price_per_image": Decimal("0.04"), "max_spend": Decimal("0.30")}
    outcomes, summary = await run_all(emu, items, tmp_path, concurrency=6, **money)
    assert summary.saved == 3
    assert summary.not_submitted == 3
    assert summary.budget_reached
    assert summary.hold_reason is not None
    assert summary.hold_reason.startswith("--max-spend 0.3 USD reached (6 images requested")
    assert "0.24 USD" in summary.hold_reason
    assert summary.spend == (
        "0.24 USD for 6 images requested at 0.04 USD each (earlier runs included) of "
        "--max-spend 0.3 USD"
    )
    held = [o for o in outcomes if not o.saved]
    assert all("--max-spend 0.3 USD" in str(o.error) for o in held)
    # A rerun counts what the journal holds: nothing more fits.
    _, summary = await run_all(emu, items, tmp_path, **money)
    assert summary.submitted_now == 0
    assert emu.control.stats().submissions == 3
    # The tighter of the two budgets holds.
    _, summary = await run_all(emu, items, tmp_path, max_images=8, **money)
    assert summary.submitted_now == 0
    _, summary = await run_all(emu, items, tmp_path, max_images=8, price_per_image="0.04")
    assert summary.submitted_now == 1
    assert summary.hold_reason is not None
    assert summary.hold_reason.startswith("--max-images 8 reached")
    assert emu.control.stats().submissions == 4


async def test_no_balance_stops_submitting_but_waits_for_submitted_jobs(
    emu: RunningEmulator, tmp_path: Path
) -> None:
    submitted: list[str] = []

    def on_event(event: BatchEvent) -> None:
        if event.kind == "submitted":
            submitted.append(event.id or "")
            if len(submitted) == 4:
                emu.control.set_faults(insufficient_balance_keys=(KEY,))

    outcomes, summary = await run_all(emu, prompts(30), tmp_path, concurrency=4, on_event=on_event)
    assert summary.balance
    assert summary.hold_reason
    assert "402" in summary.hold_reason
    saved = [o for o in outcomes if o.saved]
    assert len(saved) == emu.control.stats().jobs_created >= 4  # every submitted job was saved
    assert all(o.request_id is None for o in outcomes if not o.saved)


async def test_a_forbidden_key_stops_the_run_and_nothing_is_lost(
    emu: RunningEmulator, tmp_path: Path
) -> None:
    submitted: list[str] = []

    def on_event(event: BatchEvent) -> None:
        if event.kind == "submitted":
            submitted.append(event.id or "")
            if len(submitted) == 5:
                emu.control.set_faults(forbidden_keys=(KEY,))

    _, summary = await run_all(emu, prompts(30), tmp_path, concurrency=5, on_event=on_event)
    assert summary.fatal
    assert "403" in str(summary.stop_reason)
    created = emu.control.stats().jobs_created
    assert created >= 5
    assert summary.saved < 30
    emu.control.set_faults(forbidden_keys=())
    _, summary = await run_all(emu, prompts(30), tmp_path, concurrency=5)
    assert summary.clean
    assert set(jobs_per_prompt(emu).values()) == {1}


async def test_failed_and_error_jobs_are_reported_and_not_retried(
    emu: RunningEmulator, tmp_path: Path
) -> None:
    items = ["a refused [fail] prompt", "a broken [error] prompt", "a fine prompt"]
    outcomes, _summary = await run_all(emu, items, tmp_path)
    assert [o.status for o in sorted(outcomes, key=lambda o: o.line or 0)] == [
        LineStatus.FAILED,
        LineStatus.ERROR,
        LineStatus.COMPLETED,
    ]
    assert "content policy" in str(outcomes[0].error) or "content policy" in str(
        [o.error for o in outcomes]
    )
    await run_all(emu, items, tmp_path)
    assert emu.control.stats().submissions == 3


async def test_another_inputs_directory_is_refused_unless_forced(
    emu: RunningEmulator, tmp_path: Path
) -> None:
    await run_all(emu, prompts(2), tmp_path)
    with pytest.raises(BatchDirectoryError, match="another input"):
        await run_all(emu, prompts(3), tmp_path)
    with pytest.raises(BatchDirectoryError, match="another input"):
        await run_all(emu, prompts(2), tmp_path, shard=(1, 2))
    _, summary = await run_all(emu, prompts(3), tmp_path, force=True)
    assert summary.clean
    assert emu.control.stats().submissions == 3


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"concurrency": 0}, "concurrency must be a whole number, at least 1"),
        ({"concurrency": True}, "concurrency must be a whole number"),
        ({"concurrency": 2.5}, "concurrency must be a whole number"),
        ({"max_images": -1}, "max_images must be a whole number, at least 0"),
        ({"max_spend": "1"}, "max_spend .--max-spend. needs price_per_image"),
        ({"price_per_image": "-0.04"}, "price_per_image must be a plain amount"),
        ({"price_per_image": "1", "max_spend": "lots"}, "max_spend must be a plain amount"),
        ({"currency": "$"}, "currency must be a three-letter ISO 4217 code"),
        ({"downloads_per_host": 0}, "downloads_per_host must be a whole number"),
        ({"rps": 0}, "rps must be a positive number"),
        ({"rps": float("nan")}, "rps must be a positive number"),
        ({"job_timeout": float("inf")}, "job_timeout must be a positive number"),
        ({"status_reads_per_second": -1}, "status_reads_per_second must be a positive"),
        ({"shard": (0, 2)}, r"shard must be \(K, N\) with 1 <= K <= N"),
        ({"shard": (3, 2)}, r"shard must be \(K, N\)"),
        ({"shard": (1, True)}, r"shard must be \(K, N\)"),
        ({"shard": (1, 2, 3)}, r"shard must be \(K, N\)"),
        ({"shard": 2}, r"shard must be \(K, N\)"),
        ({"shard": "0/2"}, "--shard must be K/N with 1 <= K <= N"),
        ({"shard": "half"}, "--shard must be K/N"),
    ],
)
async def test_bad_options_are_refused_with_their_name(
    emu: RunningEmulator, tmp_path: Path, options: dict[str, object], message: str
) -> None:
    async with client(emu) as c:
        with pytest.raises(InvalidArgumentError, match=message):
            BatchRun(c, prompts(2), tmp_path, **options)  # type: ignore[arg-type]
    assert emu.control.stats().requests == []


async def test_a_shard_as_k_slash_n_text_is_the_same_shard(
    emu: RunningEmulator, tmp_path: Path
) -> None:
    outcomes, _ = await run_all(emu, prompts(7), tmp_path, shard="2/3")
    assert sorted(o.id for o in outcomes) == ["line-2", "line-5"]
    _, summary = await run_all(emu, prompts(7), tmp_path, shard=(2, 3))  # same journal
    assert summary.clean
    assert emu.control.stats().submissions == 2


async def test_the_manifest_is_written_one_snapshot_at_a_time_the_newest_last(
    emu: RunningEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The periodic rewrite runs in a worker thread that outlives its cancelled task, so a run
    # that ends during one used to write the final manifest at the same time (the same
    # temporary file: a failed rename, exit 7, or two snapshots mixed in one file).
    monkeypatch.setattr(_engine, "MANIFEST_INTERVAL", 0.01)
    real = _outcomes.write_manifest
    lock = threading.Lock()
    writing = [0, 0]  # now, at most

    def slow_write(path: Path, lines: list[dict[str, object]]) -> None:
        with lock:
            writing[0] += 1
            writing[1] = max(writing)
        try:
            time.sleep(0.05)  # a periodic write is in flight most of the time
            real(path, lines)
        finally:
            with lock:
                writing[0] -= 1

    monkeypatch.setattr(_outcomes, "write_manifest", slow_write)
    for n in range(3):
        out = tmp_path / str(n)
        _, summary = await run_all(emu, prompts(6, f"run {n}"), out)
        assert summary.manifest_error is None
        assert summary.clean
        lines = manifest(out)
        assert [d["status"] for d in lines] == ["COMPLETED"] * 6  # the final snapshot
        assert all(d["paths"] for d in lines)
    assert writing[1] == 1


async def test_a_directory_in_use_by_another_run_is_refused(
    emu: RunningEmulator, tmp_path: Path
) -> None:
    async with client(emu) as c, BatchRun(c, prompts(1), tmp_path):
        with pytest.raises(BatchDirectoryError, match="Another mai-image batch is running"):
            BatchRun(c, prompts(1), tmp_path).open()


async def test_concurrency_bounds_the_jobs_in_flight(emu: RunningEmulator, tmp_path: Path) -> None:
    await run_all(emu, prompts(30), tmp_path, concurrency=4)
    stats = emu.control.stats()
    spans = []
    for rid in stats.outcomes:
        job = emu.control.job(rid)
        assert job is not None
        spans.append((job.created_mono, stats.first_seen_finished_at_monotonic[rid]))
    for start, _ in spans:
        in_flight = sum(1 for s, e in spans if s <= start < e)
        assert in_flight <= 4


async def test_rps_bounds_all_api_requests(emu: RunningEmulator, tmp_path: Path) -> None:
    await run_all(emu, prompts(12), tmp_path, concurrency=12, rps=20)
    times = sorted(r.at for r in emu.control.stats().requests if not r.path.startswith("/files/"))
    assert len(times) >= 24
    for i, start in enumerate(times):
        window = [t for t in times[i:] if t < start + 1.0]
        assert len(window) <= 20 + 20  # the rate, plus one second of burst


async def test_status_reads_thin_out_for_many_jobs(emulators: EmulatorPool, tmp_path: Path) -> None:
    # Jobs of a second: the dense run reads each several times however busy the machine is
    # (with 0.1-0.3 s jobs, a slow machine's first reads already find most of them done).
    emu = emulators(api_keys=(KEY,), min_duration=1.0, max_duration=1.0, long_side=32)
    await run_all(emu, prompts(10), tmp_path / "dense", concurrency=10)
    dense = emu.control.stats().status_requests
    emu.control.reset()
    await run_all(
        emu, prompts(10, "s"), tmp_path / "sparse", concurrency=10, status_reads_per_second=5
    )
    sparse = emu.control.stats().status_requests
    assert sparse < dense


async def test_run_batch_yields_each_line(emu: RunningEmulator, tmp_path: Path) -> None:
    async with client(emu) as c:
        got = [o.id async for o in run_batch(c, [BatchItem("a", "a lighthouse")], tmp_path)]
    assert got == ["a"]
