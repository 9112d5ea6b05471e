"""The sdist and wheel users download: license, metadata, and a long description (README.pypi.md)
whose links work on PyPI.

Built once per session by hatchling from this checkout (see conftest.py), so these tests judge
the real files, not pyproject.toml's intent.
"""

from __future__ import annotations

import email.parser
import re
import tarfile
import zipfile
from email.message import Message

import pytest

import mai_tools
from tests.packaging.conftest import ROOT, Built

REPO = "https://github.com/mai-tools/mai-tools"
BLOB = f"{REPO}/blob/main/"
SITE = "https://mai-tools.github.io/mai-tools/"


def _wheel_metadata(built: Built) -> Message:
    with zipfile.ZipFile(built.wheel) as wheel:
        (name,) = [n for n in wheel.namelist() if n.endswith(".dist-info/METADATA")]
        return email.parser.Parser().parsestr(wheel.read(name).decode())


def _fenced_block_after(text: str, marker: str) -> str:
    """The first ```-fenced block after ``marker`` (as .ci/run reads the README's)."""
    after = text[text.index(marker) :]
    match = re.search(r"^```[a-z]*\n(.*?)^```$", after, re.MULTILINE | re.DOTALL)
    assert match is not None, f"no fenced block after {marker!r}"
    return match.group(1)


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading (enough for the headings these files use)."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


# --------------------------------------------------------------------------- license


def test_the_wheel_and_the_sdist_ship_the_license(built: Built) -> None:
    license_text = (ROOT / "LICENSE").read_bytes()
    assert b"MIT License" in license_text
    assert b"Copyright (c) 2026 mai-tools contributors" in license_text
    with zipfile.ZipFile(built.wheel) as wheel:
        (name,) = [n for n in wheel.namelist() if n.endswith(".dist-info/licenses/LICENSE")]
        assert wheel.read(name) == license_text
    with tarfile.open(built.sdist) as sdist:
        member = sdist.extractfile(f"{built.sdist.name.removesuffix('.tar.gz')}/LICENSE")
        assert member is not None
        assert member.read() == license_text
    metadata = _wheel_metadata(built)
    assert metadata["License-Expression"] == "MIT"
    assert metadata.get_all("License-File") == ["LICENSE"]


def test_the_sdist_ships_the_project_documents(built: Built) -> None:
    top = built.sdist.name.removesuffix(".tar.gz")
    with tarfile.open(built.sdist) as sdist:
        names = set(sdist.getnames())
    documents = ("README.md", "README.pypi.md", "CHANGELOG.md", "CONTRIBUTING.md", "LICENSE")
    for document in (*documents, "pyproject.toml"):
        assert f"{top}/{document}" in names


def test_the_wheel_holds_only_the_two_packages(built: Built) -> None:
    with zipfile.ZipFile(built.wheel) as wheel:
        tops = {name.split("/", 1)[0] for name in wheel.namelist()}
    dist_info = f"mai_tools-{mai_tools.__version__}.dist-info"
    assert tops == {"mai_tools", "mcp_server", dist_info}


def test_the_wheel_ships_the_gallery_app(built: Built) -> None:
    # The MCP Apps gallery is a data file beside the code (read with importlib.resources).
    with zipfile.ZipFile(built.wheel) as wheel:
        html = wheel.read("mcp_server/gallery/app.html").decode()
    assert html == (ROOT / "mcp_server" / "gallery" / "app.html").read_text()


# --------------------------------------------------------------------------- metadata


def test_project_urls_point_at_the_repository(built: Built) -> None:
    urls = dict(
        entry.split(", ", 1) for entry in _wheel_metadata(built).get_all("Project-URL") or []
    )
    assert urls == {
        "Homepage": REPO,
        "Repository": REPO,
        "Issues": f"{REPO}/issues",
        "Changelog": f"{BLOB}CHANGELOG.md",
    }


def test_the_user_agent_names_the_homepage(built: Built) -> None:
    # The gateway operator sees this URL in every request: it must be the project's home.
    with zipfile.ZipFile(built.wheel) as wheel:
        sources = [wheel.read(n).decode() for n in wheel.namelist() if n.endswith(".py")]
    found = {url for text in sources for url in re.findall(r"\(\+(https://[^)\s]+)\)", text)}
    assert found == {REPO}


def test_classifiers_name_the_pytest_plugin_and_tested_pythons(built: Built) -> None:
    classifiers = set(_wheel_metadata(built).get_all("Classifier") or [])
    assert "Framework :: Pytest" in classifiers
    versions = {c.rsplit(" :: ", 1)[1] for c in classifiers if re.search(r":: 3\.\d+$", c)}
    assert versions == {"3.11", "3.12", "3.13"}  # only the ones the suite has run on


