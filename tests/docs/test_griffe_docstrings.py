"""tools/griffe_docstrings.py: the docstrings render in the reference (links, code, fields)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import griffe
import pytest

from tools.griffe_docstrings import MarkdownDocstrings, rewrite_literal_blocks, rewrite_roles

PACKAGES = ("mai_tools", "mcp_server")


def load(root: Path, name: str, *packages: str) -> griffe.Module:
    """Module ``name`` under ``root``, loaded through the extension as mkdocs.yml loads it."""
    loader = griffe.GriffeLoader(
        search_paths=[str(root)],
        docstring_parser=griffe.Parser.google,
        extensions=griffe.load_extensions(MarkdownDocstrings(packages=list(packages))),
    )
    module = loader.load(name)
    assert isinstance(module, griffe.Module)
    return module


def docstring_of(module: griffe.Module, path: str) -> str | None:
    docstring: griffe.Docstring | None = (module[path] if path else module).docstring
    return None if docstring is None else docstring.value


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # ~ shows the last part; the link target is the full path.
        (":class:`~mai_tools.WebhookReceiver`", "[`WebhookReceiver`][mai_tools.WebhookReceiver]"),
        (":func:`mai_tools.image_to_url`", "[`mai_tools.image_to_url`][mai_tools.image_to_url]"),
        (":py:meth:`~mai_tools.MAIImageClient.run`", "[`run`][mai_tools.MAIImageClient.run]"),
        (
            ":data:`~mai_tools.jobbook.ADOPT_WINDOW`",
            "[`ADOPT_WINDOW`][mai_tools.jobbook.ADOPT_WINDOW]",
        ),
        (
            ":exc:`mcp_server.SettingsError`",
            "[`mcp_server.SettingsError`][mcp_server.SettingsError]",
        ),
        # An explicit title is kept as written.
        (
            ":class:`the client <mai_tools.MAIImageClient>`",
            "[the client][mai_tools.MAIImageClient]",
        ),
        # Outside the documented packages, private, or !: code without a link.
        (":class:`~decimal.Decimal`", "`Decimal`"),
        (":mod:`mai_tools._flow`", "`mai_tools._flow`"),
        (":class:`~mai_tools._base_client._ClientBase`", "`_ClientBase`"),
        (":class:`!mai_tools.Job`", "`mai_tools.Job`"),
        # Dunder names are public.
        (":data:`mai_tools.__version__`", "[`mai_tools.__version__`][mai_tools.__version__]"),
        # Text around roles, several on a line, and literals are left alone.
        (
            "See :class:`~mai_tools.Job` and :meth:`~mai_tools.Job.x`; ``:class:`` stays.",
            "See [`Job`][mai_tools.Job] and [`x`][mai_tools.Job.x]; ``:class:`` stays.",
        ),
    ],
)
def test_roles_become_links_or_code(text: str, expected: str) -> None:
    assert rewrite_roles(text, packages=PACKAGES) == expected


def test_roles_in_code_blocks_stay_code() -> None:
    text = "Use :class:`~mai_tools.Job`:\n\n```python\nx = ':class:`~mai_tools.Job`'\n```\n"
    assert rewrite_roles(text, packages=PACKAGES) == (
        "Use [`Job`][mai_tools.Job]:\n\n```python\nx = ':class:`~mai_tools.Job`'\n```\n"
    )


def test_literal_blocks_become_fenced_code() -> None:
    text = textwrap.dedent(
        """\
        Iterate it::

            async with run:
                print(run.summary())

        From a shell ::

            mai-image generate "a fox"

        Raises:
            ValueError: bad.
        """
    )
    assert rewrite_literal_blocks(text) == textwrap.dedent(
        """\
        Iterate it:

        ```python
        async with run:
            print(run.summary())
        ```

        From a shell

        ```text
        mai-image generate "a fox"
        ```

        Raises:
            ValueError: bad.
        """
    )


def test_text_without_literal_blocks_is_unchanged() -> None:
    text = "Ends with a colon::\nno blank line, so no block.\n\n    indented: not after ::\n"
    assert rewrite_literal_blocks(text) == text


def test_names_are_resolved_by_the_resolver_first() -> None:
    def resolve(name: str) -> str | None:
        return {"Job": "mai_tools._status.Job", "run": "mai_tools._client.C.run"}.get(name)

    text = ":class:`Job`, :meth:`run`, :class:`Unknown`"
    assert rewrite_roles(text, resolve, packages=PACKAGES) == (
        "[`Job`][mai_tools._status.Job], [`run`][mai_tools._client.C.run], `Unknown`"
    )


def test_the_extension_resolves_names_in_each_docstrings_scope(tmp_path: Path) -> None:
    """Loaded by griffe as mkdocs.yml loads it: names resolve as Python would resolve them where
    the docstring is (a method's class, the module's imports, relative module paths)."""
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text(
        '"""The package: :class:`Thing`, :mod:`.sub`."""\nfrom ._impl import Thing\n'
    )
    (package / "sub" / "__init__.py").write_text('"""Sub: :mod:`..sub`."""\n')
    (package / "_impl.py").write_text(
        textwrap.dedent(
            '''
            """Implementation; :mod:`._other` is private."""
            import decimal


            class Thing:
                """A thing: :meth:`go` it, :attr:`size`; see :class:`decimal.Decimal`."""

                size: int = 1
                """How big: :data:`~pkg.LIMIT`."""

                def go(self) -> None:
                    """Go; then :meth:`go` again, or :meth:`_helper`, or :class:`Thing`."""

                def _helper(self) -> None:
                    pass
            '''
        )
    )
    pkg = load(tmp_path, "pkg", "pkg")

    def doc(path: str) -> str | None:
        return docstring_of(pkg, path)

    assert doc("") == "The package: [`Thing`][pkg._impl.Thing], [`.sub`][pkg.sub]."
    assert doc("sub") == "Sub: [`..sub`][pkg.sub]."
    assert doc("_impl") == "Implementation; `._other` is private."
    assert doc("_impl.Thing") == (
        "A thing: [`go`][pkg._impl.Thing.go] it, [`size`][pkg._impl.Thing.size]; "
        "see `decimal.Decimal`."
    )
    assert doc("_impl.Thing.size") == "How big: [`LIMIT`][pkg.LIMIT]."
    assert doc("_impl.Thing.go") == (
        "Go; then [`go`][pkg._impl.Thing.go] again, or `_helper`, or [`Thing`][pkg._impl.Thing]."
    )
    # The parsed sections see the rewritten text too (griffe parses lazily).
    go = pkg["_impl.Thing.go"].docstring
    assert go is not None
    parsed = go.parsed
    assert "[`go`][pkg._impl.Thing.go]" in parsed[0].value


def test_mkdocs_yml_loads_the_extension_for_the_documented_packages() -> None:
    config = (Path(__file__).resolve().parents[2] / "mkdocs.yml").read_text(encoding="utf-8")
    assert "- tools/griffe_docstrings.py:" in config
    assert "packages: [mai_tools, mcp_server]" in config


def test_attributes_without_docstrings_get_their_line_of_the_class_docstring(
    tmp_path: Path,
) -> None:
    (tmp_path / "attrs.py").write_text(
        textwrap.dedent(
            '''
            class Policy:
                """A policy.

                Attributes:
                    delay: seconds before the first try; see :class:`Policy`.
                    cap: the longest delay.
                """

                delay: float = 1.0
                cap: float = 8.0
                """Its own docstring wins."""
                other: int = 0
            '''
        )
    )
    module = load(tmp_path, "attrs")
    assert (
        docstring_of(module, "Policy.delay")
        == "seconds before the first try; see [`Policy`][attrs.Policy]."
    )
    assert docstring_of(module, "Policy.cap") == "Its own docstring wins."
    assert docstring_of(module, "Policy.other") is None


def test_fields_declared_with_an_annotated_alias_get_its_description(tmp_path: Path) -> None:
    (tmp_path / "fields.py").write_text(
        textwrap.dedent(
            """
            from typing import Annotated

            from pydantic import BaseModel, Field

            Count = Annotated[int, Field(ge=1, description='How many (1-4).')]
            Ratio = Annotated[
                str, Field(description=("Width:height; " "'auto' lets the model decide."))
            ]
            Plain = Annotated[int, "no Field"]


            class Request(BaseModel):
                count: Count = 1
                ratio: Ratio = "auto"
                plain: Plain = 0
            """
        )
    )
    module = load(tmp_path, "fields")
    assert docstring_of(module, "Request.count") == "How many (1-4)."
    assert docstring_of(module, "Request.ratio") == "Width:height; 'auto' lets the model decide."
    assert docstring_of(module, "Request.plain") is None
