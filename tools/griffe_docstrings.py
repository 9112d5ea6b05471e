"""A griffe extension: the package's docstrings, written for editors (reST), read as Markdown.

The package's docstrings are read both by humans in an editor (reST roles, as Sphinx and IDEs
show them) and by mkdocstrings, which renders Markdown: there ``:class:`~mai_tools.Job` ``
would show up literally. This extension rewrites each role, when the package is loaded, into
the cross-reference syntax of mkdocs-autorefs, resolved the way Python resolves the name in
the docstring's own scope:

- ``:class:`~mai_tools.jobbook.JobBook` `` -> ``[`JobBook`][mai_tools.jobbook.JobBook]``
- ``:meth:`run` `` in a method of ``MAIImageClient`` ->
  ``[`run`][mai_tools._client.MAIImageClient.run]`` (the canonical path, which mkdocstrings
  registers for the documented ``mai_tools.MAIImageClient.run``)
- ``:mod:`._limits` `` -> relative to the docstring's package, as in an import
- ``:class:`the client <MAIImageClient>` `` -> the explicit title
- a name outside the configured packages (``decimal.Decimal``, ``httpx.Client``), a private
  name (``_ClientBase``, ``mai_tools._flow``, whose pages do not exist) or ``!name``:
  ``` ``name`` ``` as code, no link.

and a reST literal block (a paragraph ending in ``::``, then an indented block) becomes a fenced
code block, Python-highlighted when it parses as Python (``Example::`` -> ``Example:``). A class
attribute without a docstring of its own gets its line of the class's ``Attributes:`` section,
or the ``Field(description=...)`` of the ``Annotated`` alias it is declared with (a pydantic
field type written once for several models), so its entry in the reference is not empty.

Every other link is checked by autorefs: a name of the packages that the reference does not
document is a warning, and ``mkdocs build --strict`` fails on it, so the docstring gets fixed.

Loaded from mkdocs.yml (mkdocstrings' python handler, ``options.extensions``)::

    extensions:
      - tools/griffe_docstrings.py:
          packages: [mai_tools, mcp_server]
"""

from __future__ import annotations

import ast
import re
import textwrap
from typing import TYPE_CHECKING, Any

import griffe

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator

    Resolver = Callable[[str], str | None]

__all__ = ["ROLE", "MarkdownDocstrings", "rewrite_literal_blocks", "rewrite_roles"]

#: A reST role as docstrings write it: ``:class:`target` ``, ``:py:meth:`title <target>` ``.
ROLE = re.compile(
    r":(?:py:)?(?P<role>class|exc|func|meth|attr|data|const|mod|obj|type):"
    r"`(?P<text>[^`]+)`"
)
_TITLED = re.compile(r"^(?P<title>.*\S)\s*<(?P<target>[^<>]+)>$", flags=re.DOTALL)


def rewrite_roles(
    text: str, resolve: Resolver | None = None, *, packages: Iterable[str] = ()
) -> str:
    """``text`` with each reST role replaced by an autorefs link, or by code when no link fits.

    Args:
        text: a docstring.
        resolve: ``resolve(name) -> str | None``: the full dotted path of ``name`` (a bare or
            dotted name as the docstring wrote it) in the docstring's scope, or ``None`` when
            the scope does not know it. ``None``: names are taken as written.
        packages: the top-level packages whose names become links.
    """
    roots = set(packages)

    def replace(match: re.Match[str]) -> str:
        text = match["text"].strip()
        titled = _TITLED.match(text)
        if titled:
            title, target = titled["title"], titled["target"].strip()
        else:
            title, target = None, text
        unlinked = target.startswith("!")
        target = target.lstrip("!")
        short = target.startswith("~")
        target = target.lstrip("~")
        if title is None:
            title = target.rsplit(".", 1)[-1] if short else target
        code = f"`{title}`" if titled is None else title
        if unlinked:
            return code
        path = (resolve(target) if resolve is not None else None) or target
        if path.split(".", 1)[0] not in roots or _is_private(path):
            return code
        return f"[{code}][{path}]"

    # Roles in code blocks are code: only the text between fences is rewritten.
    parts = _FENCED.split(text)
    return "".join(p if p.startswith("```") else ROLE.sub(replace, p) for p in parts)


