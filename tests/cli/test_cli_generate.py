"""mai-image generate against the emulator: files, plain progress, JSON, options."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from mai_tools.emulator import RunningEmulator
from tests.cli.cli_support import KEY, RID_PREFIX, WRONG_KEY, invoke


def test_saves_decodable_images_and_prints_their_paths(
    emu: RunningEmulator, tmp_path: Path
) -> None:
    out = tmp_path / "shots"
    got = invoke("generate", "a green tractor", "-n", "2", "-a", "4:3", "-o", str(out))
    assert got.code == 0, got.stderr
    files = sorted(out.iterdir())
    assert len(files) == 2
    for index, path in enumerate(files, start=1):
        with Image.open(path) as image:
            image.load()
            assert image.format == "PNG"
            assert image.size == (1024, 768)
        assert f"  saved: {path}" in got.stdout.splitlines()
        assert re.search(rf"^image {index}: http://127\.0\.0\.1:\d+/\S+$", got.stdout, re.M)
    assert got.stdout.startswith(f"request_id: {RID_PREFIX}")
    assert emu.control.stats().jobs_created == 1


def test_default_out_is_mai_images_in_the_current_directory(emu: RunningEmulator) -> None:
    got = invoke("generate", "a red kite")
    assert got.code == 0, got.stderr
    (saved,) = Path("mai-images").iterdir()
    assert f"  saved: {Path('mai-images') / saved.name}" in got.stdout
    assert saved.name.startswith(RID_PREFIX)


def test_plain_progress_has_one_line_per_status_change(emu: RunningEmulator) -> None:
    got = invoke("generate", "a slow sunset", "--no-save")
    assert got.code == 0
    lines = got.stderr.splitlines()
    rid = got.stdout.splitlines()[0].removeprefix("request_id: ")
    statuses = [re.fullmatch(rf"{rid}: (\w+) \(\d+\.\d+s\)", line) for line in lines]
    assert all(statuses), lines  # every stderr line is a progress line
    seen = [m.group(1) for m in statuses if m]
    assert seen[0] == "QUEUED"
    assert seen[-1] == "COMPLETED"
    assert len(seen) == len(set(seen))  # one line per change, never a repeat


@pytest.mark.parametrize(("fmt", "pil_format"), [("jpeg", "JPEG"), ("webp", "WEBP")])
def test_json_result_with_saved_paths(
    emu: RunningEmulator, tmp_path: Path, fmt: str, pil_format: str
) -> None:
    got = invoke("generate", "json please", "--json", "-f", fmt, "-o", str(tmp_path))
    assert got.code == 0, got.stderr
    data = json.loads(got.stdout)  # stdout is exactly one JSON document
    assert data["request_id"].startswith(RID_PREFIX)
    assert data["status"] == "COMPLETED"
    assert data["media_type"] == f"image/{fmt}"
    assert data["model_id"] == "microsoft-mai-image-2-5"
    assert len(data["image_urls"]) == 1
    (path,) = data["saved_paths"]
    with Image.open(path) as image:
        assert image.format == pil_format


def test_sync_mode_saves_inline_images_and_never_prints_base64(
    emu: RunningEmulator, tmp_path: Path
) -> None:
    got = invoke("generate", "inline please", "--sync", "--json", "-o", str(tmp_path))
    assert got.code == 0, got.stderr
    assert len(got.stdout) < 2000
    data = json.loads(got.stdout)
    assert re.fullmatch(r"data:image/png;base64,\.\.\.<\d+ chars>", data["image_urls"][0])
    with Image.open(data["saved_paths"][0]) as image:
        assert image.format == "PNG"
    assert emu.control.stats().status_requests == 0  # answered inline: nothing polled
    text = invoke("generate", "inline again", "--sync", "--no-save")
    assert re.search(r"^image 1: data:image/png;base64,\.\.\.<\d+ chars>$", text.stdout, re.M)


def test_no_save_writes_nothing(emu: RunningEmulator, tmp_path: Path) -> None:
    got = invoke("generate", "urls only", "--no-save", "-o", str(tmp_path / "x"))
    assert got.code == 0
    assert "saved:" not in got.stdout
    assert "image 1: http://" in got.stdout
    assert not (tmp_path / "x").exists()
    assert json.loads(invoke("generate", "urls", "--no-save", "--json").stdout)["saved_paths"] == []


def test_quiet_prints_nothing_on_stderr(emu: RunningEmulator) -> None:
    got = invoke("generate", "quietly", "-q", "--no-save")
    assert got.code == 0
    assert got.stderr == ""


def test_options_override_the_environment(emu: RunningEmulator) -> None:
    env = {"PIXAZO_API_KEY": WRONG_KEY, "PIXAZO_BASE_URL": "http://127.0.0.1:9"}
    got = invoke(
        "generate", "from options", "--no-save", "--api-key", KEY, "--base-url", emu.base_url,
        env=env,
    )  # fmt: skip
    assert got.code == 0, got.stderr
    assert emu.control.stats().jobs_created == 1


def test_emulator_flag_needs_no_key_and_no_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("PIXAZO_API_KEY", raising=False)
    monkeypatch.setenv("PIXAZO_BASE_URL", "http://127.0.0.1:9")  # ignored with --emulator
    got = invoke("generate", "offline demo", "--emulator", "-o", str(tmp_path))
    assert got.code == 0, got.stderr
    (saved,) = tmp_path.iterdir()
    with Image.open(saved) as image:
        assert image.size == (1024, 1024)
    assert "offline emulator" in got.stderr
    assert "COMPLETED" in got.stderr


def test_emulator_flag_refuses_a_gateway_override() -> None:
    got = invoke("generate", "a cat", "--emulator", "--base-url", "http://x.example")
    assert got.code == 2
    assert "--emulator cannot be combined" in got.stderr


def test_a_new_request_field_becomes_an_option_by_itself(monkeypatch: pytest.MonkeyPatch) -> None:
    """A gateway field added to the request models needs no CLI edit: its option is derived
    (type, range, default and help from the field), named as the field, and passed on."""
    import click
    from click.testing import CliRunner
    from pydantic import Field, create_model

    from mai_tools import GenerateRequest
    from mai_tools.cli import _app

    new_field: dict[str, Any] = {
        "a_new_seed": (int | None, Field(None, ge=0, description="A seed. Same seed, same image."))
    }
    extended = create_model("ExtendedGenerateRequest", __base__=GenerateRequest, **new_field)
    monkeypatch.setattr(_app, "OPERATIONS", {"generate": extended})
    seen: dict[str, Any] = {}

    @click.command()
    @_app._image_options("generate")
    def command(**fields: Any) -> None:
        seen.update(fields)

    option = next(p for p in command.params if p.name == "a_new_seed")
    assert option.opts == ["--a-new-seed"]
    assert isinstance(option.type, click.IntRange)
    assert option.type.min == 0
    assert isinstance(option, click.Option)
    assert option.help == "A seed."
    result = CliRunner().invoke(command, ["--a-new-seed", "7", "-n", "2"])
    assert result.exit_code == 0, result.output
    assert seen == {
        "num_images": 2,
        "aspect_ratio": "auto",
        "output_format": "png",
        "sync_mode": False,
        "a_new_seed": 7,
    }
    assert CliRunner().invoke(command, ["--a-new-seed", "-1"]).exit_code == 2
