"""Build mai-tools' desktop bundle (``.mcpb``, the MCP Bundle format) from this checkout.

    python mcpb/build.py                       # -> dist/mai-tools-<version>-<platform>.mcpb
    python mcpb/build.py --wheel dist/mai_tools-0.1.0-py3-none-any.whl --out dist

The bundle is of ``server.type`` ``"python"``: mai-tools and every dependency are inside it, in
``server/lib``, and the host runs ``python server/main.py`` with no network and no installer.
(The ``"uv"`` type would have the host install the dependencies from PyPI with uv at first
start; the MCPB spec calls it experimental, and nothing here could start such a bundle offline
to test it.) The price: compiled dependencies (pydantic-core, Pillow, httptools, cryptography)
are this machine's, so a bundle runs on the platform and Python minor version that built it, and
its manifest says so (``compatibility``). Build one per platform you ship.

The dependencies are copied from the environment running this script (the versions it has
installed, checked against the wheel's requirements), so the build needs no network either:
run it with the project's virtualenv (``.venv/bin/python mcpb/build.py``). Packing uses the
official CLI, ``mcpb pack`` (npm ``@anthropic-ai/mcpb``): found in ``.ci/node`` (the README's
test command installs it there), on ``PATH``, or run through ``npx``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import zipfile
from email.parser import Parser
from importlib import metadata
from pathlib import Path
from typing import Any

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
MCPB_CLI = "@anthropic-ai/mcpb@2.1.2"  # the version the README's test command installs
PLATFORMS = ("darwin", "linux", "win32")  # the MCPB spec's names (sys.platform's)


class BuildError(Exception):
    """The bundle cannot be built as asked; the message says what to do."""


def build_wheel(out: Path) -> Path:
    """Build mai-tools' wheel from this checkout into ``out`` (hatchling, no network)."""
    subprocess.run(
        [sys.executable, "-m", "hatchling", "build", "-t", "wheel", "-d", str(out)],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    (wheel,) = out.glob("mai_tools-*.whl")
    return wheel


def _wheel_metadata(wheel: Path) -> tuple[str, str, list[str]]:
    """(name, version, requirements) of a wheel, from its METADATA."""
    with zipfile.ZipFile(wheel) as archive:
        (name,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        meta = Parser().parsestr(archive.read(name).decode("utf-8"))
    return meta["Name"], meta["Version"], meta.get_all("Requires-Dist") or []


def _needed(requirements: list[str]) -> list[Requirement]:
    """The requirements that apply to this interpreter without extras."""
    found = []
    for text in requirements:
        req = Requirement(text)
        if req.marker is None or req.marker.evaluate({"extra": ""}):
            found.append(req)
    return found


def dependencies(requirements: list[str]) -> list[metadata.Distribution]:
    """Every installed distribution ``requirements`` need, transitively (no extras).

    Raises:
        BuildError: one is missing, or installed in a version the requirement excludes.
    """
    seen: dict[str, metadata.Distribution] = {}
    todo = _needed(requirements)
    while todo:
        req = todo.pop()
        key = canonicalize_name(req.name)
        if key in seen:
            continue
        try:
            dist = metadata.distribution(req.name)
        except metadata.PackageNotFoundError:
            raise BuildError(
                f"{req.name} is not installed in {sys.prefix}: run this script with an "
                "environment that has mai-tools' dependencies (pip install -e .)"
            ) from None
        if not req.specifier.contains(dist.version, prereleases=True):
            raise BuildError(f"{req.name} {dist.version} is installed; mai-tools needs {req}")
        seen[key] = dist
        todo.extend(_needed(dist.requires or []))
    return sorted(seen.values(), key=lambda d: canonicalize_name(d.metadata["Name"]))


def _copy_distribution(dist: metadata.Distribution, lib: Path) -> None:
    files = dist.files
    if files is None:
        raise BuildError(f"{dist.metadata['Name']} has no RECORD: reinstall it with pip")
    for file in files:
        # Scripts (../../bin) and bytecode are not part of an importable copy.
        if file.parts[0] == ".." or "__pycache__" in file.parts:
            continue
        target = lib / file
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(Path(str(dist.locate_file(file))), target)


def manifest_for_this_platform(version: str) -> dict[str, Any]:
    """``mcpb/manifest.json`` as the bundle built here carries it.

    Raises:
        BuildError: the manifest's version is not the wheel's.
    """
    manifest: dict[str, Any] = json.loads((HERE / "manifest.json").read_text(encoding="utf-8"))
    if manifest["version"] != version:
        raise BuildError(f"mcpb/manifest.json says {manifest['version']}; the wheel is {version}")
    if sys.platform not in PLATFORMS:
        raise BuildError(f"MCP bundles run on {', '.join(PLATFORMS)}, not {sys.platform}")
    major, minor = sys.version_info[:2]
    manifest["compatibility"]["platforms"] = [sys.platform]
    manifest["compatibility"]["runtimes"]["python"] = f">={major}.{minor},<{major}.{minor + 1}"
    return manifest


def stage(wheel: Path, dest: Path) -> Path:
    """Lay the bundle's files out in ``dest`` (which must not exist): what ``mcpb pack`` zips."""
    name, version, requirements = _wheel_metadata(wheel)
    if canonicalize_name(name) != "mai-tools":
        raise BuildError(f"{wheel} is {name}'s wheel, not mai-tools'")
    manifest = manifest_for_this_platform(version)
    lib = dest / "server" / "lib"
    lib.mkdir(parents=True)
    (dest / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    shutil.copy2(HERE / "icon.png", dest / "icon.png")
    shutil.copy2(HERE / "server" / "main.py", dest / "server" / "main.py")
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(lib)
    for dist in dependencies(requirements):
        _copy_distribution(dist, lib)
    return dest


def mcpb_command() -> list[str]:
    """How to run the official ``mcpb`` CLI here."""
    local = ROOT / ".ci" / "node" / "node_modules" / ".bin" / "mcpb"
    if local.exists():
        return [str(local)]
    found = shutil.which("mcpb")
    if found is not None:
        return [found]
    return ["npx", "--yes", MCPB_CLI]


def pack(staged: Path, out: Path, cli: list[str] | None = None) -> Path:
    """``mcpb pack`` the staged folder (it validates the manifest first) into ``out``."""
    proc = subprocess.run(
        [*(cli or mcpb_command()), "pack", str(staged), str(out)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0 or not out.exists():
        raise BuildError(f"mcpb pack failed:\n{proc.stdout}{proc.stderr}")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--wheel", type=Path, help="mai-tools' wheel (default: build one)")
    parser.add_argument("--out", type=Path, default=ROOT / "dist", help="folder for the .mcpb")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        wheel = args.wheel or build_wheel(Path(scratch) / "wheel")
        version = _wheel_metadata(wheel)[1]
        try:
            staged = stage(wheel, Path(scratch) / "bundle")
            major, minor = sys.version_info[:2]
            out = args.out / f"mai-tools-{version}-{sys.platform}-py{major}{minor}.mcpb"
            pack(staged, out)
        except BuildError as exc:
            print(f"mcpb/build.py: {exc}", file=sys.stderr)
            return 2
    print(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
