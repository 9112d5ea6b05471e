"""The emulator's jobs, counters and fault dice; the thread-safe control handle tests use."""

from __future__ import annotations

import hashlib
import random
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, Field

from .._constants import EDIT_MODEL_ID, GENERATE_MODEL_ID
from ._config import EmulatorConfig, Faults


def iso(ts: float) -> str:
    """Epoch seconds as the gateway's timestamp format: 2026-03-31T10:00:15.000Z."""
    return (
        datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.")
        + f"{int(ts % 1 * 1000):03d}Z"
    )


def key_hash(key: str) -> str:
    """A short, stable fingerprint of a key: counters never hold the key itself."""
    return hashlib.sha256(key.encode()).hexdigest()[:12]


@dataclass
class Job:
    request_id: str
    operation: str
    model_id: str
    prompt: str
    num_images: int
    aspect_ratio: str
    output_format: str
    source: bytes | None
    created: float  # wall clock
    created_mono: float
    queued_for: float
    duration: float
    outcome: str  # COMPLETED, FAILED or ERROR
    error: str | None
    webhook_url: str | None
    polls: int = 0
    first_seen_finished: float | None = None  # wall clock
    first_seen_finished_mono: float | None = None

    @property
    def finished(self) -> float:
        return self.created + self.duration

    @property
    def finished_mono(self) -> float:
        return self.created_mono + self.duration

    def status_at(self, mono: float) -> str:
        age = mono - self.created_mono
        if age < self.queued_for:
            return "QUEUED"
        if age < self.duration:
            return "PROCESSING"
        return self.outcome


class RequestRecord(BaseModel):
    """One request the emulator saw: enough to prove where keys went, without the key."""

    method: str
    path: str
    host: str
    has_key: bool
    at: float = Field(default=0.0, description="time.monotonic() when it arrived")


class RateLimitRecord(BaseModel):
    """A 429 the emulator sent, so tests can check the client waited as asked."""

    path: str
    at: float
    retry_after: float
    as_date: bool


class EmulatorStats(BaseModel):
    """Counters for tests and benchmarks. Times are epoch seconds and time.monotonic()."""

    submissions: int = 0
    jobs_created: int = 0
    status_requests: int = 0
    polls: dict[str, int] = Field(default_factory=dict)
    finished_at: dict[str, float] = Field(default_factory=dict)
    finished_at_monotonic: dict[str, float] = Field(default_factory=dict)
    first_seen_finished_at: dict[str, float] = Field(default_factory=dict)
    first_seen_finished_at_monotonic: dict[str, float] = Field(default_factory=dict)
    webhook_deliveries: list[dict[str, Any]] = Field(default_factory=list)
    requests_per_key: dict[str, int] = Field(default_factory=dict)
    requests: list[RequestRecord] = Field(default_factory=list)
    rate_limited: list[RateLimitRecord] = Field(default_factory=list)
    outcomes: dict[str, str] = Field(
        default_factory=dict, description="Final status each job ends with."
    )


