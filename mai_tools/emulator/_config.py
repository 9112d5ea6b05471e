"""Emulator settings and fault injection knobs."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .._urls import split_url

Rate = Annotated[float, Field(ge=0.0, le=1.0)]

DEFAULT_EMULATOR_KEY = "emulator-key"
"""The API key an emulator accepts unless its configuration names others (not a secret)."""


class Faults(BaseModel):
    """Failures the emulator injects on purpose. Rates are fractions of requests (0-1).

    Submit faults happen before a job is created: a 429 or 500 submission creates nothing.
    Poll faults apply to status reads. Change them at run time with
    ``emu.control.set_faults(...)`` or ``PUT /_emulator/faults``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    rate_limit_first_submits: int = Field(
        default=0, ge=0, description="Answer 429 to the first N submissions (no job created)."
    )
    rate_limit_submit_rate: Rate = Field(default=0.0, description="429 on this share of submits.")
    rate_limit_poll_rate: Rate = Field(default=0.0, description="429 on this share of polls.")
    retry_after: float = Field(default=1.0, ge=0, description="Retry-After sent with each 429.")
    retry_after_as_date: bool = Field(
        default=False, description="Send Retry-After as an HTTP date instead of seconds."
    )
    submit_error_rate: Rate = Field(
        default=0.0, description="500 on this share of submits (no job created)."
    )
    error_500_rate: Rate = Field(default=0.0, description="500 (JSON) on this share of polls.")
    error_502_rate: Rate = Field(default=0.0, description="502 (HTML page) on this share of polls.")
    drop_rate: Rate = Field(
        default=0.0, description="Drop the connection mid-answer on this share of polls."
    )
    slow_rate: Rate = Field(default=0.0, description="Delay this share of all API answers...")
    slow_seconds: float = Field(default=0.0, ge=0, description="...by this many seconds.")
    fail_rate: Rate = Field(default=0.0, description="Share of jobs that end FAILED.")
    error_rate: Rate = Field(default=0.0, description="Share of jobs that end ERROR.")
    fail_marker: str = Field(default="[fail]", description="A prompt containing this ends FAILED.")
    error_marker: str = Field(default="[error]", description="A prompt containing this ends ERROR.")
    insufficient_balance_keys: tuple[str, ...] = Field(
        default=(), description="Keys whose submissions get 402 Insufficient Balance."
    )
    forbidden_keys: tuple[str, ...] = Field(default=(), description="Keys that get 403 everywhere.")
    foreign_polling_url: bool = Field(
        default=False,
        description="Answer submissions with a polling_url on another origin (a key-safety test).",
    )
    quota_calls: int | None = Field(
        default=None,
        ge=0,
        description=(
            "Allow each key this many API calls per quota_period, then answer 403 'Out of call "
            "volume quota' (the gateway's quota policy) until the period ends."
        ),
    )
    quota_period: float = Field(
        default=3600.0, gt=0, description="Length of a quota period, in seconds."
    )
    cdn_rate_limit_first: int = Field(
        default=0, ge=0, description="Answer 429 to the first N image downloads (the CDN)."
    )
    cdn_rate_limit_rate: Rate = Field(
        default=0.0, description="429 with Retry-After on this share of image downloads."
    )
    webhook_drop_rate: Rate = Field(
        default=0.0, description="Never send this share of webhook callbacks."
    )
    webhook_delay_rate: Rate = Field(
        default=0.0, description="Send this share of webhook callbacks late..."
    )
    webhook_delay_seconds: float = Field(
        default=0.0, ge=0, description="...by this many seconds after the job ends."
    )
    webhook_duplicate_rate: Rate = Field(
        default=0.0, description="Send this share of webhook callbacks twice."
    )
    webhook_only_to: tuple[str, ...] = Field(
        default=(),
        description=(
            "If set, send callbacks only to URLs under these (scheme, host, port and path "
            "prefix); any other X-Webhook-URL gets none."
        ),
    )

    @field_validator("webhook_only_to")
    @classmethod
    def _receiver_urls(cls, urls: tuple[str, ...]) -> tuple[str, ...]:
        for url in urls:
            parts = split_url(url)
            if parts is None or parts.scheme.lower() not in ("http", "https") or not parts.hostname:
                raise ValueError(
                    f"webhook_only_to: {url[:100]!r} is not an http(s) URL with a host, "
                    "e.g. http://127.0.0.1:9000/hooks/"
                )
        return urls


class EmulatorConfig(BaseModel):
    """How the emulator behaves. Every field has a demo-friendly default."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    api_keys: tuple[str, ...] = Field(
        default=(DEFAULT_EMULATOR_KEY,), min_length=1, description="Accepted subscription keys."
    )
    min_duration: float = Field(default=1.5, ge=0, description="Shortest job, in seconds.")
    max_duration: float = Field(default=3.0, ge=0, description="Longest job, in seconds.")
    queued_fraction: float = Field(
        default=0.2, ge=0, le=1, description="Share of a job's duration spent QUEUED."
    )
    sync_max_wait: float = Field(
        default=60.0,
        ge=0,
        description="sync_mode waits inline up to this long, then answers 202 with a job.",
    )
    long_side: int = Field(default=1024, ge=16, le=4096, description="Long side of images, px.")
    seed: int | None = Field(default=None, description="Seed for durations and fault dice.")
    public_url: str | None = Field(
        default=None, description="Origin used in polling_url/media_url (default: the Host)."
    )
    faults: Faults = Field(default_factory=Faults)
    max_body_bytes: int = Field(
        default=32 * 1024 * 1024,
        ge=1024,
        description=(
            "Largest request body, read in chunks and refused with 413 at the cap, never "
            "buffered past it. The default fits a 20 MiB image as a base64 data URI in JSON."
        ),
    )
    max_jobs: int = Field(
        default=10_000, ge=1, description="Jobs kept; beyond it the oldest are forgotten."
    )
    job_ttl: float = Field(
        default=3600.0,
        gt=0,
        description="Seconds a job is kept after it ends; a forgotten job answers 404.",
    )
    max_source_bytes: int = Field(
        default=256 * 1024 * 1024,
        ge=0,
        description=(
            "Edit sources kept (each stored re-encoded at the output size), in bytes; beyond "
            "it the oldest jobs are forgotten."
        ),
    )
    max_source_pixels: int = Field(
        default=50_000_000,
        ge=1,
        description=(
            "Largest edit source (width x height) accepted, checked on the declared size "
            "before decoding; bigger ones get 400 (decompression bombs)."
        ),
    )
    allow_remote_webhooks: bool = Field(
        default=False,
        description=(
            "Send webhook callbacks to any host. By default only loopback addresses "
            "(127.0.0.0/8, ::1, localhost) get them."
        ),
    )
    webhook_timeout: float = Field(
        default=10.0,
        gt=0,
        description=(
            "Seconds (real time) one callback may take, waiting for its turn at its receiver "
            "included; a receiver that never answers delays only its own callbacks, by this."
        ),
    )
    max_records: int = Field(
        default=100_000,
        ge=1,
        description="Request, 429 and webhook records kept for stats(); the oldest go first.",
    )

    @model_validator(mode="after")
    def _durations(self) -> EmulatorConfig:
        if self.max_duration < self.min_duration:
            raise ValueError("max_duration must be >= min_duration")
        return self
