"""A real browser for the tests that need one: Debian's Chromium, driven by Playwright.

Playwright's own browser downloads are not used (its CDN is out of reach here and in CI): the
tests launch the system's Chromium (``apt-get install chromium``; the README's test command
installs it). Without one the test skips locally, and fails under CI (``CI=true``), where the
browser test is the only proof that the gallery renders.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

CHROMIUM_ENV = "MAI_CHROMIUM"
"""Names the Chromium executable to use (default: ``chromium`` on PATH, or /usr/bin/chromium)."""


def chromium() -> str:
    """The Chromium executable to launch; skips (locally) or fails (``CI=true``) without one."""
    for candidate in (
        os.environ.get(CHROMIUM_ENV),
        shutil.which("chromium"),
        shutil.which("chromium-browser"),
        "/usr/bin/chromium",
    ):
        if candidate and Path(candidate).is_file():
            return candidate
    reason = (
        f"no Chromium found: install Debian's (apt-get install chromium) or set {CHROMIUM_ENV} "
        "to a Chromium executable"
    )
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{reason} (CI is set: the browser test must run there)")
    pytest.skip(reason)
