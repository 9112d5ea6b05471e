"""Examples run as tests, offline."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[2]


def _run_example(
    name: str, cwd: Path, *args: str, drop: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    """Run examples/<name> offline: no PIXAZO_* variables (nor those in ``drop``)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIXAZO_") and k not in drop}
    return subprocess.run(
        [sys.executable, str(ROOT / "examples" / name), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_quickstart_runs_offline(tmp_path: Path) -> None:
    proc = _run_example("quickstart.py", tmp_path, "a test", "prompt")
    assert proc.returncode == 0, proc.stderr
    assert "COMPLETED" in proc.stderr
    (saved,) = (tmp_path / "mai-images").iterdir()
    assert str(Path("mai-images") / saved.name) in proc.stdout
    with Image.open(saved) as image:
        assert image.size == (1024, 576)


def test_langgraph_durable_pays_once_after_a_crash(tmp_path: Path) -> None:
    # Its own job book (MAI_JOB_BOOK unset) in a temporary directory; no chat model key.
    proc = _run_example(
        "langgraph_durable.py", tmp_path, drop=("MAI_EXAMPLE_CHAT_MODEL", "MAI_JOB_BOOK")
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"died (exit status -{signal.SIGKILL})" in proc.stdout
    assert "[generate_image] http://127.0.0.1:" in proc.stdout
    assert "the gateway made 1 job: exactly one" in proc.stdout
    (saved,) = (tmp_path / "mai-images").iterdir()
    assert saved.suffix == ".png"