@dataclass
class Emulator:
    """Thread-safe control handle: jobs, faults and counters of one emulator."""

    config: EmulatorConfig = field(default_factory=EmulatorConfig)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._faults = self.config.faults
        self._rng = random.Random(self.config.seed)
        self._jobs: dict[str, Job] = {}
        self._submissions = 0
        self._status_requests = 0
        self._webhooks: list[dict[str, Any]] = []
        self._per_key: dict[str, int] = {}
        self._requests: list[RequestRecord] = []
        self._rate_limited: list[RateLimitRecord] = []
        self.images: dict[tuple[str, int], bytes] = {}

    # ------------------------------------------------------------------ control API

    @property
    def faults(self) -> Faults:
        return self._faults

    def set_faults(self, faults: Faults | None = None, **changes: Any) -> Faults:
        """Replace the faults (``faults=``) and/or change some fields; returns the new set."""
        with self._lock:
            base = faults if faults is not None else self._faults
            self._faults = Faults.model_validate({**base.model_dump(), **changes})
            return self._faults

    def reset(self) -> None:
        """Forget every job and counter and restore the configured faults."""
        with self._lock:
            self._faults = self.config.faults
            self._jobs.clear()
            self._submissions = 0
            self._status_requests = 0
            self._webhooks.clear()
            self._per_key.clear()
            self._requests.clear()
            self._rate_limited.clear()
            self.images.clear()

    def stats(self) -> EmulatorStats:
        with self._lock:
            jobs = list(self._jobs.values())
            return EmulatorStats(
                submissions=self._submissions,
                jobs_created=len(jobs),
                status_requests=self._status_requests,
                polls={j.request_id: j.polls for j in jobs},
                finished_at={j.request_id: j.finished for j in jobs},
                finished_at_monotonic={j.request_id: j.finished_mono for j in jobs},
                first_seen_finished_at={
                    j.request_id: j.first_seen_finished
                    for j in jobs
                    if j.first_seen_finished is not None
                },
                first_seen_finished_at_monotonic={
                    j.request_id: j.first_seen_finished_mono
                    for j in jobs
                    if j.first_seen_finished_mono is not None
                },
                webhook_deliveries=list(self._webhooks),
                requests_per_key=dict(self._per_key),
                requests=list(self._requests),
                rate_limited=list(self._rate_limited),
                outcomes={j.request_id: j.outcome for j in jobs},
            )

    def job(self, request_id: str) -> Job | None:
        with self._lock:
            return self._jobs.get(request_id)

    # ------------------------------------------------------------------ used by the app

    def roll(self, rate: float) -> bool:
        if rate <= 0:
            return False
        with self._lock:
            return self._rng.random() < rate

    def record_request(self, method: str, path: str, host: str, key: str | None) -> None:
        with self._lock:
            self._requests.append(
                RequestRecord(
                    method=method,
                    path=path,
                    host=host,
                    has_key=key is not None,
                    at=time.monotonic(),
                )
            )
            if key is not None:
                fingerprint = key_hash(key)
                self._per_key[fingerprint] = self._per_key.get(fingerprint, 0) + 1

    def count_submission(self) -> int:
        with self._lock:
            self._submissions += 1
            return self._submissions

    def create_job(
        self,
        *,
        operation: str,
        prompt: str,
        num_images: int,
        aspect_ratio: str,
        output_format: str,
        source: bytes | None,
        webhook_url: str | None,
    ) -> Job:
        cfg = self.config
        faults = self._faults
        with self._lock:
            duration = self._rng.uniform(cfg.min_duration, cfg.max_duration)
            dice = self._rng.random()
        model_id = EDIT_MODEL_ID if operation == "edit" else GENERATE_MODEL_ID
        outcome, error = "COMPLETED", None
        if faults.fail_marker and faults.fail_marker in prompt:
            outcome, error = "FAILED", "The prompt was rejected by the content policy (emulated)."
        elif faults.error_marker and faults.error_marker in prompt:
            outcome, error = "ERROR", "Internal model error (emulated); you were not charged."
        elif dice < faults.fail_rate:
            outcome, error = "FAILED", "Generation failed (emulated failure rate)."
        elif dice < faults.fail_rate + faults.error_rate:
            outcome, error = "ERROR", "System error (emulated error rate); not charged."
        job = Job(
            request_id=f"{model_id}_{uuid.uuid4()}",
            operation=operation,
            model_id=model_id,
            prompt=prompt,
            num_images=num_images,
            aspect_ratio=aspect_ratio,
            output_format=output_format,
            source=source,
            created=time.time(),
            created_mono=time.monotonic(),
            queued_for=duration * cfg.queued_fraction,
            duration=duration,
            outcome=outcome,
            error=error,
            webhook_url=webhook_url,
        )
        with self._lock:
            self._jobs[job.request_id] = job
        return job

    def poll(self, request_id: str, *, count: bool = True) -> tuple[Job, str] | None:
        """Return the job with its current status; a client's status read is counted."""
        mono, wall = time.monotonic(), time.time()
        with self._lock:
            if count:
                self._status_requests += 1
            job = self._jobs.get(request_id)
            if job is None:
                return None
            if count:
                job.polls += 1
            status = job.status_at(mono)
            if status in ("COMPLETED", "FAILED", "ERROR") and job.first_seen_finished is None:
                job.first_seen_finished = wall
                job.first_seen_finished_mono = mono
            return job, status

    def record_rate_limit(self, path: str, retry_after: float, as_date: bool) -> None:
        with self._lock:
            self._rate_limited.append(
                RateLimitRecord(
                    path=path, at=time.monotonic(), retry_after=retry_after, as_date=as_date
                )
            )

    def record_webhook(self, delivery: dict[str, Any]) -> None:
        with self._lock:
            self._webhooks.append(delivery)
