"""The README's OpenTelemetry snippet works as written: a job after it prints its spans."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from tests.telemetry.test_no_import import JOB

ROOT = Path(__file__).resolve().parents[2]


def test_the_readme_snippet_traces_a_job() -> None:
    readme = (ROOT / "docs" / "operations.md").read_text(encoding="utf-8")
    section = readme.split("## OpenTelemetry\n", 1)[1]
    snippet = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert snippet is not None
    done = subprocess.run(
        [sys.executable, "-c", snippet.group(1) + JOB],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert '"name": "generate_image microsoft-mai-image-2-5"' in done.stdout
    assert '"name": "GET download"' in done.stdout
