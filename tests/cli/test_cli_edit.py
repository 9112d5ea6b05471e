"""mai-image edit: the source image as a path, a data: URI or stdin."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import pytest
from PIL import Image

from mai_tools.cli import ExitCode
from mai_tools.emulator import RunningEmulator
from tests.cli.cli_support import invoke

EDIT_PREFIX = "microsoft-mai-image-2-5-edit_"


def _png(size: tuple[int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (200, 40, 40)).save(buffer, format="PNG")
    return buffer.getvalue()


def _saved_size(out: Path) -> tuple[int, int]:
    (saved,) = out.iterdir()
    with Image.open(saved) as image:
        return image.size


def test_edit_from_a_path_keeps_its_proportions(emu: RunningEmulator, tmp_path: Path) -> None:
    src = tmp_path / "in.png"
    src.write_bytes(_png((200, 100)))
    got = invoke("edit", str(src), "make it bright", "-o", str(tmp_path / "out"))
    assert got.code == 0, got.stderr
    assert got.stdout.startswith(f"request_id: {EDIT_PREFIX}")
    assert _saved_size(tmp_path / "out") == (1024, 512)
    (record,) = [r for r in emu.control.stats().requests if r.method == "POST"]
    assert "edit" in record.path


def test_edit_from_a_data_uri_with_an_aspect_ratio(emu: RunningEmulator, tmp_path: Path) -> None:
    uri = "data:image/png;base64," + base64.b64encode(_png((64, 64))).decode()
    got = invoke("edit", uri, "make it blue", "-a", "16:9", "--json", "-o", str(tmp_path))
    assert got.code == 0, got.stderr
    data = json.loads(got.stdout)
    assert data["request_id"].startswith(EDIT_PREFIX)
    assert _saved_size(tmp_path) == (1024, 576)


def test_edit_from_stdin(emu: RunningEmulator, tmp_path: Path) -> None:
    got = invoke("edit", "-", "add a moon", "-o", str(tmp_path), input=_png((100, 200)))
    assert got.code == 0, got.stderr
    assert _saved_size(tmp_path) == (512, 1024)


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        ("notimage", "not"),
        ("empty-stdin", "standard input is empty"),
        ("huge-stdin", "more than 20 MiB"),
        ("ftp", "Unsupported image URL scheme"),
    ],
)
def test_bad_images_are_exit_2_before_anything_is_sent(
    emu: RunningEmulator, tmp_path: Path, setup: str, message: str
) -> None:
    if setup == "notimage":
        path = tmp_path / "notes.png"
        path.write_text("these are not pixels")
        args = ["edit", str(path), "a cat"]
    elif setup in ("empty-stdin", "huge-stdin"):
        args = ["edit", "-", "a cat"]
    else:
        args = ["edit", "ftp://example.com/a.png", "a cat"]
    # A stream larger than any image is read only up to the limit, never whole.
    stream = b"\x89PNG\r\n\x1a\n" + b"\0" * (21 * 1024 * 1024) if setup == "huge-stdin" else b""
    got = invoke(*args, input=stream)
    assert got.code == ExitCode.USAGE
    (line,) = got.error_lines
    assert message in line
    assert emu.control.stats().submissions == 0
