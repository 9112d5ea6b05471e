"""Server settings: environment variables, overridable by command-line flags."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

PreviewMode = Literal["preview", "thumbnail", "off"]
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
LOG_LEVELS: tuple[LogLevel, ...] = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

ENV_MAX_WAIT = "MAI_MCP_MAX_WAIT"
ENV_PREVIEW = "MAI_MCP_PREVIEW"
ENV_OUTPUT_DIR = "MAI_MCP_OUTPUT_DIR"
ENV_ALLOWED_DIRS = "MAI_MCP_ALLOWED_DIRS"
ENV_LOG_LEVEL = "MAI_MCP_LOG_LEVEL"

DEFAULT_MAX_WAIT = 45.0
"""Under the ~60 s tool timeout many MCP clients use."""

PREVIEW_SIZES: dict[str, int] = {"preview": 384, "thumbnail": 160}


class SettingsError(ValueError):
    """A server setting has an invalid value."""


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
        remember_durations: keep learned job durations in the user's cache between runs (as
            ``mai-image`` does), under ``durations_key`` (default: the base URL). Off for an
            embedded ``create_server()``; the ``mai-image-mcp`` command turns it on.
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

    def __post_init__(self) -> None:
        if not (self.max_wait > 0):
            raise SettingsError(f"{ENV_MAX_WAIT} must be a positive number of seconds.")
        if self.preview not in ("preview", "thumbnail", "off"):
            raise SettingsError(f"{ENV_PREVIEW} must be preview, thumbnail or off.")
        if self.log_level not in LOG_LEVELS:
            raise SettingsError(f"{ENV_LOG_LEVEL} must be one of {', '.join(LOG_LEVELS)}.")

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
        allowed = tuple(
            Path(p).expanduser() for p in env.get(ENV_ALLOWED_DIRS, "").split(os.pathsep) if p
        )
        log_level = env.get(ENV_LOG_LEVEL, "WARNING").strip().upper() or "WARNING"
        return cls(
            api_key=env.get("PIXAZO_API_KEY") or None,
            base_url=env.get("PIXAZO_BASE_URL") or None,
            max_wait=max_wait,
            preview=preview,  # type: ignore[arg-type]  # checked just above
            output_dir=Path(output).expanduser() if output else None,
            allowed_dirs=allowed,
            log_level=log_level,  # type: ignore[arg-type]  # checked in __post_init__
        )
