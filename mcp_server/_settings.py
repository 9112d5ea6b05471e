"""Server settings: environment variables, overridable by command-line flags."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from mai_tools._constants import API_KEY_ENV, BASE_URL_ENV
from mai_tools._exceptions import ConfigurationError
from mai_tools._images import allowed_directory
from mai_tools._webhooks import check_public_url

PreviewMode = Literal["preview", "thumbnail", "off"]
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
LOG_LEVELS: tuple[LogLevel, ...] = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

ENV_MAX_WAIT = "MAI_MCP_MAX_WAIT"
ENV_PREVIEW = "MAI_MCP_PREVIEW"
ENV_OUTPUT_DIR = "MAI_MCP_OUTPUT_DIR"
ENV_ALLOWED_DIRS = "MAI_MCP_ALLOWED_DIRS"
ENV_LOG_LEVEL = "MAI_MCP_LOG_LEVEL"
ENV_AUTH_TOKEN = "MAI_MCP_AUTH_TOKEN"  # noqa: S105  # a variable name, not a secret
ENV_AUTH_TOKEN_FILE = "MAI_MCP_AUTH_TOKEN_FILE"  # noqa: S105  # a variable name
ENV_ALLOWED_HOSTS = "MAI_MCP_ALLOWED_HOSTS"
ENV_ALLOWED_ORIGINS = "MAI_MCP_ALLOWED_ORIGINS"
ENV_RESOURCE_LINKS = "MAI_MCP_RESOURCE_LINKS"
ENV_WEBHOOK_PUBLIC_URL = "MAI_MCP_WEBHOOK_PUBLIC_URL"

MIN_TOKEN_LENGTH = 16
TOKEN_HOWTO = (
    f"Set {ENV_AUTH_TOKEN} (or --auth-token-file FILE) to a long random secret, for example "
    """the output of: python -c "import secrets; print(secrets.token_urlsafe(32))" """
    "and have clients send the header 'Authorization: Bearer <token>'."
)
_TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")  # RFC 6750 b64token: safe in any header
_HOST = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._]+)(:(\d{1,5}|\*))?")
_ORIGIN = re.compile(r"https?://(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._]+)(:(\d{1,5}|\*))?")

DEFAULT_MAX_WAIT = 45.0
"""Under the ~60 s tool timeout many MCP clients use."""

PREVIEW_SIZES: dict[str, int] = {"preview": 384, "thumbnail": 160}


class SettingsError(ValueError):
    """A server setting has an invalid value."""


def check_auth_token(token: str, source: str = ENV_AUTH_TOKEN) -> str:
    """Return ``token`` if it is usable as a bearer token, else raise :class:`SettingsError`.

    The message never quotes the token.
    """
    if len(token) < MIN_TOKEN_LENGTH:
        raise SettingsError(
            f"{source} is too short ({len(token)} characters; at least {MIN_TOKEN_LENGTH}). "
            + TOKEN_HOWTO
        )
    if not _TOKEN.fullmatch(token):
        raise SettingsError(
            f"{source} may hold only letters, digits and - . _ ~ + / (then '=' padding), so "
            "that it fits an Authorization header. " + TOKEN_HOWTO
        )
    return token


def read_token_file(path: str | os.PathLike[str], source: str = "--auth-token-file") -> str:
    """The token in a file (surrounding whitespace, such as the final newline, dropped)."""
    try:
        text = Path(path).expanduser().read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise SettingsError(
            f"Cannot read the auth token file {str(path)!r} ({source}): {reason}"
        ) from None
    token = text.strip()
    if not token:
        raise SettingsError(f"The auth token file {str(path)!r} ({source}) is empty. {TOKEN_HOWTO}")
    return check_auth_token(token, f"The token in {str(path)!r}")


def check_allowed_host(value: str) -> str:
    """An ``--allowed-host`` value: ``name``, ``name:port`` or ``name:*`` (any port)."""
    host = value.strip()
    if not _HOST.fullmatch(host):
        raise SettingsError(
            f"Allowed host {value[:80]!r} is not a Host header value: give host or host:port "
            "(host:* for any port), with no scheme or path, e.g. mcp.example.com or "
            "192.168.1.5:8000."
        )
    return host


def check_allowed_origin(value: str) -> str:
    """An ``--allowed-origin`` value: ``http(s)://name[:port]`` (``:*`` for any port)."""
    origin = value.strip().rstrip("/")
    if not _ORIGIN.fullmatch(origin):
        raise SettingsError(
            f"Allowed origin {value[:80]!r} is not an origin: give scheme://host[:port] with no "
            "path, e.g. https://app.example.com or http://localhost:*."
        )
    return origin


