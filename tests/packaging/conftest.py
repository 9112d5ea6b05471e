"""The project built as users get it: one sdist and one wheel per test session.

hatchling builds both from this checkout in well under a second, with no network and no build
isolation (it is a test dependency), so these tests check the real artifacts.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Built:
    wheel: Path
    sdist: Path


@pytest.fixture(scope="session")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "hatchling", "build", "-d", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    (wheel,) = out.glob("*.whl")
    (sdist,) = out.glob("*.tar.gz")
    return Built(wheel=wheel, sdist=sdist)


@pytest.fixture(scope="session")
def _pip_installed(built: Built, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel installed by pip (``--target``), once per session: tests get copies."""
    target = tmp_path_factory.mktemp("pip-target") / "site"
    pip = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index"]
    subprocess.run(
        [*pip, "--target", str(target), str(built.wheel)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return target


@pytest.fixture
def installed(_pip_installed: Path, tmp_path: Path) -> Path:
    """The wheel installed by pip into a fresh folder (``--target``): site-packages and bin/.

    A copy of the session's one pip install (a pip run costs seconds; a copy of the small
    tree, milliseconds), so a test may change its files (the ``mcp_server`` package written
    over or deleted) without touching another test's."""
    return Path(shutil.copytree(_pip_installed, tmp_path / "site", symlinks=True))
