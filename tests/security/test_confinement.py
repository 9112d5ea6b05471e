"""Local files an agent names are read only from inside the allowed directories, airtight:
no race between check and read, no symlink or hard-link escape, no hang on a FIFO, no device,
no empty allow-list entry meaning the working directory, no file bytes quoted in errors."""

from __future__ import annotations

import base64
import os
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner
from pydantic import ValidationError

from mai_tools import InvalidImageError, image_to_url
from mai_tools._images import agent_image_argument, confined_path, read_confined_image
from mai_tools.langchain import MAIImageEditTool, MAIImageToolkit
from mcp_server import Settings, SettingsError
from mcp_server.__main__ import cli
from tests.support.fakes import PNG_1PX

posix_only = pytest.mark.skipif(sys.platform == "win32", reason="POSIX links and FIFOs")

INSIDE = PNG_1PX + b"inside-the-allowed-directory"
SECRET = PNG_1PX + b"secret-from-outside"
TRIES = 1000


def _as_bytes(value: str | bytes | Path) -> bytes:
    """What would be sent for an agent's image argument, whatever form it was handed on in."""
    uri = image_to_url(value)
    return base64.b64decode(uri.split(",", 1)[1])


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[Path, Path]:
    allowed = tmp_path / "allowed"
    outside = tmp_path / "outside"
    allowed.mkdir()
    outside.mkdir()
    (outside / "secret.png").write_bytes(SECRET)
    return allowed, outside


MORE_TRIES = 50
"""How many times TRIES a race may go on while one of its two sides has not shown yet."""


def _race(swap: Callable[[], None], call: Callable[[], bytes | None]) -> tuple[int, int]:
    """Run ``swap`` in a loop in a thread while calling ``call`` TRIES times (or more).

    Returns (reads that got the inside file, refusals). Fails at once if the secret came back.
    """
    stop = threading.Event()
    swaps: list[int] = []
    errors: list[BaseException] = []

    def swapper() -> None:
        try:
            while not stop.is_set():
                swap()
                swaps.append(1)
        except BaseException as exc:  # reported below: a dead swapper means no race was run
            errors.append(exc)

    thread = threading.Thread(target=swapper, daemon=True)
    thread.start()
    good = refused = tries = 0
    try:
        # At least TRIES calls; on a busy machine more, until the race has shown both sides
        # (a count, never a time: the swapper may get few turns while the machine is loaded).
        while tries < TRIES or ((good == 0 or len(swaps) <= 10) and tries < TRIES * MORE_TRIES):
            tries += 1
            try:
                data = call()
            except InvalidImageError as exc:
                message = str(exc)
                refused += 1
            else:
                assert data != SECRET, "a file from outside the allowed directory was read"
                assert data == INSIDE
                good += 1
                continue
            assert "secret-from-outside" not in message
    finally:
        stop.set()
        thread.join(timeout=10)
    assert not errors, errors
    assert len(swaps) > 10, "the files were hardly swapped: the race did not run"
    assert good > 0, "no read succeeded while racing"
    return good, refused


@posix_only
def test_symlink_swapped_in_for_the_file_never_leaks(dirs: tuple[Path, Path]) -> None:
    allowed, outside = dirs
    name = allowed / "image.png"
    name.write_bytes(INSIDE)

    def swap() -> None:
        (allowed / ".link").symlink_to(outside / "secret.png")
        os.replace(allowed / ".link", name)
        (allowed / ".real").write_bytes(INSIDE)
        os.replace(allowed / ".real", name)

    def call() -> bytes:
        return _as_bytes(agent_image_argument(str(name), [allowed]))

    good, refused = _race(swap, call)
    assert good + refused == TRIES


