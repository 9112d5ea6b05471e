"""Batch input: JSONL or plain-text lines become :class:`BatchItem` (or :class:`InvalidLine`).

Reading never sends anything. Lines that cannot be read (bad JSON, a wrong type, an unknown
field, a duplicate id) become :class:`InvalidLine` with the reason; the run reports them as
INVALID and goes on with the rest. Range checks (prompt length, aspect ratio per operation,
the image itself) happen in :func:`check_item`, with the same request models the client uses.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal, get_args, get_origin

import pydantic
from pydantic import BaseModel, ConfigDict, create_model
from pydantic.fields import FieldInfo

from .._exceptions import InvalidArgumentError
from .._images import image_to_url
from .._models import FIELDS_OF, OPERATIONS, EditRequest, GenerateRequest, JobRequest

MAX_ID_LENGTH: Final = 200
_TOO_DEEP: Final = "not a usable JSON line: nested too deeply (a line is one flat object)"
_ID_OK = re.compile(r"^[^\x00-\x1f\x7f]+$")
_URL_LIKE = re.compile(r"^(?:[A-Za-z][A-Za-z0-9+.-]+://|data:)", re.I)


@dataclass(frozen=True)
class BatchItem:
    """One line of a batch: a generation, or an edit when ``image`` is given.

    Attributes:
        id: unique within the input; names the line in the journal and the manifest.
        prompt: what to draw (or how to change ``image``).
        image: an http(s) URL, a ``data:`` URI or a local path (relative paths are read from
            the batch's ``base_dir``); makes the line an edit.
        num_images, aspect_ratio, output_format: as for ``generate``/``edit``.
        line: the 1-based line number in the input file, when it came from one.
    """

    id: str
    prompt: str
    image: str | None = None
    num_images: int = 1
    aspect_ratio: str = "auto"
    output_format: str = "png"
    line: int | None = None

    @property
    def operation(self) -> str:
        """The line's operation in :data:`~mai_tools.OPERATIONS`: an edit when it has an image."""
        return (GenerateRequest if self.image is None else EditRequest).operation


@dataclass(frozen=True)
class InvalidLine:
    """A line that could not be read as a batch item; it is reported INVALID, never sent."""

    id: str
    reason: str
    line: int | None = None


InputLine = BatchItem | InvalidLine


def _choices() -> dict[str, FieldInfo]:
    """What a caller chooses, for any operation: the request models' own fields, in order."""
    found: dict[str, FieldInfo] = {}
    for fields in FIELDS_OF.values():
        for name, info in fields.model_fields.items():
            found.setdefault(name, info)
    return found


CHOICES: Final[tuple[str, ...]] = tuple(_choices())
"""The fields of a line besides ``id`` and ``image``: those of :class:`GenerateFields` and
:class:`EditFields` (a new gateway field there is a new batch key, and a new :class:`BatchItem`
attribute, which a test checks)."""
LINE_FIELDS: Final[tuple[str, ...]] = (
    "id",
    CHOICES[0],
    "image",
    *CHOICES[1:],
)
"""Every key of a JSONL line (the order of the fingerprint and of the "allowed" message)."""


def _json_type(info: FieldInfo) -> Any:
    """The JSON type of a request field, without its ranges or allowed values: a line is read
    for its types, and checked against the request model of its operation later."""
    annotation = info.annotation
    if get_origin(annotation) is Literal:
        return type(get_args(annotation)[0])
    return annotation


# Types only (ranges are checked by the request models): a typo'd field is refused, not
# silently dropped, so "aspect": "16:9" never becomes an unexpected square image.
_LINE_TYPES: Final[dict[str, Any]] = {
    "id": (str | int | None, None),
    "image": (str | None, None),
    **{
        name: (_json_type(info), ... if info.is_required() else info.default)
        for name, info in _choices().items()
    },
}
_LineModel: type[BaseModel] = create_model(
    "_LineModel", __config__=ConfigDict(extra="forbid", strict=True), **_LINE_TYPES
)


def _problems(exc: pydantic.ValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "line"
        if err["type"] == "extra_forbidden":
            parts.append(f"unknown field {where!r} (allowed: {', '.join(LINE_FIELDS)})")
        else:
            parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)


def generated_id(line: int) -> str:
    """The id of a line that has none: ``line-<number>``."""
    return f"line-{line}"


def _check_id(raw: str | int | None, line: int | None) -> tuple[str, str | None]:
    if raw is None:
        return generated_id(line or 0), None
    text = str(raw)
    if (
        not text.strip()
        or len(text) > MAX_ID_LENGTH
        or not _ID_OK.match(text)
        or not _is_unicode(text)
    ):
        fallback = generated_id(line or 0)
        return fallback, (
            f"id must be 1-{MAX_ID_LENGTH} characters without control characters; got {text[:40]!r}"
        )
    return text, None


def _is_unicode(text: str) -> bool:
    """False for text no file or request can hold (a lone surrogate, as ``"\\ud800"`` reads)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def item_from_mapping(data: Mapping[str, object], line: int | None = None) -> InputLine:
    """One JSON object (as in a JSONL line) as an item, or the reason it is not one."""
    raw_id = data.get("id")
    for key, value in data.items():
        if key != "id" and not all(_is_unicode(t) for t in (key, value) if isinstance(t, str)):
            ident = (
                raw_id if isinstance(raw_id, str | int) and not isinstance(raw_id, bool) else None
            )
            good_id, _ = _check_id(ident, line)
            return InvalidLine(good_id, f"{key!r}: not valid Unicode text (a lone surrogate)", line)
    try:
        values = _LineModel.model_validate(dict(data)).model_dump()
    except pydantic.ValidationError as exc:
        ident = raw_id if isinstance(raw_id, str | int) and not isinstance(raw_id, bool) else None
        good_id, _ = _check_id(ident, line)
        return InvalidLine(good_id, _problems(exc), line)
    ident, problem = _check_id(values["id"], line)
    if problem is not None:
        return InvalidLine(ident, problem, line)
    chosen: dict[str, Any] = {name: values[name] for name in CHOICES}
    return BatchItem(id=ident, image=values["image"], line=line, **chosen)


def _is_jsonl(text: str, name: str | None) -> bool:
    suffix = Path(name).suffix.lower() if name else ""
    if suffix in (".jsonl", ".ndjson", ".json"):
        return True
    if suffix == ".txt":
        return False
    for raw in text.splitlines():
        if raw.strip():
            return raw.lstrip().startswith("{")
    return False


def parse_lines(text: str, *, name: str | None = None) -> list[InputLine]:
    """Parse a whole input: JSONL (one object per line) or one prompt per line.

    The format follows the file name (``.jsonl``/``.ndjson``/``.json`` or ``.txt``), else the
    first non-blank line (``{`` means JSONL). Blank lines are skipped; line numbers count them.
    """
    jsonl = _is_jsonl(text, name)
    out: list[InputLine] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        if not jsonl:
            out.append(BatchItem(id=generated_id(number), prompt=raw.rstrip("\r"), line=number))
            continue
        try:
            data = json.loads(raw)
        except ValueError as exc:
            out.append(InvalidLine(generated_id(number), f"not valid JSON ({exc})", number))
            continue
        except RecursionError:
            out.append(InvalidLine(generated_id(number), _TOO_DEEP, number))
            continue
        if not isinstance(data, dict):
            out.append(
                InvalidLine(
                    generated_id(number),
                    f"expected a JSON object with a 'prompt', got a {type(data).__name__}",
                    number,
                )
            )
            continue
        out.append(item_from_mapping(data, number))
    return out


def read_input(source: str | os.PathLike[str]) -> tuple[list[InputLine], Path]:
    """Read INPUT (a path, or ``-`` for stdin): the lines and the directory relative image
    paths are read from (the file's directory; the working directory for stdin).

    Raises:
        InvalidArgumentError: the file is missing, unreadable or not UTF-8 text.
    """
    if os.fspath(source) == "-":
        data = sys.stdin.buffer.read()
        name, base = None, Path.cwd()
    else:
        path = Path(source).expanduser()
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise InvalidArgumentError(
                f"Cannot read INPUT {str(path)!r}: {exc.strerror or exc}."
            ) from None
        name, base = path.name, path.resolve().parent
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InvalidArgumentError(
            f"INPUT {name or 'stdin'!r} is not UTF-8 text (byte {exc.start}); save it as UTF-8."
        ) from None
    return parse_lines(text, name=name), base


def normalize(entries: Iterable[InputLine | Mapping[str, object] | str]) -> list[InputLine]:
    """Items given in Python: BatchItem/InvalidLine as they are, dicts as JSONL objects,
    strings as prompts. Entries without a line number are numbered by position (from 1)."""
    out: list[InputLine] = []
    for position, entry in enumerate(entries, start=1):
        if isinstance(entry, BatchItem | InvalidLine):
            out.append(entry)
        elif isinstance(entry, str):
            out.append(BatchItem(id=generated_id(position), prompt=entry, line=position))
        elif isinstance(entry, Mapping):
            out.append(item_from_mapping(entry, position))
        else:
            out.append(
                InvalidLine(
                    generated_id(position),
                    f"expected a BatchItem, a dict or a prompt string, got {type(entry).__name__}",
                    position,
                )
            )
    return out


def mark_duplicates(lines: list[InputLine]) -> list[InputLine]:
    """Later lines reusing an earlier line's id become INVALID (the first one runs)."""
    seen: dict[str, int | None] = {}
    out: list[InputLine] = []
    for entry in lines:
        if entry.id in seen:
            first = seen[entry.id]
            where = f" (first used on line {first})" if first is not None else ""
            out.append(InvalidLine(entry.id, f"duplicate id {entry.id!r}{where}", entry.line))
            continue
        seen[entry.id] = entry.line
        out.append(entry)
    return out


def parse_shard(text: str) -> tuple[int, int]:
    """``K/N`` (1 <= K <= N) as a tuple.

    Raises:
        InvalidArgumentError: not of that form.
    """
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if match is None or not 1 <= int(match.group(1)) <= int(match.group(2)):
        raise InvalidArgumentError(
            f"--shard must be K/N with 1 <= K <= N, e.g. 1/4 (got {text!r}); run N processes "
            "with K = 1..N, each with its own --out."
        )
    return int(match.group(1)), int(match.group(2))


def check_shard(shard: object) -> tuple[int, int] | None:
    """``shard`` as ``(K, N)``: None, a pair of whole numbers, or the ``"K/N"`` text.

    Raises:
        InvalidArgumentError: anything else, or not 1 <= K <= N.
    """
    if shard is None:
        return None
    if isinstance(shard, str):
        return parse_shard(shard)
    if isinstance(shard, tuple | list) and len(shard) == 2:
        k, n = shard
        if all(isinstance(v, int) and not isinstance(v, bool) for v in (k, n)) and 1 <= k <= n:
            return int(k), int(n)
    raise InvalidArgumentError(
        f"shard must be (K, N) with 1 <= K <= N, e.g. (1, 4) or '1/4' (got {shard!r:.40}); run "
        "N processes with K = 1..N, each with its own out_dir."
    )


def select_shard(lines: list[InputLine], shard: tuple[int, int] | None) -> list[InputLine]:
    """Every N-th line starting with the K-th (counting non-blank lines from 1)."""
    if shard is None:
        return lines
    k, n = shard
    return [entry for index, entry in enumerate(lines) if index % n == k - 1]


def fingerprint(lines: Iterable[InputLine], shard: tuple[int, int] | None) -> str:
    """A hash of the whole input (every line's fields, in order) and the shard."""
    digest = hashlib.sha256(f"shard={shard}\n".encode())
    for entry in lines:
        if isinstance(entry, BatchItem):
            fields: list[object] = [getattr(entry, name) for name in LINE_FIELDS]
        else:
            fields = [entry.id, "invalid", entry.reason]
        digest.update(json.dumps(fields, ensure_ascii=False).encode("utf-8", "surrogatepass"))
        digest.update(b"\n")
    return digest.hexdigest()


def image_source(image: str, base_dir: Path) -> str:
    """The edit source as the client takes it: URLs as they are, paths from ``base_dir``."""
    if _URL_LIKE.match(image.strip()) or re.match(r"^[A-Za-z]:[\\/]", image):
        return image
    return os.fspath(base_dir / Path(image).expanduser())


def _fields(item: BatchItem) -> dict[str, object]:
    """``item``'s choices for its operation (what :data:`FIELDS_OF` names), as sent."""
    return {name: getattr(item, name) for name in FIELDS_OF[item.operation].model_fields}


def check_item(item: BatchItem, base_dir: Path, *, max_image_bytes: int) -> str | None:
    """Why ``item`` cannot be sent (prompt, ranges, image), or None. Nothing is sent."""
    try:
        FIELDS_OF[item.operation].model_validate(_fields(item))
        if item.image is not None:
            image_to_url(image_source(item.image, base_dir), max_bytes=max_image_bytes)
    except pydantic.ValidationError as exc:
        return _problems(exc)
    except InvalidArgumentError as exc:
        return f"image: {exc}"
    return None


def request_of(item: BatchItem, base_dir: Path, *, max_image_bytes: int) -> JobRequest:
    """The request ``item`` sends: its operation's request model, with the image read and
    encoded for an edit (file I/O: call it off the event loop for an edit).

    Raises:
        pydantic.ValidationError, InvalidArgumentError: the line cannot be sent as it is.
    """
    fields = _fields(item)
    if item.image is not None:
        source = image_source(item.image, base_dir)
        fields["image_urls"] = [image_to_url(source, max_bytes=max_image_bytes)]
    return OPERATIONS[item.operation].model_validate(fields)


def iter_items(lines: Iterable[InputLine]) -> Iterator[BatchItem]:
    for entry in lines:
        if isinstance(entry, BatchItem):
            yield entry
