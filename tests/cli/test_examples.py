"""Examples run as tests, offline."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[2]


def test_quickstart_runs_offline(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIXAZO_")}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "quickstart.py"), "a test", "prompt"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "COMPLETED" in proc.stderr
    (saved,) = (tmp_path / "mai-images").iterdir()
    assert str(Path("mai-images") / saved.name) in proc.stdout
    with Image.open(saved) as image:
        assert image.size == (1024, 576)


def test_langgraph_durable_pays_once_after_a_crash(tmp_path: Path) -> None:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("PIXAZO_") and k not in ("MAI_EXAMPLE_CHAT_MODEL", "MAI_JOB_BOOK")
    }
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "langgraph_durable.py")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"died (exit status -{signal.SIGKILL})" in proc.stdout
    assert "[generate_image] http://127.0.0.1:" in proc.stdout
    assert "the gateway made 1 job: exactly one" in proc.stdout
    (saved,) = (tmp_path / "mai-images").iterdir()
    assert saved.suffix == ".png"
