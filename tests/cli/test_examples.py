"""Examples run as tests, offline."""

from __future__ import annotations

import os
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
