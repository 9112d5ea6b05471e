"""Named bearer tokens: a file of name -> token digest, and the ``mai-image-mcp tokens`` commands.

The file is JSON, private to its owner (mode 600, the API key file's rule), and holds no token,
only each token's SHA-256 digest (a token is 256 random bits, so an unsalted digest cannot be
walked back)::

    {"version": 1, "tokens": {"alice": {"sha256": "<64 hex>", "created": "2026-12-07T08:30:00Z"}}}

``tokens add NAME`` draws a token, prints it once (alone on stdout) and stores its digest;
``tokens list`` shows names and creation times; ``tokens revoke NAME`` drops one. Each change
replaces the file in one step (a new file renamed over the old one), and a running server reads
it again when it changed (:class:`NamedTokens`), so a revoked token stops working at once.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import logging
import os
import re
import secrets
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import click

from mai_tools._config import read_private_file
from mai_tools._exceptions import ConfigurationError

from ._settings import ENV_PREFIX

logger = logging.getLogger("mcp_server")

ENV_TOKENS_FILE = f"{ENV_PREFIX}TOKENS_FILE"
VERSION = 1
TOKEN_PREFIX = "mai_"  # noqa: S105  # a prefix, not a secret
"""Marks a token as this server's (secret scanners and people can tell what leaked)."""
RESERVED_NAMES = frozenset({"default", "local"})
"""Principals given by other means: the single ``--auth-token`` and stdio/loopback."""
MAX_FILE_BYTES = 1024 * 1024
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,63}")
_DIGEST = re.compile(r"[0-9a-f]{64}")
_HOWTO = "Make one with: mai-image-mcp tokens add NAME --tokens-file FILE"


class TokensFileError(ValueError):
    """The tokens file cannot be used; the message says what is wrong and how to fix it."""


@dataclass(frozen=True)
class NamedToken:
    """One entry of the tokens file (its digest stays out of reprs)."""

    name: str
    digest: str = field(repr=False)
    created: str


def digest(token: str) -> str:
    """The hex SHA-256 digest a token is stored and looked up by."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token() -> str:
    """A fresh token: 32 random bytes, URL-safe, with the :data:`TOKEN_PREFIX`."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def check_name(name: str) -> str:
    """``name`` if it may name a token, else :class:`TokensFileError`."""
    if not _NAME.fullmatch(name):
        raise TokensFileError(
            f"{name[:80]!r} cannot name a token: use 1-64 letters, digits and . _ @ + - "
            "(starting with a letter or digit), e.g. alice or ci-bot."
        )
    if name in RESERVED_NAMES:
        raise TokensFileError(
            f"{name!r} is reserved ('default' is the --auth-token caller, 'local' the stdio and "
            "loopback one); pick another name."
        )
    return name


def parse(text: str, shown: str) -> dict[str, NamedToken]:
    """The entries of a tokens file's text, by name."""

    def bad(what: str) -> TokensFileError:
        return TokensFileError(
            f"The tokens file {shown} {what}. It is written by `mai-image-mcp tokens add`; fix "
            "it or move it aside and add the tokens again."
        )

    try:
        data = json.loads(text)
    except ValueError as exc:
        raise bad(f"is not JSON (line {getattr(exc, 'lineno', '?')})") from None
    if not isinstance(data, dict) or not isinstance(data.get("tokens"), dict):
        raise bad('has no "tokens" object')
    if data.get("version") != VERSION:
        raise bad(f"has version {data.get('version')!r}; this server reads version {VERSION}")
    found: dict[str, NamedToken] = {}
    for name, entry in data["tokens"].items():
        try:
            check_name(name)
        except TokensFileError as exc:
            raise bad(f"names a token badly: {exc}") from None
        if not isinstance(entry, dict) or not _DIGEST.fullmatch(str(entry.get("sha256", ""))):
            raise bad(f"has no valid sha256 digest for {name!r}")
        found[name] = NamedToken(name, entry["sha256"], str(entry.get("created", "")))
    return found


def read(path: Path) -> dict[str, NamedToken]:
    """The tokens in ``path`` (which must exist and be private to its owner)."""
    shown = str(path)
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            raise TokensFileError(f"The tokens file {shown} is larger than 1 MiB.")
        text = read_private_file(
            path, label="tokens file", shown=shown, advice=_HOWTO, limit=MAX_FILE_BYTES
        )
    except FileNotFoundError:
        raise TokensFileError(f"The tokens file {shown} does not exist. {_HOWTO}") from None
    except (OSError, ConfigurationError) as exc:
        raise TokensFileError(str(exc)) from None
    if text is None:
        raise TokensFileError(f"The tokens file {shown} is empty. {_HOWTO}")
    return parse(text, shown)


