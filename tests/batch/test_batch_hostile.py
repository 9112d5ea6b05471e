"""The batch against hostile input: poisoned media URLs, hostile JSONL lines, tampered journal
rows, a journal that fails after a POST, ``.part`` files left by a kill -9, a torn manifest.

The gateway here is scripted (:class:`httpx.MockTransport`): it answers what no honest gateway
would, so every run is deterministic and needs no sleeping.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from mai_tools import AsyncMAIImageClient
from mai_tools.batch import (
    BatchItem,
    BatchRun,
    BatchSummary,
    LineOutcome,
    LineStatus,
    _journal,
    _submit,
)
from mai_tools.batch._input import request_of as request_of_item
from mai_tools.batch._journal import JournalError, Row
from mai_tools.emulator import RunningEmulator
from tests.batch.conftest import FAST_POLL, FAST_RETRY
from tests.cli.cli_support import invoke
from tests.network.servers import hostile_host
from tests.support.emulators import EmulatorPool
from tests.support.fakes import BASE, KEY, PNG_1PX

BAD_URL = "http://[::1/x.png"
CDN = "https://cdn.example.com"
_JSON = {"content-type": "application/json"}


class Gateway:
    """One job per POST (``rid-1``, ``rid-2``, ...), COMPLETED at the first status read with
    the URLs ``urls_for`` gives for the prompt; the CDN serves a 1-pixel PNG."""

    def __init__(self, urls_for: dict[str, list[str]] | None = None) -> None:
        self.urls_for = urls_for or {}
        self.prompts: dict[str, str] = {}
        self.posts = 0

    def handler(self, request: httpx.Request) -> httpx.Response:
        if request.url.host != "gateway.pixazo.ai":
            return httpx.Response(200, content=PNG_1PX, headers={"content-type": "image/png"})
        if request.method == "POST":
            self.posts += 1
            rid = f"rid-{self.posts}"
            self.prompts[rid] = json.loads(request.content)["prompt"]
            return httpx.Response(
                202,
                json={
                    "request_id": rid,
                    "status": "QUEUED",
                    "polling_url": f"{BASE}/v2/requests/status/{rid}",
                },
            )
        rid = request.url.path.rsplit("/", 1)[-1]
        prompt = self.prompts[rid]
        urls = self.urls_for.get(prompt, [f"{CDN}/{rid}/output.png"])
        body = {
            "request_id": rid,
            "status": "COMPLETED",
            "model_id": "microsoft-mai-image-2-5",
            "error": None,
            "output": {"media_url": urls, "media_type": "image/png"},
        }
        # json.dumps escapes what the URLs hold (a lone surrogate is sent as "\\ud800").
        return httpx.Response(200, content=json.dumps(body), headers=_JSON)


async def run(
    gateway: Gateway, items: list[Any], out: Path, **options: Any
) -> tuple[dict[str, LineOutcome], BatchSummary]:
    transport = httpx.MockTransport(gateway.handler)
    options.setdefault("retry_policy", FAST_RETRY)
    async with (
        httpx.AsyncClient(transport=transport) as downloads,
        AsyncMAIImageClient(
            KEY,
            base_url=BASE,
            http_client=httpx.AsyncClient(transport=transport),
            retry_policy=FAST_RETRY,
            poll_policy=FAST_POLL,
        ) as client,
        BatchRun(client, items, out, download_client=downloads, **options) as batch,
    ):
        outcomes = {o.id: o async for o in batch}
        return outcomes, batch.summary()


# ---------------------------------------------------------------- M7: a poisoned media URL


@pytest.mark.parametrize(
    "bad_url", [BAD_URL, f"{CDN}/\ud800.png"], ids=["ipv6-bracket", "lone-surrogate"]
)
async def test_a_malformed_media_url_is_that_lines_save_error_and_reruns_go_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, bad_url: str
) -> None:
    gateway = Gateway({"a poisoned prompt": [bad_url]})
    items = [
        {"id": "good", "prompt": "a fine prompt"},
        {"id": "bad", "prompt": "a poisoned prompt"},
    ]
    with caplog.at_level(logging.ERROR, logger="asyncio"):
        for _ in range(3):  # the first run and two reruns alike
            outcomes, summary = await run(gateway, items, tmp_path)
            assert outcomes["good"].saved
            bad = outcomes["bad"]
            assert bad.status is LineStatus.COMPLETED
            assert bad.image_urls == (bad_url,)
            assert bad.request_id == "rid-2"
            assert bad.error is not None
            assert "not saved" in bad.error
            assert summary.unsaved == 1
            lines = {
                d["id"]: d for d in map(json.loads, summary.manifest.read_text().split("\n")[:-1])
            }
            assert lines["bad"]["status"] == "COMPLETED"
            assert lines["bad"]["image_urls"] == [bad_url]
            assert "not saved" in lines["bad"]["error"]
    assert gateway.posts == 2  # nothing was sent again
    assert "exception was never retrieved" not in caplog.text


async def test_a_job_with_good_and_empty_urls_keeps_the_note_about_the_empty_one(
    tmp_path: Path,
) -> None:
    good = [f"{CDN}/rid-2/0.png", f"{CDN}/rid-2/2.png"]
    gateway = Gateway({"a mixed job": [good[0], "", good[1]]})
    items = [
        {"id": "fine", "prompt": "a fine prompt"},
        {"id": "mixed", "prompt": "a mixed job"},
    ]
    empty = "image 2 of rid-2 cannot be fetched: the gateway sent an empty URL"
    for rerun in range(3):  # the first run, a rerun, and one after a saved file went missing
        outcomes, summary = await run(gateway, items, tmp_path)
        assert outcomes["fine"].saved
        mixed = outcomes["mixed"]
        assert mixed.status is LineStatus.COMPLETED
        assert mixed.image_urls == tuple(good)
        assert len(mixed.paths) == 2
        assert all(p.is_file() for p in mixed.paths)
        assert mixed.error is not None
        assert mixed.error.startswith(empty), mixed.error
        assert (summary.saved, summary.unsaved) == (1, 0)  # a rerun cannot fetch it
        lines = {d["id"]: d for d in map(json.loads, summary.manifest.read_text().splitlines())}
        assert lines["mixed"]["status"] == "COMPLETED"
        assert lines["mixed"]["image_urls"] == good
        assert lines["mixed"]["error"] == mixed.error
        if rerun == 1:
            mixed.paths[0].unlink()
    assert gateway.posts == 2  # nothing was sent again


async def test_an_unexpected_error_in_one_lines_step_is_that_lines_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def request_of(item: BatchItem, *args: Any, **kwargs: Any) -> Any:
        if item.id == "odd":
            raise RuntimeError("something nobody foresaw")
        return request_of_item(item, *args, **kwargs)

    monkeypatch.setattr(_submit, "request_of", request_of)
    gateway = Gateway()
    items = [{"id": "odd", "prompt": "an odd prompt"}, {"id": "fine", "prompt": "a fine prompt"}]
    outcomes, summary = await run(gateway, items, tmp_path)
    assert outcomes["fine"].saved
    assert outcomes["odd"].status is LineStatus.QUEUED
    assert outcomes["odd"].error == (
        "not submitted: unexpected error (RuntimeError: something nobody foresaw); rerun to retry"
    )
    assert summary.not_submitted == 1
    assert gateway.posts == 1
    monkeypatch.undo()
    outcomes, summary = await run(gateway, items, tmp_path)  # the rerun sends it
    assert summary.clean


# ---------------------------------------------------------------- L12: hostile JSONL lines

HOSTILE_LINES = {
    "line-2": '{"prompt": "deep", "x": ' + "[" * 5000 + "]" * 5000 + "}",
    "line-3": '{"prompt": "a prompt of many images", "num_images": ' + str(10**30) + "}",
    "line-4": '{"id": "\\ud800", "prompt": "a lone surrogate id"}',
    "line-5": '{"prompt": "a lone surrogate \\udfff in the prompt"}',
    "line-6": "[" * 100_000,
}


def test_hostile_jsonl_lines_are_invalid_with_a_reason_and_the_run_exits_2(
    emu: RunningEmulator, tmp_path: Path
) -> None:
    source = tmp_path / "in.jsonl"
    lines = ['{"id": "ok", "prompt": "a fine prompt"}', *HOSTILE_LINES.values()]
    source.write_text("\n".join(lines) + "\n")
    env: dict[str, str | None] = {"PIXAZO_API_KEY": KEY, "PIXAZO_BASE_URL": emu.base_url}
    for _ in range(2):  # the rerun alike
        got = invoke("batch", str(source), "--out", str(tmp_path / "out"), env=env)
        assert got.code == 2, got.stderr
        assert "COMPLETED 1, INVALID 5" in got.stdout
        assert "line-2: INVALID: not a usable JSON line: nested too deeply" in got.stderr
        assert "line-3: INVALID: num_images" in got.stderr
        assert "line-4: INVALID: id must be" in got.stderr
        assert "line-5: INVALID: 'prompt': not valid Unicode text" in got.stderr
        assert "line-6: INVALID: not a usable JSON line: nested too deeply" in got.stderr
    assert emu.control.stats().submissions == 1


# ---------------------------------------------------------------- L12: tampered journal rows

TAMPERED = {
    "urls-not-json": "UPDATE lines SET state = 'completed', image_urls = 'not json' WHERE id = ?",
    "urls-not-text": "UPDATE lines SET state = 'completed', image_urls = '[1, 2]' WHERE id = ?",
    "no-request-id": "UPDATE lines SET state = 'submitted', request_id = NULL WHERE id = ?",
    "images-as-text": "UPDATE lines SET state = 'pending', num_images = 'lots' WHERE id = ?",
    "huge-images": "UPDATE lines SET state = 'submitted', num_images = 1e300 WHERE id = ?",
    "path-escapes": "UPDATE lines SET paths = '[\"../../../../etc/passwd\"]' WHERE id = ?",
    "paths-not-list": "UPDATE lines SET paths = '{\"a\": 1}' WHERE id = ?",
    "error-as-bytes": "UPDATE lines SET state = 'failed', error = X'FF00' WHERE id = ?",
    "bad-utf8": "UPDATE lines SET status = CAST(X'C328' AS TEXT) WHERE id = ?",
}


def test_tampered_journal_rows_get_a_clear_error_each_and_the_rerun_goes_on(
    emu: RunningEmulator, tmp_path: Path
) -> None:
    source = tmp_path / "in.jsonl"
    ids = ["fine", *TAMPERED]
    source.write_text("".join(json.dumps({"id": i, "prompt": f"prompt {i}"}) + "\n" for i in ids))
    out = tmp_path / "out"
    env: dict[str, str | None] = {"PIXAZO_API_KEY": KEY, "PIXAZO_BASE_URL": emu.base_url}
    first = invoke("batch", str(source), "--out", str(out), env=env)
    assert first.code == 0, first.stderr
    with sqlite3.connect(out / _journal.JOURNAL_NAME) as db:
        for row_id, sql in TAMPERED.items():
            db.execute(sql, (row_id,))
    got = invoke("batch", str(source), "--out", str(out), env=env)
    assert got.code == 6, got.stderr  # UNKNOWN lines: never 1, "internal error"
    assert "Traceback" not in got.stderr
    lines = {d["id"]: d for d in map(json.loads, (out / "manifest.jsonl").read_text().splitlines())}
    assert lines["fine"]["status"] == "COMPLETED"
    assert lines["fine"]["paths"]
    for row_id in TAMPERED:
        assert lines[row_id]["status"] == "UNKNOWN", row_id
        assert "journal row of this line is damaged" in lines[row_id]["error"], row_id
    assert lines["path-escapes"]["paths"] == []
    assert emu.control.stats().submissions == len(ids)  # nothing was sent again


# ---------------------------------------------------------------- L14: the request id of a job


def test_a_journal_write_failing_after_the_post_still_tells_the_request_id(
    emu: RunningEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_put = _journal.Journal.put

    def put(self: _journal.Journal, row: Row, *, durable: bool = False) -> None:
        if row.request_id is not None:  # the disk fills right after the POST was answered
            raise JournalError("Writing the journal failed: database or disk is full.")
        real_put(self, row, durable=durable)

    monkeypatch.setattr(_journal.Journal, "put", put)
    source = tmp_path / "in.txt"
    source.write_text("a prompt whose job exists\n")
    out = tmp_path / "out"
    env: dict[str, str | None] = {"PIXAZO_API_KEY": KEY, "PIXAZO_BASE_URL": emu.base_url}
    got = invoke("batch", str(source), "--out", str(out), "--quiet", env=env)
    assert got.code == 7, got.stderr  # writing to DIR failed
    (request_id,) = emu.control.stats().outcomes
    assert request_id in got.stderr  # even with --quiet
    (line,) = map(json.loads, (out / "manifest.jsonl").read_text().splitlines())
    assert line["status"] == "UNKNOWN"
    assert line["request_id"] == request_id
    assert request_id in line["error"]


# ---------------------------------------------------------------- L6, L15: no .part file left


async def test_a_rerun_removes_the_part_files_a_killed_run_left_in_its_images_dir(
    tmp_path: Path,
) -> None:
    images = tmp_path / "images"
    images.mkdir()
    left = [images / f".mai-{n:016x}.part" for n in range(3)]  # as a kill -9 leaves them
    for path in left:
        path.write_bytes(b"\x89PNG half an image")
    mine = images / "notes.part"  # not a name the saves use: not the run's to remove
    mine.write_text("keep me")
    _, summary = await run(Gateway(), ["a fine prompt"], tmp_path)
    assert summary.clean
    assert not any(path.exists() for path in left)
    assert mine.read_text() == "keep me"


@pytest.mark.slow
@pytest.mark.timeout(120)
@pytest.mark.skipif(os.name != "posix", reason="POSIX signals")
@pytest.mark.parametrize("twice", [False, True], ids=["once", "twice"])
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_while_saving_leaves_no_part_file(
    emulators: EmulatorPool, tmp_path: Path, sig: signal.Signals, twice: bool
) -> None:
    with hostile_host(mode="half") as host:  # a few bytes of each image, then silence
        emu = emulators(
            api_keys=(KEY,),
            min_duration=0.0,
            max_duration=0.0,
            long_side=32,
            public_url=host.origin,
        )
        source = tmp_path / "in.txt"
        source.write_text("".join(f"a prompt saved slowly {i}\n" for i in range(4)))
        out = tmp_path / "out"
        env = {k: v for k, v in os.environ.items() if not k.startswith("PIXAZO_")}
        env.update(PIXAZO_API_KEY=KEY, PIXAZO_BASE_URL=emu.base_url)
        # The hostile host never finishes a save, so after one signal the run always waits out
        # the engine's whole grace for requests in flight (10 s) before it stops them: the same
        # path with a 1 s grace, not 10 s of sleep per test.
        main = (
            "import mai_tools.batch._engine as engine; engine.STOP_GRACE = 1.0\n"
            "from mai_tools.cli import main; main()"
        )
        proc = subprocess.Popen(
            [sys.executable, "-c", main, "batch", str(source), "--out", str(out)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            deadline = time.monotonic() + 60
            while len(list((out / "images").glob("*.part"))) < 4:  # every save under way
                assert proc.poll() is None, proc.communicate()
                assert time.monotonic() < deadline, "the saves never started"
                time.sleep(0.01)
            proc.send_signal(sig)
            if twice:  # the second one stops at once
                while "stopping" not in (line := proc.stderr.readline() if proc.stderr else ""):
                    assert line, "the run ended before the first signal was seen"
                proc.send_signal(sig)
            _, stderr = proc.communicate(timeout=60)
        finally:
            proc.kill()
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert list((out / "images").iterdir()) == []


# ---------------------------------------------------------------- the manifest: atomic

_REWRITE_MANIFEST = """
import asyncio, resource, sys
from mai_tools import AsyncMAIImageClient
from mai_tools.batch import BatchRun