_BOOLEANS = {"": False, "0": False, "false": False, "no": False, "off": False}
_BOOLEANS.update({"1": True, "true": True, "yes": True, "on": True})


def _split_list(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


@dataclass(frozen=True)
class Settings:
    """Everything the server needs; ``from_env()`` reads the documented variables.

    Attributes:
        api_key: the Pixazo key (``PIXAZO_API_KEY``); None still starts the server.
        base_url: the gateway origin (``PIXAZO_BASE_URL``).
        max_wait: longest wait inside one tool call, seconds (``MAI_MCP_MAX_WAIT``).
        preview: small inline previews: ``preview`` (384 px), ``thumbnail`` (160 px) or
            ``off`` (``MAI_MCP_PREVIEW``).
        output_dir: download images here and return their paths (``MAI_MCP_OUTPUT_DIR``).
        allowed_dirs: directories ``edit_image`` may read local files from
            (``MAI_MCP_ALLOWED_DIRS``, separated by ``os.pathsep``); none by default.
        log_level: level of the server's own log on stderr (``MAI_MCP_LOG_LEVEL``). WARNING by
            default: at INFO every status poll is a log line.
        auth_token: the bearer token every HTTP request must carry (``MAI_MCP_AUTH_TOKEN``, or
            the file named by ``MAI_MCP_AUTH_TOKEN_FILE``); None means no authentication, which
            the ``mai-image-mcp`` command allows only on a loopback address. Never in reprs.
        allowed_hosts: Host header values accepted over HTTP besides the bound address and the
            localhost forms (``MAI_MCP_ALLOWED_HOSTS``, comma-separated).
        allowed_origins: Origin header values accepted over HTTP besides the localhost forms
            (``MAI_MCP_ALLOWED_ORIGINS``, comma-separated).
        resource_links: add a ``resource_link`` per image to results (``MAI_MCP_RESOURCE_LINKS``).
            Off by default: some clients (LangChain's MCP adapters) turn an image link into an
            image block, and the model provider then fetches the full-size image.
        remember_durations: keep learned job durations in the user's cache between runs (as
            ``mai-image`` does), under ``durations_key`` (default: the base URL). Off for an
            embedded ``create_server()``; the ``mai-image-mcp`` command turns it on.
        webhook_public_url: push waiting over HTTP (``MAI_MCP_WEBHOOK_PUBLIC_URL``): the URL
            the gateway reaches this server at (this replica's own, behind a load balancer);
            callbacks arrive at ``<url>/mai-tools/webhooks/<token>`` on the server's app.
    """

    api_key: str | None = field(default=None, repr=False)
    base_url: str | None = None
    max_wait: float = DEFAULT_MAX_WAIT
    preview: PreviewMode = "preview"
    output_dir: Path | None = None
    allowed_dirs: tuple[Path, ...] = ()
    heartbeat: float = 5.0
    log_level: LogLevel = "WARNING"
    remember_durations: bool = False
    durations_key: str | None = None
    auth_token: str | None = field(default=None, repr=False)
    allowed_hosts: tuple[str, ...] = ()
    allowed_origins: tuple[str, ...] = ()
    resource_links: bool = False
    webhook_public_url: str | None = None

    def __post_init__(self) -> None:
        if not (self.max_wait > 0):
            raise SettingsError(f"{ENV_MAX_WAIT} must be a positive number of seconds.")
        if self.preview not in ("preview", "thumbnail", "off"):
            raise SettingsError(f"{ENV_PREVIEW} must be preview, thumbnail or off.")
        if self.log_level not in LOG_LEVELS:
            raise SettingsError(f"{ENV_LOG_LEVEL} must be one of {', '.join(LOG_LEVELS)}.")
        try:
            dirs = tuple(allowed_directory(d) for d in self.allowed_dirs)
        except ValueError as exc:
            raise SettingsError(f"{ENV_ALLOWED_DIRS}: {exc}") from None
        object.__setattr__(self, "allowed_dirs", dirs)  # frozen: normalised once, here
        if self.auth_token is not None:
            check_auth_token(self.auth_token)
        object.__setattr__(
            self, "allowed_hosts", tuple(check_allowed_host(h) for h in self.allowed_hosts)
        )
        object.__setattr__(
            self, "allowed_origins", tuple(check_allowed_origin(o) for o in self.allowed_origins)
        )
        try:
            url = check_public_url(self.webhook_public_url)
        except ConfigurationError as exc:
            raise SettingsError(f"{ENV_WEBHOOK_PUBLIC_URL}: {exc}") from None
        object.__setattr__(self, "webhook_public_url", url)

    @classmethod
    def from_env(cls) -> Settings:
        env = os.environ
        try:
            max_wait = float(env.get(ENV_MAX_WAIT, DEFAULT_MAX_WAIT))
        except ValueError:
            raise SettingsError(f"{ENV_MAX_WAIT} must be a number of seconds.") from None
        preview = env.get(ENV_PREVIEW, "preview").strip().lower() or "preview"
        if preview not in ("preview", "thumbnail", "off"):
            raise SettingsError(f"{ENV_PREVIEW} must be preview, thumbnail or off.")
        output = env.get(ENV_OUTPUT_DIR, "").strip()
        allowed_text = env.get(ENV_ALLOWED_DIRS, "")
        allowed: tuple[str, ...] = ()
        if allowed_text.strip():
            allowed = tuple(allowed_text.split(os.pathsep))
            if any(not p.strip() for p in allowed):
                raise SettingsError(
                    f"{ENV_ALLOWED_DIRS} has an empty entry (two {os.pathsep!r} in a row, or one "
                    "at an end); an empty entry would mean the working directory. Name each "
                    f"directory, separated by {os.pathsep!r}."
                )
        token = env.get(ENV_AUTH_TOKEN, "").strip() or None
        token_file = env.get(ENV_AUTH_TOKEN_FILE, "").strip()
        if token_file:
            if token is not None:
                raise SettingsError(f"Set {ENV_AUTH_TOKEN} or {ENV_AUTH_TOKEN_FILE}, not both.")
            token = read_token_file(token_file, ENV_AUTH_TOKEN_FILE)
        log_level = env.get(ENV_LOG_LEVEL, "WARNING").strip().upper() or "WARNING"
        links = env.get(ENV_RESOURCE_LINKS, "").strip().lower()
        if links not in _BOOLEANS:
            raise SettingsError(f"{ENV_RESOURCE_LINKS} must be 1/true/yes/on or 0/false/no/off.")
        return cls(
            api_key=env.get(API_KEY_ENV) or None,
            base_url=env.get(BASE_URL_ENV) or None,
            max_wait=max_wait,
            preview=preview,  # type: ignore[arg-type]  # checked just above
            output_dir=Path(output).expanduser() if output else None,
            allowed_dirs=tuple(Path(p) for p in allowed),
            log_level=log_level,  # type: ignore[arg-type]  # checked in __post_init__
            auth_token=token,
            allowed_hosts=tuple(_split_list(env.get(ENV_ALLOWED_HOSTS, ""))),
            allowed_origins=tuple(_split_list(env.get(ENV_ALLOWED_ORIGINS, ""))),
            resource_links=_BOOLEANS[links],
            webhook_public_url=env.get(ENV_WEBHOOK_PUBLIC_URL, "").strip() or None,
        )
