"""Every fenced code block of the docs, found and run (see ``test_snippets.py``).

Blocks are found with Sybil's Markdown lexers (fences at any indentation, in list items too, and
Sybil-style ``<!-- invisible-code-block: python -->`` setup blocks) and run by this module, one
page per test: a page's blocks share one namespace, one temporary working directory, one
emulator and one job book, in page order. Sybil's own pytest integration makes one test item
per block, and pytest-xdist's ``--dist worksteal`` would then run a page's second block on
another worker than its first; one item per page keeps a page's blocks together.

A block is run by the runner of its language (``RUNNERS``) or carries directives, HTML comments
right above its fence (several may stand there, one per line)::

    <!-- snippet: fake-chat-model -->
    <!-- snippet: covered-by tests/packaging/test_mcp_entry.py -->
    <!-- snippet: illustrative -->

- ``fake-chat-model``: a Python block that names a provider's model (``"openai:gpt-4.1-mini"``)
  runs with :class:`ImageDrawingModel` in its place; it calls the image tools, so the block
  makes real images on the emulator. The page says what the real model needs.
- ``pytest``: a Python block that is a test module: it is written to a file and run by pytest
  in a fresh process (with the installed ``mai_emulator`` plugin), and must pass.
- ``exception-tree``: a drawing of mai_tools' exceptions, checked against the classes (see
  :func:`tests.docs.runners.check_exception_tree`).
- ``covered-by PATH...``: those tests run the block (each path must exist). A Python block
  is then not run here (the OpenTelemetry one sets a process-wide provider: its test runs it
  in a fresh process); of a shell block, only the commands that cannot run offline (installs
  from PyPI, ``npx``, a real remote) are left to those tests, every other command still runs.
- ``illustrative``: example output or data, not run (a block of a language no runner knows
  needs it; the harness fails on a block with neither).
- ``not-run REASON``: a block that cannot run here and that no test covers; the reason is
  printed with the page's notes (-rP; kept for the few blocks that need software not
  installed here).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from sybil import Document, Example, Region
from sybil.parsers.markdown.lexers import DirectiveInHTMLCommentLexer, FencedCodeBlockLexer
from sybil.typing import Lexer

from mai_tools.emulator import RunningEmulator

ROOT = Path(__file__).resolve().parents[2]

DIRECTIVE = re.compile(r"^[ \t]*<!--\s*snippet:\s*(?P<name>[\w-]+)\s*(?P<args>.*?)\s*-->[ \t]*$")
COMMENT = re.compile(r"^[ \t]*<!--.*-->[ \t]*$")
PLACEHOLDER_KEY = "your-key"  # the docs' stand-in for a Pixazo key
KNOWN_DIRECTIVES = frozenset(
    {"fake-chat-model", "pytest", "exception-tree", "covered-by", "illustrative", "not-run"}
)


def pages() -> list[str]:
    """Every page with code blocks: the docs site's sources and the two READMEs."""
    docs = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "docs").rglob("*.md"))
    return [*docs, "README.md", "README.pypi.md"]


@dataclass(frozen=True)
class Block:
    """One code block: its language (``""`` for none), its text and its directives."""

    page: str
    line: int
    language: str
    source: str
    invisible: bool
    directives: dict[str, str]
    example: Example

    @property
    def where(self) -> str:
        return f"{self.page}:{self.line}"

    def covered_by(self) -> list[str]:
        return self.directives.get("covered-by", "").split()


def _directives_above(text: str, start: int) -> dict[str, str]:
    """The ``<!-- snippet: ... -->`` comments on the lines right above ``start``'s line."""
    found: dict[str, str] = {}
    lines = text[: text.rfind("\n", 0, start) + 1].splitlines()
    for line in reversed(lines):
        if not COMMENT.match(line):
            break
        match = DIRECTIVE.match(line)
        if match:
            found[match["name"]] = match["args"]
    return found


def _parser(document: Document) -> Iterator[Region]:
    lexers: list[Lexer] = [
        FencedCodeBlockLexer(
            language=r"[^\n]*", mapping={"language": "language", "source": "source"}
        ),
        DirectiveInHTMLCommentLexer(
            directive=r"invisible-code-block",
            arguments=r".+",
            mapping={"directive": "invisible", "arguments": "language", "source": "source"},
        ),
    ]
    for lexer in lexers:
        for region in lexer(document):
            region.parsed = region.lexemes["source"]
            region.evaluator = _not_evaluated_here
            yield region


def _not_evaluated_here(example: Example) -> None:  # pragma: no cover - the test dispatches
    raise AssertionError("blocks are run by tests/docs/test_snippets.py")


def blocks(page: str) -> list[Block]:
    """The page's code blocks, in page order."""
    document = Document.parse(str(ROOT / page), _parser)
    found = []
    for example in document.examples():
        region = example.region
        found.append(
            Block(
                page=page,
                line=example.line,
                language=str(region.lexemes["language"]).strip(),
                source=str(example.parsed),
                invisible="invisible" in region.lexemes,
                directives=_directives_above(document.text, region.start),
                example=example,
            )
        )
    return found


@dataclass
class Page:
    """What a page's blocks share while they run."""

    page: str
    workdir: Path
    emulator: RunningEmulator
    bin_dir: Path
    port: int
    # The URL of an empty database on the tests' Postgres server (None: none can start here).
    postgres: Callable[[], str | None] = lambda: None
    env: dict[str, str] = field(default_factory=dict)  # set by `export` lines
    notes: list[str] = field(default_factory=list)

    def base_env(self) -> dict[str, str]:
        """The environment of the page's commands: the test's, plus the page's exports."""
        return {**os.environ, **self.env}

    def request_ids(self) -> list[str]:
        """The request ids of the jobs made on this page so far, oldest first."""
        return list(self.emulator.control.stats().prompts)


Runner = Callable[[Page, Block], None]


def problems(block: Block) -> list[str]:
    """Why a block cannot be accepted as it stands (no runner and no directive, an unknown
    directive, a covered-by naming no file)."""
    from tests.docs.runners import RUNNERS

    found = [
        f"{block.where}: unknown directive {name!r} (known: {sorted(KNOWN_DIRECTIVES)})"
        for name in block.directives
        if name not in KNOWN_DIRECTIVES
    ]
    if "covered-by" in block.directives and not block.covered_by():
        found.append(f"{block.where}: covered-by names no test")
    found += [
        f"{block.where}: covered-by {path}: no such file"
        for path in block.covered_by()
        if not (ROOT / path.split("::")[0]).exists()
    ]
    passive = {"illustrative", "not-run", "covered-by", "exception-tree"} & block.directives.keys()
    if block.language not in RUNNERS and not passive:
        found.append(
            f"{block.where}: a {block.language or 'plain'!s} block with no runner and no "
            "directive: mark it <!-- snippet: illustrative --> (or covered-by / not-run)"
        )
    return found