def test_entry_points_are_the_checked_launcher_and_the_plugin(built: Built) -> None:
    with zipfile.ZipFile(built.wheel) as wheel:
        (name,) = [n for n in wheel.namelist() if n.endswith(".dist-info/entry_points.txt")]
        text = wheel.read(name).decode()
    assert "mai-image-mcp = mai_tools._mcp_entry:main" in text
    # The package's own name is the MCP server too: `uvx mai-tools` (test_mcp_entry runs it).
    assert "mai-tools = mai_tools._mcp_entry:main" in text
    assert "mai-image = mai_tools.cli:main" in text
    assert "mai_tools_emulator = mai_tools.emulator.pytest_plugin" in text


# --------------------------------------------------------------------------- README on PyPI


def test_readme_links_work_on_pypi(built: Built) -> None:
    # PyPI renders the long description with no repository around it: a relative link breaks.
    readme = _wheel_metadata(built).get_payload()
    assert isinstance(readme, str)
    assert readme == (ROOT / "README.pypi.md").read_text()
    assert readme.startswith("# mai-tools")
    targets = re.findall(r"\]\(([^)\s]+)\)", readme)
    assert targets, "no links found: the pattern is wrong"
    relative = [t for t in targets if not t.startswith(("https://", "http://", "#"))]
    assert relative == []
    for target in targets:
        if not target.startswith(BLOB):
            continue
        path, _, fragment = target.removeprefix(BLOB).partition("#")
        assert (ROOT / path).is_file(), f"{target}: no {path} in the repository"
        if fragment:
            headings = re.findall(r"^#+ (.+)$", (ROOT / path).read_text(), re.MULTILINE)
            assert fragment in {_slug(h) for h in headings}, f"{target}: no such heading"


def test_the_pypi_page_is_for_users_only(built: Built) -> None:
    # The repository's README starts with the contributor test command; PyPI shows a user page.
    metadata = _wheel_metadata(built)
    assert metadata["Description-Content-Type"] == "text/markdown"
    readme = metadata.get_payload()
    assert isinstance(readme, str)
    assert "test-command" not in readme
    assert ".[test]" not in readme
    assert "npm install" not in readme


@pytest.mark.parametrize("document", ["README.md", "README.pypi.md"])
def test_links_into_the_docs_site_name_existing_pages(document: str) -> None:
    # https://mai-tools.github.io/mai-tools/<page>/ is docs/<page>.md or docs/<page>/index.md
    # (MkDocs' directory URLs); an anchor must be a heading of that page.
    text = (ROOT / document).read_text()
    targets = re.findall(rf"\]\(({re.escape(SITE)}[^)\s]*)\)", text)
    assert targets, f"{document} links nowhere into the docs site"
    for target in targets:
        page, _, fragment = target.removeprefix(SITE).partition("#")
        page = page.strip("/")
        candidates = (
            [ROOT / "docs" / "index.md"]
            if not page
            else [
                ROOT / "docs" / f"{page}.md",
                ROOT / "docs" / page / "index.md",
            ]
        )
        found = [c for c in candidates if c.is_file()]
        assert found, f"{document}: {target} is no page of docs/"
        if fragment:
            headings = re.findall(r"^#+ (.+)$", found[0].read_text(), re.MULTILINE)
            assert fragment in {_slug(h) for h in headings}, f"{target}: no such heading"


def test_contributing_shows_the_readme_test_command_verbatim() -> None:
    readme = _fenced_block_after((ROOT / "README.md").read_text(), "<!-- test-command -->")
    contributing = _fenced_block_after((ROOT / "CONTRIBUTING.md").read_text(), "## Run the tests")
    assert contributing == readme
    assert readme.startswith("python3 -m venv .venv && ")


# --------------------------------------------------------------------------- changelog


def test_changelog_has_unreleased_first_then_the_current_version() -> None:
    text = (ROOT / "CHANGELOG.md").read_text()
    headings = re.findall(r"^## \[([^\]]+)\]", text, re.MULTILINE)
    assert headings[0] == "Unreleased"
    assert headings[1] == mai_tools.__version__, "bump the version and the changelog together"
    for heading in headings:  # Keep a Changelog: every heading has its link reference
        assert re.search(rf"^\[{re.escape(heading)}\]: {REPO}/", text, re.MULTILINE), heading


DOCUMENTS = [
    "README.md",
    "README.pypi.md",
    "CONTRIBUTING.md",
    "CHANGELOG.md",
    *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs").rglob("*.md")),
]


@pytest.mark.parametrize("document", DOCUMENTS)
def test_documents_name_no_file_that_does_not_exist(document: str) -> None:
    # Files of this repository named in backticks must exist: they move in refactors. (Folders
    # are not checked: some, like benchmarks/out/, are made by running things.)
    text = (ROOT / document).read_text()
    pattern = r"`((?:mai_tools|mcp_server|tests|benchmarks|examples)/[\w./]*\.\w+)`"
    missing = sorted({p for p in re.findall(pattern, text) if not (ROOT / p).is_file()})
    assert missing == []