@posix_only
@pytest.mark.skipif(
    os.open not in os.supports_dir_fd, reason="the confined open walks with openat() here"
)
def test_a_link_swapped_in_after_the_check_is_not_followed_at_the_last_component(
    dirs: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The final component is opened with O_NOFOLLOW: a symlink that replaced the file right
    after it was checked is refused, even one pointing at a file inside (it could as well
    point at a FIFO or a device, which must never be opened)."""
    allowed, _ = dirs
    name = allowed / "image.png"
    name.write_bytes(INSIDE)
    (allowed / "other.png").write_bytes(PNG_1PX + b"another file, reached through a link")
    real_stat = os.stat
    swapped: list[bool] = []

    def stat_then_swap(path: object, *args: object, **kwargs: object) -> os.stat_result:
        result = real_stat(path, *args, **kwargs)  # type: ignore[arg-type]
        if path == name.name and kwargs.get("dir_fd") is not None and not swapped:
            # The race, made certain: the file checked, then a link put in its place.
            (allowed / ".link").symlink_to(allowed / "other.png")
            os.replace(allowed / ".link", name)
            swapped.append(True)
        return result

    monkeypatch.setattr(os, "stat", stat_then_swap)
    monkeypatch.setattr(os, "supports_dir_fd", os.supports_dir_fd | {stat_then_swap})
    with pytest.raises(InvalidImageError, match="symbolic link"):
        read_confined_image(str(name), [allowed])
    assert swapped, "the check before the open did not run: the race was not made"


@posix_only
def test_symlink_swapped_in_for_a_directory_never_leaks(dirs: tuple[Path, Path]) -> None:
    allowed, outside = dirs
    sub = allowed / "sub"
    sub.mkdir()
    (sub / "secret.png").write_bytes(INSIDE)  # same name as the outside file
    parked = allowed / ".parked"

    def swap() -> None:
        os.rename(sub, parked)
        sub.symlink_to(outside)
        os.unlink(sub)
        os.rename(parked, sub)

    def call() -> bytes:
        return _as_bytes(agent_image_argument(str(sub / "secret.png"), [allowed]))

    good, refused = _race(swap, call)
    assert good + refused == TRIES


@posix_only
def test_fifo_swapped_in_never_hangs(dirs: tuple[Path, Path]) -> None:
    allowed, _ = dirs
    name = allowed / "image.png"
    name.write_bytes(INSIDE)

    def swap() -> None:
        os.mkfifo(allowed / ".fifo")
        os.replace(allowed / ".fifo", name)
        (allowed / ".real").write_bytes(INSIDE)
        os.replace(allowed / ".real", name)

    outcome: list[tuple[int, int]] = []
    worker = threading.Thread(
        target=lambda: outcome.append(
            _race(swap, lambda: _as_bytes(agent_image_argument(str(name), [allowed])))
        ),
        daemon=True,
    )
    worker.start()
    worker.join(timeout=60)
    hung = worker.is_alive()
    if hung:  # release the reader blocked in open() so the thread can end
        fd = os.open(name, os.O_WRONLY | os.O_NONBLOCK)
        os.close(fd)
    assert not hung, "opening a FIFO swapped in after the check blocked"
    assert sum(outcome[0]) == TRIES


@posix_only
def test_fifo_refused_without_hanging(dirs: tuple[Path, Path]) -> None:
    allowed, _ = dirs
    os.mkfifo(allowed / "pipe.png")
    with pytest.raises(InvalidImageError, match="FIFO"):
        read_confined_image(str(allowed / "pipe.png"), [allowed])
    with pytest.raises(InvalidImageError, match="FIFO"):
        image_to_url(allowed / "pipe.png")  # the trusted client refuses it too


@posix_only
def test_hard_link_inside_an_allowed_dir_is_refused(dirs: tuple[Path, Path]) -> None:
    allowed, outside = dirs
    os.link(outside / "secret.png", allowed / "linked.png")
    with pytest.raises(InvalidImageError, match="2 hard links") as caught:
        agent_image_argument(str(allowed / "linked.png"), [allowed])
    assert "Copy the image" in str(caught.value)
    # A person naming the file to the Python client may use a hard link.
    assert _as_bytes(allowed / "linked.png") == SECRET


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="no /dev/zero")
def test_devices_are_refused() -> None:
    with pytest.raises(InvalidImageError, match="is a device"):
        agent_image_argument("/dev/zero", ["/dev"])
    with pytest.raises(InvalidImageError, match="is a device"):
        image_to_url("/dev/zero")


def test_directories_are_refused(dirs: tuple[Path, Path]) -> None:
    allowed, _ = dirs
    (allowed / "d.png").mkdir()
    for path in (allowed, allowed / "d.png"):
        with pytest.raises(InvalidImageError, match="is a directory"):
            agent_image_argument(str(path), [allowed])


@posix_only
def test_dotdot_and_symlink_escapes_are_refused(dirs: tuple[Path, Path]) -> None:
    allowed, outside = dirs
    (allowed / "escape.png").symlink_to(outside / "secret.png")
    (allowed / "out").symlink_to(outside)
    for bad in (
        allowed / ".." / "outside" / "secret.png",
        allowed / "escape.png",
        allowed / "out" / "secret.png",
        outside / "secret.png",
    ):
        with pytest.raises(InvalidImageError, match="outside the allowed"):
            agent_image_argument(str(bad), [allowed])
    # A link that stays inside is fine: it is resolved and the real file read.
    (allowed / "real.png").write_bytes(INSIDE)
    (allowed / "alias.png").symlink_to(allowed / "real.png")
    assert agent_image_argument(str(allowed / "alias.png"), [allowed]) == INSIDE


def test_an_empty_allow_entry_never_means_the_working_directory(
    dirs: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    allowed, _ = dirs
    (allowed / "here.png").write_bytes(INSIDE)
    monkeypatch.chdir(allowed)
    for entries in ([""], [" "], ["", str(allowed)]):
        with pytest.raises(InvalidImageError, match="empty entry"):
            agent_image_argument("here.png", entries)
        with pytest.raises(InvalidImageError, match="empty entry"):
            confined_path("here.png", entries)


def test_empty_allow_entries_are_configuration_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key in [k for k in os.environ if k.startswith(("MAI_MCP_", "PIXAZO_"))]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("MAI_MCP_ALLOWED_DIRS", os.pathsep.join([str(tmp_path), "", "/data"]))
    with pytest.raises(SettingsError, match="empty entry"):
        Settings.from_env()
    monkeypatch.setenv("MAI_MCP_ALLOWED_DIRS", str(tmp_path) + os.pathsep)
    with pytest.raises(SettingsError, match="empty entry"):
        Settings.from_env()
    monkeypatch.setenv("MAI_MCP_ALLOWED_DIRS", "  ")  # set but blank: no directory
    assert Settings.from_env().allowed_dirs == ()
    monkeypatch.delenv("MAI_MCP_ALLOWED_DIRS")
    result = CliRunner().invoke(cli, ["--allow-dir", ""])
    assert result.exit_code == 2
    assert "--allow-dir" in result.output
    assert "empty" in result.output
    for make in (MAIImageEditTool, MAIImageToolkit):
        with pytest.raises(ValidationError, match="empty"):
            make.model_validate({"allowed_dirs": [""]})  # as read from a config file
        with pytest.raises(ValidationError, match="not a single path"):
            make.model_validate({"allowed_dirs": "/srv/uploads"})  # one path, not a list
    with pytest.raises(SettingsError, match="no such user"):
        Settings(allowed_dirs=(Path("~no-such-user-here/x"),))


def test_allowed_dirs_are_fixed_when_configured(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Relative entries are made absolute once: a later chdir does not move what is allowed."""
    monkeypatch.chdir(tmp_path)
    assert Settings(allowed_dirs=(Path("uploads"),)).allowed_dirs == (tmp_path / "uploads",)
    tool = MAIImageEditTool.model_validate({"allowed_dirs": ["uploads"]})
    assert tool.allowed_dirs == (tmp_path / "uploads",)


def test_errors_never_quote_the_file(dirs: tuple[Path, Path]) -> None:
    allowed, _ = dirs
    (allowed / "notes.png").write_bytes(b"hunter2-password")
    with pytest.raises(InvalidImageError, match="not a PNG, JPEG") as caught:
        agent_image_argument(str(allowed / "notes.png"), [allowed])
    assert "hunter2" not in str(caught.value)
    (allowed / "empty.png").write_bytes(b"")
    with pytest.raises(InvalidImageError, match="empty"):
        agent_image_argument(str(allowed / "empty.png"), [allowed])


def test_confined_read_has_a_size_cap(dirs: tuple[Path, Path]) -> None:
    allowed, _ = dirs
    (allowed / "big.png").write_bytes(PNG_1PX + b"\0" * 5000)
    with pytest.raises(InvalidImageError, match="over the 1000 bytes limit"):
        read_confined_image(str(allowed / "big.png"), [allowed], max_bytes=1000)
    assert read_confined_image(str(allowed / "big.png"), [allowed]).startswith(PNG_1PX)


def test_missing_file_and_nothing_allowed(dirs: tuple[Path, Path]) -> None:
    allowed, _ = dirs
    with pytest.raises(InvalidImageError, match="No such image file"):
        agent_image_argument(str(allowed / "nope.png"), [allowed])
    with pytest.raises(InvalidImageError, match="not allowed"):
        agent_image_argument(str(allowed / "nope.png"), [])
