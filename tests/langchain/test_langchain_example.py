"""examples/langgraph_agent.py runs offline: generate, then edit the URL it got back."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_langgraph_agent_example(tmp_path: Path) -> None:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("PIXAZO_") and k != "MAI_EXAMPLE_CHAT_MODEL"
    }
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "langgraph_agent.py")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "[generate_image] http://127.0.0.1:" in proc.stderr
    assert "[edit_image] http://127.0.0.1:" in proc.stderr
    assert "stormy night" in proc.stdout
    saved = sorted(p.name for p in (tmp_path / "mai-images").iterdir())
    assert len(saved) == 2
    assert any(name.startswith("microsoft-mai-image-2-5-edit_") for name in saved)
