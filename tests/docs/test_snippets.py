"""Every fenced code block of ``docs/**/*.md``, ``README.md`` and ``README.pypi.md`` runs, as a
reader would copy it, against an emulator (how, and the directives: :mod:`tests.docs.harness`)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from mai_tools.emulator import DEFAULT_EMULATOR_KEY, RunningEmulator
from tests.docs.harness import PLACEHOLDER_KEY, Page, blocks, pages, problems
from tests.docs.runners import CHECKS, RUNNERS
from tests.docs.shell import prepare
from tests.support.emulators import EmulatorPool
from tests.support.serving import free_socket

# The pytest plugin's fast jobs; and the docs' placeholder key is a key the emulator accepts, so
# `export PIXAZO_API_KEY=your-key` and a config's `"PIXAZO_API_KEY": "your-key"` run as printed.
EMULATOR = {
    "min_duration": 0.2,
    "max_duration": 0.5,
    "api_keys": (DEFAULT_EMULATOR_KEY, PLACEHOLDER_KEY),
}


def test_every_block_has_a_runner_or_a_directive() -> None:
    found = [problem for page in pages() for block in blocks(page) for problem in problems(block)]
    assert not found, "\n".join(found)


def test_the_harness_finds_blocks_in_list_items_invisible_ones_and_their_directives(
    tmp_path: Path,
) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "# A page\n\n"
        "<!-- invisible-code-block: python\nclient = object()\n-->\n\n"
        "- an item:\n\n"
        "    <!-- snippet: covered-by tests/docs/test_snippets.py -->\n"
        "    <!-- another comment -->\n"
        "    ```bash\n    mai-image --help\n    ```\n\n"
        "```\nplain\n```\n",
        encoding="utf-8",
    )
    invisible, listed, plain = blocks(str(page))
    assert (invisible.invisible, invisible.language, invisible.source) == (
        True,
        "python",
        "client = object()\n",
    )
    assert (listed.language, listed.source) == ("bash", "mai-image --help\n")
    assert listed.directives == {"covered-by": "tests/docs/test_snippets.py"}
    assert (plain.language, plain.directives) == ("", {})
    assert problems(plain), "a plain block with no directive is refused"


@pytest.mark.parametrize("page", pages())
def test_the_page_s_code_blocks_run(
    page: str,
    tmp_path: Path,
    emulators: EmulatorPool,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> None:
    emulator: RunningEmulator = emulators(**EMULATOR)
    monkeypatch.setenv("PIXAZO_BASE_URL", emulator.base_url)
    monkeypatch.setenv("PIXAZO_API_KEY", emulator.api_key)
    monkeypatch.chdir(tmp_path)
    prepare(tmp_path)
    with free_socket() as sock:
        port = sock.getsockname()[1]

    def postgres() -> str | None:
        try:
            return str(request.getfixturevalue("postgres_url"))
        except pytest.skip.Exception:
            return None

    state = Page(page, tmp_path, emulator, Path(sys.executable).parent, port, postgres)
    for block in blocks(page):
        assert not problems(block), problems(block)
        passive = {"illustrative", "not-run"} & block.directives.keys()
        if block.language == "python" and "covered-by" in block.directives:
            passive.add("covered-by")
        if passive or (block.language not in RUNNERS and not CHECKS.keys() & block.directives):
            why = "; ".join(f"{d} {block.directives[d]}".strip() for d in sorted(passive))
            state.notes.append(f"{block.where}: not run here: {why or 'no runner'}")
            continue
        started = time.perf_counter()
        runner = next((CHECKS[d] for d in block.directives if d in CHECKS), None)
        (runner or RUNNERS[block.language])(state, block)
        state.notes.append(f"{block.where}: {block.language} {time.perf_counter() - started:.1f} s")
    if any("fake-chat-model" in block.directives for block in blocks(page)):
        assert state.request_ids(), f"{page}: the agents drew nothing on the emulator"
    print("\n".join(state.notes))  # what ran, what was covered elsewhere, and how long (-rP)