def write(path: Path, tokens: Mapping[str, NamedToken]) -> None:
    """Replace ``path`` with ``tokens`` in one step (mode 600 from the start)."""
    body = {
        "version": VERSION,
        "tokens": {t.name: {"sha256": t.digest, "created": t.created} for t in tokens.values()},
    }
    if not path.parent.is_dir():
        raise TokensFileError(
            f"Cannot write the tokens file {path}: the directory {path.parent} does not exist; "
            "create it first (e.g. mkdir -m 700 -p DIR)."
        )
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)  # mode 600
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(body, out, indent=2, sort_keys=True)
            out.write("\n")
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise


class NamedTokens:
    """The tokens file as a running server sees it: read again whenever it changed.

    A change is noticed by the file's modification time, size and inode, looked at on each
    lookup (one ``stat``), so ``tokens revoke`` takes effect on the next request, without a
    restart. A file that became unreadable or malformed refuses every named token (it may
    have been edited to revoke one) until it is fixed, and says so in the log once.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path).expanduser()
        self._seen: tuple[int, int, int] | None = None
        self._by_digest: dict[str, str] = {}
        self._broken = False
        self._load(os.stat(self.path) if self.path.exists() else None, strict=True)

    def __repr__(self) -> str:
        return f"NamedTokens({str(self.path)!r}, {len(self._by_digest)} tokens)"

    def __len__(self) -> int:
        self._refresh()
        return len(self._by_digest)

    @property
    def usable(self) -> bool:
        """False while the file, as last changed, cannot be read (every token is refused)."""
        self._refresh()
        return not self._broken

    def principal(self, token: str) -> str | None:
        """The name of ``token``, or None if no entry has its digest.

        The lookup is by digest: no token is compared with a guess, so the time it takes
        tells nothing about how close the guess was (to know which digest to aim at, one would
        need a token already).
        """
        self._refresh()
        return self._by_digest.get(digest(token))

    def _refresh(self) -> None:
        try:
            info: os.stat_result | None = os.stat(self.path)
        except OSError:
            info = None
        self._load(info, strict=False)

    def _load(self, info: os.stat_result | None, *, strict: bool) -> None:
        seen = None if info is None else (info.st_mtime_ns, info.st_size, info.st_ino)
        if seen == self._seen and not strict:
            return
        self._seen = seen
        try:
            tokens = read(self.path)
        except TokensFileError as exc:
            if strict:
                raise
            self._by_digest = {}
            self._broken = True
            logger.error("%s Every named token is refused until it is fixed.", exc)
            return
        self._by_digest = {t.digest: t.name for t in tokens.values()}
        self._broken = False
        if not strict:
            logger.info("read the tokens file %s again: %d tokens", self.path, len(tokens))


# ---------------------------------------------------------------------- the commands


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _existing(path: Path) -> dict[str, NamedToken]:
    return read(path) if path.exists() else {}


def _change(action: Callable[[], None]) -> None:
    try:
        action()
    except (TokensFileError, OSError) as exc:
        raise click.ClickException(str(exc)) from None


_FILE_OPTION = click.option(
    "--tokens-file",
    "tokens_file",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar=ENV_TOKENS_FILE,
    required=True,
    help=f"The tokens file (JSON, mode 600) [env {ENV_TOKENS_FILE}].",
)


@click.group("tokens")
def tokens_command() -> None:
    """Named bearer tokens for the HTTP server (--tokens-file): each caller its own name."""


@tokens_command.command("add")
@click.argument("name")
@_FILE_OPTION
@click.option("--replace", is_flag=True, help="Replace the token of a name that exists.")
def add(name: str, tokens_file: Path, replace: bool) -> None:
    """Make a token for NAME: printed once, alone on stdout; only its digest is stored."""

    def run() -> None:
        check_name(name)
        tokens = _existing(tokens_file)
        if name in tokens and not replace:
            raise TokensFileError(
                f"{tokens_file} already has a token named {name!r}; pass --replace to give "
                "it a new one (the old one stops working), or pick another name."
            )
        token = new_token()
        write(tokens_file, {**tokens, name: NamedToken(name, digest(token), _now())})
        click.echo(token)
        click.echo(
            f"mai-image-mcp: token {name!r} stored in {tokens_file}; it is shown only now. "
            f"Clients send 'Authorization: Bearer <token>'.",
            err=True,
        )

    _change(run)


@tokens_command.command("list")
@_FILE_OPTION
def list_(tokens_file: Path) -> None:
    """Show each token's name and creation time (never a token or a digest)."""

    def run() -> None:
        for token in sorted(read(tokens_file).values(), key=lambda t: t.name):
            click.echo(f"{token.name}\t{token.created}")

    _change(run)


@tokens_command.command("revoke")
@click.argument("name")
@_FILE_OPTION
def revoke(name: str, tokens_file: Path) -> None:
    """Remove NAME's token; a running server refuses it from its next request."""

    def run() -> None:
        tokens = read(tokens_file)
        if name not in tokens:
            raise TokensFileError(f"{tokens_file} has no token named {name!r}.")
        write(tokens_file, {n: t for n, t in tokens.items() if n != name})
        click.echo(f"mai-image-mcp: revoked {name!r} in {tokens_file}.", err=True)

    _change(run)
