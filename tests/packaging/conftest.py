"""The project built as users get it: one sdist and one wheel per test session.

hatchling builds both from this checkout in well under a second, with no network and no build
isolation (it is a test dependency), so these tests check the real artifacts.
"""

from __future__ import annotations

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


@pytest.fixture
def installed(built: Built, tmp_path: Path) -> Path:
    """The wheel installed by pip into a fresh folder (``--target``): site-packages and bin/."""
    target = tmp_path / "site"
    pip = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index"]
    subprocess.run(
        [*pip, "--target", str(target), str(built.wheel)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return target
