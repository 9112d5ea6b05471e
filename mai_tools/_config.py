"""Client configuration, resolved once in the constructor: argument > environment > default.

:class:`ClientOptions` is the one frozen record of everything a client was built with; both
clients and the flow read their settings from it. The API key lives in a :class:`Secret`,
whose repr never shows it.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import ssl
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeGuard

import httpx

from ._constants import (
    API_KEY_ENV,
    API_KEY_FILE,
    API_KEY_FILE_SHOWN,
    BASE_URL_ENV,
    DEFAULT_BASE_URL,
    DEFAULT_MAX_CONCURRENT_REQUESTS,
    DEFAULT_MAX_DOWNLOAD_BYTES,
    DEFAULT_MAX_INPUT_BYTES,
    DEFAULT_MAX_RETRIES,
    DEFAULT_REQUEST_TIMEOUT,
    DEFAULT_WAIT_TIMEOUT,
    KEEPALIVE_EXPIRY,
)
from ._exceptions import ConfigurationError, InvalidArgumentError, MissingAPIKeyError
from ._urls import has_unsafe_chars, split_url


@functools.cache
def ssl_context() -> ssl.SSLContext:
    """One TLS context for every client this process makes.

    Building one loads the CA bundle (~100 ms); clients made per call (CLI commands, tool
    calls, downloads) would otherwise pay that each time. SSLContext is safe to share.
    """
    return httpx.create_ssl_context()


_PROXY_VARS = "HTTP_PROXY, HTTPS_PROXY or ALL_PROXY"


@contextlib.contextmanager
def proxy_settings_checked() -> Iterator[None]:
    """Turn what httpx raises for the environment's proxy settings into ConfigurationError.

    A new ``httpx.Client``/``AsyncClient`` reads HTTP(S)_PROXY/ALL_PROXY/NO_PROXY and builds
    its proxy transports in its constructor: an unusable value fails there, with these public
    exceptions. The proxy URL is not repeated: it may hold a password.
    """
    try:
        yield
    except ImportError as exc:  # socks5:// without the socksio package
        raise ConfigurationError(
            f"{_PROXY_VARS} names a SOCKS proxy: install socksio (pip install 'httpx[socks]') "
            "or use an http:// proxy."
        ) from exc
    except (ValueError, httpx.InvalidURL) as exc:
        raise ConfigurationError(
            f"{_PROXY_VARS} in the environment is not a usable proxy URL (http://, https:// or "
            "socks5://host:port); fix or unset it."
        ) from exc


def pool_limits() -> httpx.Limits:
    """The connection pool of both clients: it never queues, never trims by count.

    The client's own ``max_concurrent_requests`` slots bound the API requests in flight, so
    httpcore's pool is left unbounded, for three defects of httpcore 1.0.9 it then cannot hit:
    the sync pool can close a connection it has just handed to another thread when it queues
    requests or trims idle ones (encode/httpcore#1110: "Bad file descriptor", or a hang until
    the read timeout); the async pool does work per queued request on every state change
    (quadratic: 1,000 concurrent jobs took two minutes when they queued there); and a
    cancellation that lands while a response is being closed leaves that connection ACTIVE
    for good (never reused, closed only with the client), which in a bounded pool would take
    one of its slots each time until none is left. Idle connections close after
    ``KEEPALIVE_EXPIRY`` seconds, longer than the gaps between polls.
    """
    return httpx.Limits(
        max_connections=None, max_keepalive_connections=None, keepalive_expiry=KEEPALIVE_EXPIRY
    )


class Secret:
    """Holds the API key; its repr never shows it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def get(self) -> str:
        return self._value

    def scrub(self, text: str) -> str:
        """``text`` with every occurrence of the secret replaced by ``***``."""
        return text.replace(self._value, "***") if self._value and self._value in text else text

    def __repr__(self) -> str:
        return "Secret('***')"


