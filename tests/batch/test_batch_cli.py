"""``mai-image batch`` in-process: exit codes, summary, manifest, shards, stdin, refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mai_tools.emulator import RunningEmulator
from tests.batch.conftest import jobs_per_prompt
from tests.cli.cli_support import Outcome, invoke
from tests.support.fakes import KEY


@pytest.fixture
def env(emu: RunningEmulator) -> dict[str, str | None]:
    return {"PIXAZO_API_KEY": KEY, "PIXAZO_BASE_URL": emu.base_url}


def batch(env: dict[str, str | None], *args: str, input: bytes | None = None) -> Outcome:
    return invoke("batch", *args, env=env, input=input)


def write(path: Path, lines: list[object]) -> Path:
    text = "\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines)
    path.write_text(text + "\n")
    return path


def test_a_clean_run_exits_0_with_a_summary_and_a_manifest(
    env: dict[str, str | None], tmp_path: Path
) -> None:
    source = write(tmp_path / "prompts.txt", [f"a lighthouse number {i}" for i in range(6)])
    got = batch(env, str(source), "--out", str(tmp_path / "out"))
    assert got.code == 0, got.stderr
    assert "lines: 6 (COMPLETED 6)" in got.stdout
    assert "images saved: 6 (6 in this run)" in got.stdout
    assert got.stderr.count(": COMPLETED (1 image saved)") == 6  # one plain line per event
    manifest = (tmp_path / "out" / "manifest.jsonl").read_text().splitlines()
    assert [json.loads(x)["id"] for x in manifest] == [f"line-{i}" for i in range(1, 7)]
    again = batch(env, str(source), "--out", str(tmp_path / "out"))
    assert again.code == 0
    assert "(0 in this run)" in again.stdout


def test_invalid_lines_exit_2_and_the_rest_runs(
    emu: RunningEmulator, env: dict[str, str | None], tmp_path: Path
) -> None:
    source = write(
        tmp_path / "in.jsonl",
        [{"id": "ok", "prompt": "a fine prompt"}, {"id": "short", "prompt": "no"}, "{oops"],
    )
    got = batch(env, str(source), "--out", str(tmp_path / "out"))
    assert got.code == 2
    assert "short: INVALID: prompt: String should have at least 3 characters" in got.stderr
    assert "line-3: INVALID: not valid JSON" in got.stderr
    assert "COMPLETED 1, INVALID 2" in got.stdout
    assert emu.control.stats().submissions == 1


def test_failed_jobs_exit_4(env: dict[str, str | None], tmp_path: Path) -> None:
    source = write(tmp_path / "p.txt", ["a fine prompt", "a refused [fail] prompt"])
    got = batch(env, str(source), "--out", str(tmp_path / "out"))
    assert got.code == 4
    assert "line-2: FAILED: The prompt was rejected" in got.stderr


def test_json_summary(env: dict[str, str | None], tmp_path: Path) -> None:
    source = write(tmp_path / "p.txt", ["one prompt", "two prompt"])
    got = batch(env, str(source), "--out", str(tmp_path / "out"), "--json", "-q")
    assert got.code == 0
    assert got.stderr == ""
    data = json.loads(got.stdout)
    assert data["clean"] is True
    assert data["exit_code"] == 0
    assert data["counts"] == {"COMPLETED": 2}
    assert data["resume_command"].startswith("mai-image batch ")


def test_stdin_input(env: dict[str, str | None], tmp_path: Path) -> None:
    got = batch(env, "-", "--out", str(tmp_path / "out"), input=b"from stdin one\nfrom stdin two\n")
    assert got.code == 0, got.stderr
    assert "lines: 2 (COMPLETED 2)" in got.stdout


def test_another_inputs_dir_is_refused_and_force_reuses_it(
    env: dict[str, str | None], tmp_path: Path
) -> None:
    out = str(tmp_path / "out")
    assert batch(env, str(write(tmp_path / "a.txt", ["first input"])), "--out", out).code == 0
    other = str(write(tmp_path / "b.txt", ["second input"]))
    refused = batch(env, other, "--out", out)
    assert refused.code == 2
    assert refused.error_lines
    assert "holds the journal of another input" in refused.error_lines[0]
    assert "--force" in refused.error_lines[0]
    assert batch(env, other, "--out", out, "--force").code == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["missing.txt"], "Cannot read INPUT"),
        (["{input}", "--shard", "0/2"], "--shard must be K/N with 1 <= K <= N"),
        (["{input}", "--shard", "3/2"], "--shard must be K/N"),
    ],
)
def test_bad_input_and_options_exit_2_before_anything_is_sent(
    emu: RunningEmulator,
    env: dict[str, str | None],
    tmp_path: Path,
    args: list[str],
    message: str,
) -> None:
    source = write(tmp_path / "p.txt", ["a prompt"])
    args = [a.replace("{input}", str(source)) for a in args]
    got = batch(env, *args, "--out", str(tmp_path / "out"))
    assert got.code == 2
    assert message in got.stderr
    assert emu.control.stats().requests == []


def test_shards_split_one_input_exactly(
    emu: RunningEmulator, env: dict[str, str | None], tmp_path: Path
) -> None:
    source = write(tmp_path / "p.txt", [f"shard test prompt {i}" for i in range(10)])
    seen: list[str] = []
    for k in (1, 2, 3):
        out = tmp_path / f"out{k}"
        got = batch(env, str(source), "--out", str(out), "--shard", f"{k}/3")
        assert got.code == 0, got.stderr
        seen += [json.loads(x)["id"] for x in (out / "manifest.jsonl").read_text().splitlines()]
    assert sorted(seen) == sorted(f"line-{i}" for i in range(1, 11))
    assert seen[:4] == ["line-1", "line-4", "line-7", "line-10"]  # every 3rd line from the 1st
    assert set(jobs_per_prompt(emu).values()) == {1}
    assert sum(jobs_per_prompt(emu).values()) == 10


def test_max_images_exits_5_and_says_how_to_go_on(
    env: dict[str, str | None], tmp_path: Path
) -> None:
    source = write(tmp_path / "p.txt", [f"budget prompt {i}" for i in range(4)])
    got = batch(env, str(source), "--out", str(tmp_path / "o"), "--max-images", "2")
    assert got.code == 5
    assert "submitting stopped: --max-images 2 reached" in got.stdout
    assert f"resume with: mai-image batch {source} --out {tmp_path / 'o'}" in got.stdout


def test_max_spend_exits_5_and_says_so_in_the_summary(
    emu: RunningEmulator, env: dict[str, str | None], tmp_path: Path
) -> None:
    source = write(tmp_path / "p.txt", [f"priced prompt {i}" for i in range(4)])
    out = tmp_path / "o"
    money = ["--price-per-image", "0.05", "--max-spend", "0.10", "--currency", "eur"]
    got = batch(env, str(source), "--out", str(out), *money)
    assert got.code == 5
    assert "submitting stopped: --max-spend 0.1 EUR reached (2 images requested" in got.stdout
    assert "estimated spend: 0.1 EUR for 2 images requested at 0.05 EUR each" in got.stdout
    resume = f"mai-image batch {source} --out {out} --price-per-image 0.05 --max-spend 0.10"
    assert f"resume with: {resume} --currency EUR" in got.stdout
    assert emu.control.stats().submissions == 2


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--max-spend", "1"], "--max-spend needs --price-per-image"),
        (["--price-per-image", "-1"], "--price-per-image must be a plain amount"),
        (["--price-per-image", "1", "--max-spend", "$5"], "no sign or code"),
        (["--currency", "bitcoin"], "three-letter ISO 4217 code"),
    ],
)
def test_bad_money_flags_are_usage_errors(
    emu: RunningEmulator, env: dict[str, str | None], tmp_path: Path, args: list[str], words: str
) -> None:
    source = write(tmp_path / "p.txt", ["never sent"])
    got = batch(env, str(source), "--out", str(tmp_path / "o"), *args)
    assert got.code == 2
    assert words in got.stderr
    assert emu.control.stats().submissions == 0


def test_a_forbidden_key_exits_3_and_names_the_problem(
    emu: RunningEmulator, env: dict[str, str | None], tmp_path: Path
) -> None:
    emu.control.set_faults(forbidden_keys=(KEY,))
    source = write(tmp_path / "p.txt", ["forbidden prompt"])
    got = batch(env, str(source), "--out", str(tmp_path / "o"))
    assert got.code == 3
    assert got.error_lines
    assert "HTTP 403" in got.error_lines[0]
    assert "nothing is lost" in got.error_lines[0]


def test_help_documents_the_exit_codes() -> None:
    got = invoke("batch", "--help")
    assert got.code == 0
    for text in ("--resubmit-unknown", "--shard K/N", "130", "UNKNOWN", "--max-images"):
        assert text in got.stdout
    listing = invoke("--help")
    assert "batch" in listing.stdout
