"""mai-image remembers job durations between runs, per gateway, in the user's cache."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from mai_tools import MAIImageClient
from mai_tools._duration_cache import MAX_GATEWAYS, cache_file
from mai_tools.cli import CliState
from mai_tools.emulator import RunningEmulator
from tests.cli.cli_support import KEY, invoke


def _saved() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(cache_file().read_text(encoding="utf-8"))
    assert data["format"] == 1
    gateways: dict[str, Any] = data["gateways"]
    return gateways


def test_the_cache_lives_in_the_user_cache_directory(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cache_file() == tmp_path / "mai-tools" / "durations.json"
    monkeypatch.delenv("XDG_CACHE_HOME")
    if os.name == "posix":
        assert cache_file() == Path.home() / ".cache" / "mai-tools" / "durations.json"


def test_each_run_adds_its_job_duration_per_gateway(emu: RunningEmulator) -> None:
    assert not cache_file().exists()
    for n in range(2):
        got = invoke("generate", f"remember me {n}", "--no-save")
        assert got.code == 0, got.stderr
        durations = _saved()[emu.base_url]["generate"]
        assert len(durations) == n + 1
        assert all(0.1 < d < 5 for d in durations)  # this emulator's jobs take 0.2-0.4 s
    got = invoke("generate", "offline", "--emulator", "--no-save")
    assert got.code == 0, got.stderr
    assert set(_saved()) == {emu.base_url, "emulator"}  # the emulator's port varies: one name
    text = cache_file().read_text(encoding="utf-8")
    assert "remember me" not in text
    assert KEY not in text


def test_the_next_run_starts_from_what_was_saved(emu: RunningEmulator) -> None:
    cache_file().parent.mkdir(parents=True)
    cache_file().write_text(
        json.dumps({"format": 1, "gateways": {emu.base_url: {"generate": [0.3] * 7}}}),
        encoding="utf-8",
    )
    seen: list[int] = []

    def factory(**kwargs: Any) -> MAIImageClient:
        client = MAIImageClient(**kwargs)
        original = client.generate

        def generate(*args: Any, **kw: Any) -> Any:
            seen.append(client.durations.count("generate"))  # what it polls by
            return original(*args, **kw)

        client.generate = generate  # type: ignore[method-assign]
        return client

    got = invoke("generate", "warm start", "--no-save", obj=CliState(client_factory=factory))
    assert got.code == 0, got.stderr
    assert seen == [7]
    assert len(_saved()[emu.base_url]["generate"]) == 8


@pytest.mark.parametrize(
    "content",
    [
        "{not json",
        '{"format": 99}',
        '["a list"]',
        '{"format": 1, "gateways": 3}',
        '{"format": 1, "gateways": {"GATEWAY": {"generate": 5, "edit": "x"}}}',
    ],
)
def test_a_broken_cache_is_ignored_and_replaced(emu: RunningEmulator, content: str) -> None:
    cache_file().parent.mkdir(parents=True)
    cache_file().write_text(content.replace("GATEWAY", emu.base_url), encoding="utf-8")
    got = invoke("generate", "despite the cache", "--no-save")
    assert got.code == 0, got.stderr
    assert len(_saved()[emu.base_url]["generate"]) == 1


def test_an_unwritable_cache_never_fails_a_command(
    emu: RunningEmulator, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory", encoding="utf-8")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))
    got = invoke("generate", "no cache here", "--no-save")
    assert got.code == 0, got.stderr
    assert got.error_lines == []


def test_only_recent_gateways_are_kept(emu: RunningEmulator) -> None:
    old = {f"http://127.0.0.1:{port}": {"generate": [1.0]} for port in range(40000, 40030)}
    cache_file().parent.mkdir(parents=True)
    cache_file().write_text(json.dumps({"format": 1, "gateways": old}), encoding="utf-8")
    got = invoke("generate", "newest", "--no-save")
    assert got.code == 0, got.stderr
    kept = list(_saved())
    assert len(kept) == MAX_GATEWAYS
    assert kept[-1] == emu.base_url
    assert kept[0] == "http://127.0.0.1:40011"  # the oldest ones went


def test_no_home_directory_means_no_cache(
    emu: RunningEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("XDG_CACHE_HOME")

    def no_home() -> Path:
        raise RuntimeError("Could not determine home directory.")

    monkeypatch.setattr(Path, "home", staticmethod(no_home))
    got = invoke("generate", "homeless", "--no-save")
    assert got.code == 0, got.stderr
