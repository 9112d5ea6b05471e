"""URL helpers and checks: parsing that never raises, origins, request ids, webhook URLs.

Pure functions over strings, shared by the client, the adapters and the emulator.
"""

from __future__ import annotations

import re
from typing import Final
from urllib.parse import SplitResult, quote, urlsplit

from ._constants import STATUS_PATH
from ._exceptions import InvalidArgumentError

REQUEST_ID_PATTERN: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:~-]{0,255}$")

Origin = tuple[str, str, int | None]


def split_url(url: str) -> SplitResult | None:
    """``urlsplit`` that returns None for malformed URLs (bad IPv6 brackets, bad ports)."""
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises ValueError for a non-numeric or out-of-range port
    except ValueError:
        return None
    return parts


def origin(url: str) -> Origin:
    """(scheme, host, port) of ``url``, lower-cased, with the default port filled in."""
    parts = split_url(url)
    if parts is None:
        return "", "", None
    scheme = parts.scheme.lower()
    port = parts.port or {"http": 80, "https": 443}.get(scheme)
    return scheme, (parts.hostname or "").lower(), port


def same_origin(url: str, other: str) -> bool:
    """True when both URLs have a host and the same scheme, host and port."""
    mine = origin(url)
    return bool(mine[1]) and mine == origin(other)


def has_unsafe_chars(text: str) -> bool:
    """True if ``text`` holds anything but printable ASCII (spaces and line breaks included)."""
    return any(ord(c) < 0x21 or ord(c) > 0x7E for c in text)


def check_request_id(request_id: object) -> str:
    """``request_id`` if it looks like a gateway id, else :class:`InvalidArgumentError`."""
    if not isinstance(request_id, str) or not REQUEST_ID_PATTERN.match(request_id):
        shown = request_id[:80] if isinstance(request_id, str) else type(request_id).__name__
        raise InvalidArgumentError(
            f"Invalid request id {shown!r}: expected the id returned at submission, e.g. "
            "'microsoft-mai-image-2-5_019d...' (letters, digits, '.', '_', ':', '-')."
        )
    return request_id


def status_path(request_id: str) -> str:
    """The status endpoint's path for ``request_id`` (percent-encoded)."""
    return STATUS_PATH.format(request_id=quote(request_id, safe=""))


def check_webhook_url(webhook_url: object) -> str | None:
    """``webhook_url`` if it is a usable http(s) URL for the X-Webhook-URL header."""
    if webhook_url is None:
        return None
    if not isinstance(webhook_url, str):
        raise InvalidArgumentError(
            f"webhook_url must be a string URL; got {type(webhook_url).__name__}."
        )
    parts = split_url(webhook_url)
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidArgumentError(
            f"webhook_url must be an http(s) URL; got {webhook_url[:100]!r}."
        )
    # It travels as an HTTP header: printable ASCII only (percent-encode anything else).
    if has_unsafe_chars(webhook_url):
        raise InvalidArgumentError(
            "webhook_url must be printable ASCII without spaces or line breaks; "
            "percent-encode other characters (e.g. %C3%A9 for é)."
        )
    return webhook_url