def is_number(value: object) -> TypeGuard[int | float]:
    """An int or float that is not a bool."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def require_whole(
    value: object,
    name: str,
    *,
    minimum: int,
    error: type[ValueError] = ConfigurationError,
) -> int:
    """``value`` if it is an int (not a bool) of at least ``minimum``, else ``error``
    (ConfigurationError for client options; InvalidArgumentError for a call's arguments)."""
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise error(f"{name} must be a whole number, at least {minimum}.")
    return value


def require_positive(
    value: object,
    name: str,
    *,
    unit: str | None = None,
    error: type[ValueError] = ConfigurationError,
) -> float:
    """``value`` as a float if it is a positive, finite number (not a bool), else ``error``."""
    if not (is_number(value) and value > 0 and math.isfinite(value)):
        of = f" of {unit}" if unit else ""
        raise error(f"{name} must be a positive number{of}.")
    return float(value)


def http_timeout(timeout: object) -> httpx.Timeout:
    """The per-request timeout: an ``httpx.Timeout``, or positive finite seconds."""
    if isinstance(timeout, httpx.Timeout):
        return timeout
    if not (is_number(timeout) and 0 < timeout < math.inf):
        raise ConfigurationError(
            "request_timeout (per HTTP request) must be a positive number of seconds or an "
            f"httpx.Timeout; got {timeout!r:.40}."
        )
    return httpx.Timeout(float(timeout))


def resolve_base_url(base_url: object) -> str:
    if base_url is not None and not isinstance(base_url, str):
        raise ConfigurationError(f"base_url must be a string; got {type(base_url).__name__}.")
    value = base_url or os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL
    value = value.strip().rstrip("/")
    source = "the argument" if base_url else BASE_URL_ENV
    parts = split_url(value)
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigurationError(
            f"base_url must be an http(s) URL such as {DEFAULT_BASE_URL!r}; got {value[:100]!r} "
            f"(from {source})."
        )
    if parts.query or parts.fragment:
        raise ConfigurationError("base_url must not contain a query string or fragment.")
    if has_unsafe_chars(value):
        raise ConfigurationError(
            f"base_url (from {source}) contains spaces, tabs, control or non-ASCII characters; "
            "write the host in ASCII (punycode) and percent-encode the path."
        )
    try:
        parts.hostname.encode("idna")
        httpx.Request("GET", value)  # what every request to it will build
    except (UnicodeError, ValueError, httpx.InvalidURL):
        raise ConfigurationError(
            f"base_url (from {source}) has a malformed host name {parts.hostname[:80]!r} "
            "(an empty or over-long label, e.g. two dots in a row)."
        ) from None
    return value


def api_key_file() -> Path:
    """The vendor's key file, under the home directory as it is now (``$HOME`` followed)."""
    return Path.home() / API_KEY_FILE


def read_private_file(
    path: str | os.PathLike[str], *, label: str, shown: str, advice: str, limit: int = 4096
) -> str | None:
    """The text in a file that holds a secret, or None if there is no such file or it is blank.

    Like ssh with a private key, a file that other users may read is refused: the secret has
    leaked to them, or will. One rule and one wording for every such file (the API key file,
    the MCP server's auth token file). A UTF-8 byte order mark (Notepad writes one) is dropped
    with the surrounding whitespace: it is never part of a key or token, and it is invisible,
    so advice to write the key again would not get rid of it. The secret itself is never part
    of a message.

    Args:
        path: the file.
        label: what it is, e.g. "API key file".
        shown: how the message names it, e.g. "~/.pixazo/api-key".
        advice: what to write into a file that is not text.
        limit: the most bytes read (a key or token fits the default; a list of them may not).

    Raises:
        ConfigurationError: the file cannot be opened, is not a regular file, is readable or
            writable by other users (POSIX), or is not UTF-8 text.
    """
    try:
        # Non-blocking: a FIFO planted at the path must not hang the constructor.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except (FileNotFoundError, NotADirectoryError):  # no file (or ~/.pixazo is a file)
        return None
    except OSError as exc:
        raise ConfigurationError(
            f"Cannot read the {label} {shown}: {exc.strerror or exc}."
        ) from None
    try:
        info = os.fstat(fd)  # the file that was opened, not whatever the path is now
        if not stat.S_ISREG(info.st_mode):
            raise ConfigurationError(f"The {label} {shown} is not a file.")
        if os.name == "posix" and info.st_mode & 0o077:
            raise ConfigurationError(
                f"The {label} {shown} can be read or changed by other users "
                f"(mode {stat.S_IMODE(info.st_mode):03o}); it was not used. Run "
                f"`chmod 600 {shown}`."
            )
        raw = os.read(fd, limit)
    finally:
        os.close(fd)
    try:
        text = raw.decode("utf-8-sig").strip()
    except UnicodeDecodeError:
        raise ConfigurationError(f"The {label} {shown} is not text; {advice}.") from None
    return text or None


def read_api_key_file(path: Path) -> str | None:
    """The key in ``path``, or None if there is no such file or it is empty.

    Raises:
        ConfigurationError: see :func:`read_private_file`.
    """
    return read_private_file(
        path,
        label="API key file",
        shown=API_KEY_FILE_SHOWN,
        advice="write the key from the Pixazo dashboard into it",
    )


def resolve_api_key(api_key: object) -> Secret:
    """The key: the argument, else ``$PIXAZO_API_KEY``, else ``~/.pixazo/api-key``.

    Raises:
        MissingAPIKeyError: none of the three gives a key.
        ConfigurationError: the key is malformed, or the key file is unsafe or unreadable.
    """
    if api_key is not None and not isinstance(api_key, str):
        # Never echo the value: it may be a key in the wrong type.
        raise ConfigurationError(f"api_key must be a string; got {type(api_key).__name__}.")
    value, source = api_key, "api_key"
    if value is None:
        value, source = os.environ.get(API_KEY_ENV), API_KEY_ENV
    if api_key is None and (value is None or not value.strip()):
        value, source = read_api_key_file(api_key_file()), API_KEY_FILE_SHOWN
    if value is None or not value.strip():
        raise MissingAPIKeyError(
            f"No API key: pass api_key=..., set the {API_KEY_ENV} environment variable, or "
            f"write the key into {API_KEY_FILE_SHOWN} (mode 600). "
            "To try mai-tools without a key, run against the offline emulator: "
            "`mai-image generate '...' --emulator`, or in Python "
            "`with mai_tools.emulator.run_emulator() as emu: MAIImageClient(emu.api_key, "
            "base_url=emu.base_url)`."
        )
    value = value.strip()
    if has_unsafe_chars(value):
        raise ConfigurationError(
            f"The API key (from {source}) contains spaces, control or non-ASCII characters; "
            "copy it again from the Pixazo dashboard."
        )
    return Secret(value)


def call_timeout(timeout: object, default: float) -> float:
    """The whole-call bound of one generate/edit/wait call, in seconds."""
    if timeout is None:
        return default
    if not is_number(timeout):
        raise InvalidArgumentError(
            f"timeout must be a number of seconds; got {type(timeout).__name__}."
        )
    if not (timeout > 0) or math.isnan(timeout):
        raise InvalidArgumentError("timeout must be a positive number of seconds.")
    return float(timeout)


@dataclass(frozen=True)
class ClientOptions:
    """Everything a client is configured with, validated once. Build it with :meth:`resolve`."""

    api_key: Secret = field(repr=False)
    base_url: str
    request_timeout: httpx.Timeout
    max_retries: int
    wait_timeout: float
    max_input_image_bytes: int
    max_download_bytes: int
    max_concurrent_requests: int

    @classmethod
    def resolve(
        cls,
        api_key: object = None,
        *,
        base_url: object = None,
        request_timeout: object = DEFAULT_REQUEST_TIMEOUT,
        max_retries: object = DEFAULT_MAX_RETRIES,
        wait_timeout: object = DEFAULT_WAIT_TIMEOUT,
        max_input_image_bytes: object = DEFAULT_MAX_INPUT_BYTES,
        max_download_bytes: object = DEFAULT_MAX_DOWNLOAD_BYTES,
        max_concurrent_requests: object = DEFAULT_MAX_CONCURRENT_REQUESTS,
    ) -> ClientOptions:
        """Check every option (argument > environment > default); ConfigurationError if bad."""
        concurrency = require_whole(max_concurrent_requests, "max_concurrent_requests", minimum=1)
        key = resolve_api_key(api_key)
        origin = resolve_base_url(base_url)
        per_request = http_timeout(request_timeout)
        retries = require_whole(max_retries, "max_retries", minimum=0)
        wait_limit = require_positive(wait_timeout, "wait_timeout", unit="seconds")
        if not is_number(max_input_image_bytes) or max_input_image_bytes < 1:
            raise ConfigurationError("max_input_image_bytes must be a positive number of bytes.")
        return cls(
            api_key=key,
            base_url=origin,
            request_timeout=per_request,
            max_retries=retries,
            wait_timeout=wait_limit,
            max_input_image_bytes=int(max_input_image_bytes),
            max_download_bytes=require_whole(max_download_bytes, "max_download_bytes", minimum=1),
            max_concurrent_requests=concurrency,
        )
