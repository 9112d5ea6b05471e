"""Checks of single setting values: the bearer token (and its file), allowed hosts and origins,
list values. :mod:`._settings` applies them to its fields (and re-exports these names)."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field

from mai_tools._config import read_private_file
from mai_tools._exceptions import ConfigurationError

ENV_PREFIX = "MAI_MCP_"
ENV_AUTH_TOKEN = f"{ENV_PREFIX}AUTH_TOKEN"

MIN_TOKEN_LENGTH = 16
TOKEN_HOWTO = (
    f"Set {ENV_AUTH_TOKEN} (or --auth-token-file FILE) to a long random secret, for example "
    """the output of: python -c "import secrets; print(secrets.token_urlsafe(32))" """
    "and have clients send the header 'Authorization: Bearer <token>'."
)
MetricsSwitch = Annotated[
    bool,
    Field(
        description="HTTP: serve Prometheus metrics at GET /metrics, behind the token (with named "
        'tokens or OAuth: operators only). Needs pip install "mai-tools[metrics]".'
    ),
]
"""The ``metrics`` setting (:mod:`mcp_server._metrics`): its description is its ``--help``."""
_TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")  # RFC 6750 b64token: safe in any header
_HOST = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._]+)(:(\d{1,5}|\*))?")
_ORIGIN = re.compile(r"https?://(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._]+)(:(\d{1,5}|\*))?")


def check_auth_token(token: str) -> str:
    """Return ``token`` if it is usable as a bearer token, else raise ValueError.

    The message never quotes the token.
    """
    if len(token) < MIN_TOKEN_LENGTH:
        raise ValueError(
            f"the token is too short ({len(token)} characters; at least {MIN_TOKEN_LENGTH}). "
            + TOKEN_HOWTO
        )
    if not _TOKEN.fullmatch(token):
        raise ValueError(
            "the token may hold only letters, digits and - . _ ~ + / (then '=' padding), so "
            "that it fits an Authorization header. " + TOKEN_HOWTO
        )
    return token


def read_token_file(path: str | os.PathLike[str]) -> str:
    """The token in a file (surrounding whitespace, such as the final newline, dropped).

    The file is held to the API key file's rule (no access for other users: mode 600) and
    read the same way (:func:`mai_tools._config.read_private_file`).

    Raises:
        ValueError: the file cannot be read, is open to other users, is empty, or holds no
            usable token.
    """
    shown = str(path)
    try:
        token = read_private_file(
            Path(path).expanduser(),
            label="auth token file",
            shown=shown,
            advice=f"write the token into it, {TOKEN_HOWTO}",
        )
    except ConfigurationError as exc:
        raise ValueError(str(exc)) from None
    if token is None:
        if not Path(path).expanduser().exists():
            raise ValueError(f"Cannot read the auth token file {shown}: No such file or directory.")
        raise ValueError(f"The auth token file {shown} is empty. {TOKEN_HOWTO}")
    try:
        return check_auth_token(token)
    except ValueError as exc:
        raise ValueError(f"In the auth token file {shown}: {exc}") from None


def check_allowed_host(value: str) -> str:
    """An ``--allowed-host`` value: ``name``, ``name:port`` or ``name:*`` (any port)."""
    host = value.strip()
    if not _HOST.fullmatch(host):
        raise ValueError(
            f"Allowed host {value[:80]!r} is not a Host header value: give host or host:port "
            "(host:* for any port), with no scheme or path, e.g. mcp.example.com or "
            "192.168.1.5:8000."
        )
    return host


def check_allowed_origin(value: str) -> str:
    """An ``--allowed-origin`` value: ``http(s)://name[:port]`` (``:*`` for any port)."""
    origin = value.strip().rstrip("/")
    if not _ORIGIN.fullmatch(origin):
        raise ValueError(
            f"Allowed origin {value[:80]!r} is not an origin: give scheme://host[:port] with no "
            "path, e.g. https://app.example.com or http://localhost:*."
        )
    return origin


def _items(value: object, separator: str) -> list[Any]:
    """A list setting: a variable's text split at ``separator``; a flag's or caller's list."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(separator)]
    if isinstance(value, list | tuple):
        return [v.strip() if isinstance(v, str) else v for v in value]
    raise ValueError("must be a list")
