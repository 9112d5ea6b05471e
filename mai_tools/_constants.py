"""Every default, limit, path, model id, environment variable name and header value, once.

The bottom layer: it imports nothing from mai_tools but the version. Everything above reads
its defaults from here, so a limit or a name is never spelled twice.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from ._version import __version__

if TYPE_CHECKING:
    import httpx

# --------------------------------------------------------------------------- the gateway

DEFAULT_BASE_URL: Final = "https://gateway.pixazo.ai"
GENERATE_MODEL_ID: Final = "microsoft-mai-image-2-5"
EDIT_MODEL_ID: Final = "microsoft-mai-image-2-5-edit"
GENERATE_PATH: Final = "/microsoft-mai-image-2-5/v1/microsoft-mai-image-2-5-request"
EDIT_PATH: Final = "/microsoft-mai-image-2-5-edit/v1/microsoft-mai-image-2-5-edit-request"
STATUS_PATH: Final = "/v2/requests/status/{request_id}"
API_KEY_HEADER: Final = "Ocp-Apim-Subscription-Key"
WEBHOOK_HEADER: Final = "X-Webhook-URL"

# --------------------------------------------------------------------------- environment

API_KEY_ENV: Final = "PIXAZO_API_KEY"
BASE_URL_ENV: Final = "PIXAZO_BASE_URL"
API_KEY_FILE: Final = ".pixazo/api-key"
"""Where Pixazo's own agent skill keeps the key, relative to the home directory (mode 600);
read when neither an argument nor ``PIXAZO_API_KEY`` gives one."""
API_KEY_FILE_SHOWN: Final = f"~/{API_KEY_FILE}"

# --------------------------------------------------------------------------- request limits

PROMPT_MIN_LENGTH: Final = 3
PROMPT_MAX_LENGTH: Final = 5000
MAX_IMAGES: Final = 4
DEFAULT_MAX_INPUT_BYTES: Final = 20 * 1024 * 1024
"""Largest local image (file, bytes or data URI) an edit sends."""

# --------------------------------------------------------------------------- client defaults

if TYPE_CHECKING:
    DEFAULT_REQUEST_TIMEOUT: httpx.Timeout
    """Bound on one HTTP request to the gateway (not on a whole call): 60 s, connect 10 s."""
DEFAULT_MAX_RETRIES: Final = 3
DEFAULT_WAIT_TIMEOUT: Final = 300.0
"""Default bound, in seconds, on a whole generate/edit/wait call."""
DEFAULT_MAX_CONCURRENT_REQUESTS: Final = 32
"""Requests in flight at once on one client; further jobs queue in the client (cheap), not in
httpcore's pool, whose bookkeeping grows with queued requests x connections."""
KEEPALIVE_EXPIRY: Final = 75.0
"""Poll gaps can be longer than httpx's default 5 s keep-alive expiry; keep connections warm."""
USER_AGENT: Final = f"mai-tools/{__version__} (+https://github.com/mai-tools/mai-tools)"

# --------------------------------------------------------------------------- downloads

DEFAULT_MAX_DOWNLOAD_BYTES: Final = 64 * 1024 * 1024
if TYPE_CHECKING:
    DOWNLOAD_TIMEOUT: httpx.Timeout
    """Bound on one download request: 60 s, connect 10 s."""
DOWNLOAD_HEADERS: Final = {"User-Agent": f"mai-tools/{__version__}", "Accept": "image/*"}

# --------------------------------------------------------------------------- answers we read

MAX_ANSWER_BYTES: Final = 1024 * 1024
"""Largest gateway answer (status, submit, error) read; a status is a few hundred bytes."""
MAX_INLINE_ANSWER_BYTES: Final = 160 * 1024 * 1024
"""Largest sync-mode submit answer read: up to four images inline as base64 data URIs."""
TOO_LARGE_EXTENSION: Final = "mai_tools.too_large"
"""Set (to the cap) on a response whose body was not read because it exceeded the cap."""

# --------------------------------------------------------------------------- webhook receiver

WEBHOOK_PATH: Final = "/mai-tools/webhooks"
"""Where a WebhookReceiver takes callbacks: ``<base>/mai-tools/webhooks/<token>``."""
MAX_CALLBACK_BYTES: Final = 256 * 1024
"""Largest callback body read; a status body with four image URLs is under 2 KiB."""
WEBHOOK_MAX_WAITING: Final = 100_000
"""Jobs one receiver waits for at once; beyond it a submit goes without push (polling)."""
WEBHOOK_MAX_PARKED: Final = 10_000
"""Tokens kept for jobs submitted without waiting, or whose wait ran out of time."""
WEBHOOK_PARKED_TTL: Final = 3600.0
"""Seconds a parked token is kept for a later ``wait``."""
WEBHOOK_RECENT: Final = 10_000
"""Tokens of ended waits remembered, so late duplicates get 200 (ignored), not 404."""
WEBHOOK_MAX_CONNECTIONS: Final = 256
"""Connections a receiver's own server holds open at once; more are closed on arrival."""
WEBHOOK_MAX_PER_CLIENT: Final = 64
"""Of those, from one client address (a tunnel or proxy in front is one client)."""
WEBHOOK_READ_TIMEOUT: Final = 10.0
"""Seconds a request may take to arrive (headers and body) before its connection is closed."""

DEFAULT_SAVE_TIMEOUT: Final = 300.0
"""Default bound, in seconds, on a whole save() (every image of a result, retries included)."""
DOWNLOAD_MAX_ATTEMPTS: Final = 5
"""Tries per image: the CDN answers 429 (rate limit), 5xx or drops connections under load."""
DOWNLOADS_PER_HOST: Final = 16
"""Images downloaded at once from one host by one async client, across all its saves.

An MCP server (or any shared client) saves every caller's images through one client: with 4,
a few stalled CDN connections held every slot until their deadlines and the other callers'
saves timed out (the soak benchmark: 49 of 200 MCP calls saved, 120 with 16). The CDN
(Cloudflare R2) allows hundreds of requests per second before it answers 429."""


VIEW_SIZE: Final = 384
"""``view_image``'s default long side, in pixels: enough for a model to judge an image."""
MIN_VIEW_SIZE: Final = 64
MAX_VIEW_SIZE: Final = 1024
"""The largest long side ``view_image`` takes."""


# --------------------------------------------------------------------------- httpx values

_HTTPX_TIMEOUTS: Final = {"DEFAULT_REQUEST_TIMEOUT": (60.0, 10.0), "DOWNLOAD_TIMEOUT": (60.0, 10.0)}


def __getattr__(name: str) -> Any:
    # The httpx.Timeout constants are built on first read: importing httpx costs ~50 ms, and
    # this module is imported by everything, the light ``import mai_tools`` included.
    if name not in _HTTPX_TIMEOUTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import httpx

    total, connect = _HTTPX_TIMEOUTS[name]
    value = globals()[name] = httpx.Timeout(total, connect=connect)
    return value