_FENCED = re.compile(r"(^[ \t]*```.*?^[ \t]*```[ \t]*$)", flags=re.MULTILINE | re.DOTALL)


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def rewrite_literal_blocks(text: str) -> str:
    """``text`` with each reST literal block (``...::`` then an indented block) fenced."""
    lines = text.split("\n")
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        start = i + 1
        while start < len(lines) and not lines[start].strip():
            start += 1
        base = _indent(line)
        if not (
            line.rstrip().endswith("::")
            and start > i + 1
            and start < len(lines)
            and _indent(lines[start]) > base
        ):
            out.append(line)
            i += 1
            continue
        end = start
        while end < len(lines) and (not lines[end].strip() or _indent(lines[end]) > base):
            end += 1
        while not lines[end - 1].strip():
            end -= 1
        # reST: "Example::" reads "Example:", "text ::" reads "text", a lone "::" nothing.
        head = line.rstrip()[:-2]
        if head.strip():
            out.append(head if head.endswith(" ") else head + ":")
            out[-1] = out[-1].rstrip()
            out.append("")
        code = textwrap.dedent("\n".join(lines[start:end]))
        fence = " " * base + "```" + ("python" if _parses(code) else "text")
        out.extend([fence, *(" " * base + c if c else "" for c in code.split("\n"))])
        out.append(" " * base + "```")
        i = end
    return "\n".join(out)


def _parses(code: str) -> bool:
    try:
        ast.parse(code)
    except SyntaxError:
        return False
    return True


def _is_private(path: str) -> bool:
    # Only the last part counts: mai_tools._client.MAIImageClient is the canonical path of a
    # public class, mai_tools._client._ClientBase and mai_tools._flow are private names.
    name = path.rsplit(".", 1)[-1]
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _scope_resolver(obj: griffe.Object) -> Resolver:
    """How ``obj``'s docstring names things: relative imports, then its scope, then as written."""
    module = obj if obj.is_module else obj.module
    package = module.path if module.is_init_module else module.path.rpartition(".")[0]

    def resolve(name: str) -> str | None:
        if name.startswith("."):
            dots = len(name) - len(name.lstrip("."))
            base = package.split(".")
            base = base[: len(base) - (dots - 1)] if dots > 1 else base
            rest = name[dots:]
            return ".".join([*base, rest]) if rest else ".".join(base)
        head, _, rest = name.partition(".")
        try:
            found = obj.resolve(head)
        except griffe.NameResolutionError:
            return None
        return f"{found}.{rest}" if rest else found

    return resolve


def _objects(obj: griffe.Object) -> Iterator[griffe.Object]:
    yield obj
    for member in obj.members.values():
        if not member.is_alias:  # an alias's docstring is its target's, rewritten there
            yield from _objects(member)  # type: ignore[arg-type]


class MarkdownDocstrings(griffe.Extension):
    """Make every docstring of a loaded package render in the reference: reST roles become
    autorefs links, literal blocks fenced code, empty attribute docstrings filled."""

    def __init__(self, packages: list[str] | None = None) -> None:
        super().__init__()
        self.packages = list(packages or [])

    def on_package(self, *, pkg: griffe.Module, loader: griffe.GriffeLoader, **kwargs: Any) -> None:
        """Rewrite the docstrings of ``pkg`` and of everything in it."""
        roots = {*self.packages, pkg.name}
        for obj in _objects(pkg):
            docstring = obj.docstring
            if docstring is None or ":" not in docstring.value:
                continue
            text = rewrite_literal_blocks(docstring.value)
            docstring.value = rewrite_roles(text, _scope_resolver(obj), packages=roots)
            docstring.__dict__.pop("parsed", None)  # parsed lazily: drop a stale parse
        for obj in _objects(pkg):
            if obj.is_class:
                _document_attributes(obj)


_FIELD_DESCRIPTION = re.compile(
    r"""\bField\(.*?\bdescription=(?P<text>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')"""
)


def _annotated_description(attribute: griffe.Attribute) -> str | None:
    """The description of ``Alias = Annotated[T, Field(description="...")]``, the annotation
    of ``attribute``, if it is such an alias."""
    annotation = attribute.annotation
    if not isinstance(annotation, griffe.ExprName):
        return None
    try:
        alias = attribute.modules_collection[annotation.canonical_path]
    except (KeyError, griffe.AliasResolutionError, griffe.CyclicAliasError):
        return None
    value = getattr(alias, "value", None)
    if value is None or not str(value).startswith("Annotated["):
        return None
    found = _FIELD_DESCRIPTION.search(str(value))
    if found is None:
        return None
    text = ast.literal_eval(found["text"])
    return text if isinstance(text, str) else None


def _document_attributes(cls: griffe.Object) -> None:
    """Give each attribute of ``cls`` with no docstring its line of ``cls``'s ``Attributes:``
    section, else the description of its ``Annotated`` type."""
    docstring = cls.docstring
    described = {
        attribute.name: attribute.description
        for section in (docstring.parsed if docstring is not None else ())
        if section.kind is griffe.DocstringSectionKind.attributes
        for attribute in section.value
    }
    for name, member in cls.members.items():
        if not isinstance(member, griffe.Attribute):
            continue
        if member.docstring is not None and member.docstring.value.strip():
            continue
        text = described.get(name) or _annotated_description(member)
        if text:
            member.docstring = griffe.Docstring(
                text,
                parent=member,
                parser=docstring.parser if docstring is not None else None,
                parser_options=docstring.parser_options if docstring is not None else None,
            )