async def main() -> None:
    async with AsyncMAIImageClient("{key}", base_url="{base}") as client:
        run = BatchRun(client, [{{"prompt": "no"}}] * 40, sys.argv[1])
        run.open()
        if sys.argv[2] != "-":  # the disk fills: no file may grow past this size any more
            resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[2]), resource.RLIM_INFINITY))
        run.close()  # rewrites the manifest
        print(run.summary().manifest_error)

asyncio.run(main())
"""


@pytest.mark.skipif(os.name != "posix", reason="RLIMIT_FSIZE")
def test_a_manifest_rewrite_that_fails_midway_leaves_the_old_manifest_whole(
    tmp_path: Path,
) -> None:
    # A manifest written in place would be cut short here: a reader (or the user after a full
    # disk) must find the last whole manifest, never a torn one.
    def rewrite(limit: str) -> str:
        script = _REWRITE_MANIFEST.format(key=KEY, base=BASE)
        got = subprocess.run(
            [sys.executable, "-c", script, str(tmp_path), limit],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert got.returncode == 0, got.stderr
        return got.stdout

    assert rewrite("-").strip() == "None"  # 40 INVALID lines, nothing sent
    manifest = tmp_path / "manifest.jsonl"
    before = manifest.read_bytes()
    assert before.count(b"\n") == 40
    assert "cannot write" in rewrite(str(len(before) // 2))  # the run knows (exit 7 in the CLI)
    assert manifest.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir() if "manifest" in p.name) == ["manifest.jsonl"]
