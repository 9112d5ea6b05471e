"""Emulator settings and fault injection knobs."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator

Rate = Annotated[float, Field(ge=0.0, le=1.0)]

DEFAULT_EMULATOR_KEY = "emulator-key"


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

    @model_validator(mode="after")
    def _durations(self) -> EmulatorConfig:
        if self.max_duration < self.min_duration:
            raise ValueError("max_duration must be >= min_duration")
        return self
