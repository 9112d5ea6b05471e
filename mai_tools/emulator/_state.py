"""The emulator's jobs, counters and fault dice; the thread-safe control handle tests use."""

from __future__ import annotations

import hashlib
import random
import secrets
import threading
import time
import uuid
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, Field

from .._models import OPERATIONS
from ._clock import EmulatorClock, SystemClock
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


class _Uuid7Source:
    """UUIDv7 (RFC 9562 section 5.7) that sort in creation order within this process.

    48 bits of Unix time in milliseconds, the version (7), a 12-bit counter in ``rand_a``
    (RFC 9562 section 6.2, method 1: it starts at a random value below 2048 each new
    millisecond and counts up within one, so ids of the same millisecond still sort), the
    variant (0b10) and 62 random bits. Python 3.11 has no ``uuid.uuid7``.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ms = 0
        self._counter = 0

    def __call__(self) -> uuid.UUID:
        with self._lock:
            ms = time.time_ns() // 1_000_000
            if ms > self._ms:
                self._ms, self._counter = ms, secrets.randbits(11)
            else:  # the same millisecond, or the clock stepped back: keep counting up
                self._counter += 1
                if self._counter > 0xFFF:
                    self._ms, self._counter = self._ms + 1, 0
            ms, counter = self._ms, self._counter
        value = (
            (ms & 0xFFFF_FFFF_FFFF) << 80
            | 0x7 << 76
            | counter << 64
            | 0b10 << 62
            | secrets.randbits(62)
        )
        return uuid.UUID(int=value)


uuid7 = _Uuid7Source()
"""Return a new time-ordered UUIDv7 (the gateway's request ids are ``<model>_<UUIDv7>``)."""

# Rendered images are cached (they are re-drawable): bounded by bytes, not by count.
IMAGE_CACHE_BYTES = 64 * 1024 * 1024
# Keys counted per fingerprint in stats().requests_per_key; any more share one bucket.
_MAX_KEYS_COUNTED = 1000


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
    source_size: tuple[int, int] | None = None  # the edit source's size as sent, if any
    epoch: int = 0  # Emulator.reset() starts a new epoch: older jobs' callbacks are not sent
    polls: int = 0
    first_seen_finished: float | None = None  # wall clock
    first_seen_finished_mono: float | None = None

    @property
    def finished(self) -> float:
        return self.created + self.duration

    @property
    def finished_mono(self) -> float:
        return self.created_mono + self.duration

    def expired(self, mono: float, ttl: float) -> bool:
        return mono - self.finished_mono > ttl

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
    at: float = Field(default=0.0, description="The emulator clock's monotonic() on arrival.")


class RateLimitRecord(BaseModel):
    """A 429 the emulator sent, so tests can check the client waited as asked."""

    path: str
    at: float
    retry_after: float
    as_date: bool


class EmulatorStats(BaseModel):
    """Counters for tests and benchmarks. Times are the emulator clock's: epoch seconds
    (``time()``) and ``monotonic()`` (see :class:`~mai_tools.emulator.ManualClock`)."""

    submissions: int = 0
    jobs_created: int = 0
    status_requests: int = 0
    polls: dict[str, int] = Field(default_factory=dict)
    finished_at: dict[str, float] = Field(default_factory=dict)
    finished_at_monotonic: dict[str, float] = Field(default_factory=dict)
    first_seen_finished_at: dict[str, float] = Field(default_factory=dict)
    first_seen_finished_at_monotonic: dict[str, float] = Field(default_factory=dict)
    webhook_deliveries: list[dict[str, Any]] = Field(
        default_factory=list,
        description=(
            "One record per callback: url, request_id, outcome (sent, failed, dropped, "
            "refused), status_code or error, at."
        ),
    )
    requests_per_key: dict[str, int] = Field(default_factory=dict)
    prompts: dict[str, str] = Field(
        default_factory=dict,
        description="Each kept job's prompt (its first 200 characters), by request id.",
    )
    requests: list[RequestRecord] = Field(default_factory=list)
    rate_limited: list[RateLimitRecord] = Field(default_factory=list)
    outcomes: dict[str, str] = Field(
        default_factory=dict, description="Final status each job ends with."
    )
    jobs_forgotten: int = Field(
        default=0, description="Jobs dropped by the retention limits (count, age, source bytes)."
    )
    downloads: int = Field(default=0, description="Image downloads asked for (/files/).")
    webhooks_pending: int = Field(
        default=0,
        description=(
            "Callbacks scheduled and not yet over (waiting for their job's end or their "
            "delay, or being sent); 0 means no callback can still arrive."
        ),
    )


@dataclass
class Emulator:
    """Thread-safe control handle: jobs, faults and counters of one emulator.

    ``clock`` times everything the emulator times (see :mod:`._clock`): give it a
    :class:`~mai_tools.emulator.ManualClock` to move time from a test instead of sleeping.
    """

    config: EmulatorConfig = field(default_factory=EmulatorConfig)
    clock: EmulatorClock = field(default_factory=SystemClock)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._faults = self.config.faults
        self._rng = random.Random(self.config.seed)
        self._jobs: dict[str, Job] = {}  # in creation order: the oldest go first
        self._epoch = 0
        self._source_bytes = 0
        self._forgotten = 0
        self._jobs_created = 0
        self._submissions = 0
        self._status_requests = 0
        self._downloads = 0
        self._webhooks_pending = 0  # not reset: the callbacks are still scheduled
        self._quota: dict[str, tuple[float, int]] = {}  # key fingerprint -> (period start, calls)
        records = self.config.max_records
        self._webhooks: deque[dict[str, Any]] = deque(maxlen=records)
        self._per_key: dict[str, int] = {}
        # (method, path, host, has_key, at): tuples, not models, to keep 100k of them small
        self._requests: deque[tuple[str, str, str, bool, float]] = deque(maxlen=records)
        self._rate_limited: deque[RateLimitRecord] = deque(maxlen=records)
        self._images: OrderedDict[tuple[str, int], bytes] = OrderedDict()
        self._image_bytes = 0

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
            self._epoch += 1
            self._jobs.clear()
            self._source_bytes = 0
            self._forgotten = 0
            self._jobs_created = 0
            self._submissions = 0
            self._status_requests = 0
            self._downloads = 0
            self._quota.clear()
            self._webhooks.clear()
            self._per_key.clear()
            self._requests.clear()
            self._rate_limited.clear()
            self._images.clear()
            self._image_bytes = 0

    def stats(self) -> EmulatorStats:
        """Counters; per-job figures cover the jobs still kept (see ``max_jobs``, ``job_ttl``)."""
        with self._lock:
            self._forget(self.clock.monotonic())
            jobs = list(self._jobs.values())
            return EmulatorStats(
                submissions=self._submissions,
                jobs_created=self._jobs_created,
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
                requests=[
                    RequestRecord(method=m, path=p, host=h, has_key=k, at=at)
                    for m, p, h, k, at in self._requests
                ],
                rate_limited=list(self._rate_limited),
                outcomes={j.request_id: j.outcome for j in jobs},
                prompts={j.request_id: j.prompt[:200] for j in jobs},
                jobs_forgotten=self._forgotten,
                downloads=self._downloads,
                webhooks_pending=self._webhooks_pending,
            )

    def job(self, request_id: str) -> Job | None:
        """The job with this id, or None if it never existed or was forgotten."""
        with self._lock:
            return self._live(request_id, self.clock.monotonic())

    # ------------------------------------------------------------------ retention

    def _live(self, request_id: str, mono: float) -> Job | None:
        """Look a job up (lock held); an expired job is forgotten on the spot."""
        self._forget(mono)
        job = self._jobs.get(request_id)
        if job is not None and job.expired(mono, self.config.job_ttl):
            self._drop(job)
            return None
        return job

    def _forget(self, mono: float) -> None:
        """Drop the oldest jobs while a retention limit is exceeded (lock held).

        Jobs leave in creation order; one that expired behind a younger-ending older job
        is dropped when it is looked up (``_live``), so no expired job is ever answered.
        """
        cfg = self.config
        while self._jobs:
            oldest = next(iter(self._jobs.values()))
            if (
                len(self._jobs) > cfg.max_jobs
                or (self._source_bytes > cfg.max_source_bytes and len(self._jobs) > 1)
                or oldest.expired(mono, cfg.job_ttl)
            ):
                self._drop(oldest)
            else:
                break

    def _drop(self, job: Job) -> None:
        del self._jobs[job.request_id]
        self._forgotten += 1
        if job.source is not None:
            self._source_bytes -= len(job.source)
        for index in range(job.num_images):
            data = self._images.pop((job.request_id, index), None)
            if data is not None:
                self._image_bytes -= len(data)

    # ------------------------------------------------------------------ image cache

    def cached_image(self, request_id: str, index: int) -> bytes | None:
        with self._lock:
            return self._images.get((request_id, index))

    def cache_image(self, request_id: str, index: int, data: bytes) -> None:
        """Keep a rendered image while its job is kept and the cache has room."""
        with self._lock:
            if request_id not in self._jobs or (request_id, index) in self._images:
                return
            self._images[(request_id, index)] = data
            self._image_bytes += len(data)
            while self._image_bytes > IMAGE_CACHE_BYTES and self._images:
                _, old = self._images.popitem(last=False)
                self._image_bytes -= len(old)

    # ------------------------------------------------------------------ used by the app

    def roll(self, rate: float) -> bool:
        if rate <= 0:
            return False
        with self._lock:
            return self._rng.random() < rate

    def record_request(self, method: str, path: str, host: str, key: str | None) -> None:
        with self._lock:
            self._requests.append(
                (method, path[:300], host[:300], key is not None, self.clock.monotonic())
            )
            if key is not None:
                fingerprint = key_hash(key)
                if fingerprint not in self._per_key and len(self._per_key) >= _MAX_KEYS_COUNTED:
                    fingerprint = "other"
                self._per_key[fingerprint] = self._per_key.get(fingerprint, 0) + 1

    def count_submission(self) -> int:
        with self._lock:
            self._submissions += 1
            return self._submissions

    def count_download(self) -> int:
        with self._lock:
            self._downloads += 1
            return self._downloads

    def quota_left(self, key: str) -> float | None:
        """Count one API call of ``key`` against the quota fault.

        Returns None while the call is within quota, else the seconds until the quota period
        ends (when the gateway replenishes it).
        """
        faults = self._faults
        if faults.quota_calls is None:
            return None
        mono = self.clock.monotonic()
        fingerprint = key_hash(key)
        with self._lock:
            start, calls = self._quota.get(fingerprint, (mono, 0))
            if mono - start >= faults.quota_period:
                start, calls = mono, 0
            calls += 1
            self._quota[fingerprint] = (start, calls)
        if calls <= faults.quota_calls:
            return None
        return max(faults.quota_period - (mono - start), 0.0)

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
        source_size: tuple[int, int] | None = None,
    ) -> Job:
        cfg = self.config
        faults = self._faults
        with self._lock:
            duration = self._rng.uniform(cfg.min_duration, cfg.max_duration)
            dice = self._rng.random()
        model_id = OPERATIONS[operation].model_id
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
            request_id=f"{model_id}_{uuid7()}",
            operation=operation,
            model_id=model_id,
            prompt=prompt,
            num_images=num_images,
            aspect_ratio=aspect_ratio,
            output_format=output_format,
            source=source,
            created=self.clock.time(),
            created_mono=self.clock.monotonic(),
            queued_for=duration * cfg.queued_fraction,
            duration=duration,
            outcome=outcome,
            error=error,
            webhook_url=webhook_url,
            source_size=source_size,
            epoch=self._epoch,
        )
        with self._lock:
            self._jobs[job.request_id] = job
            self._jobs_created += 1
            if source is not None:
                self._source_bytes += len(source)
            self._forget(job.created_mono)
        return job

    def poll(self, request_id: str, *, count: bool = True) -> tuple[Job, str] | None:
        """Return the job with its current status; a client's status read is counted."""
        mono, wall = self.clock.monotonic(), self.clock.time()
        with self._lock:
            if count:
                self._status_requests += 1
            job = self._live(request_id, mono)
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
                    path=path, at=self.clock.monotonic(), retry_after=retry_after, as_date=as_date
                )
            )

    def current(self, job: Job) -> bool:
        """False once :meth:`reset` has forgotten the job (its callback is then not sent)."""
        return job.epoch == self._epoch

    def webhook_scheduled(self) -> None:
        with self._lock:
            self._webhooks_pending += 1

    def webhook_over(self) -> None:
        with self._lock:
            self._webhooks_pending -= 1

    def record_webhook(self, delivery: dict[str, Any], job: Job | None = None) -> None:
        with self._lock:
            if job is None or job.epoch == self._epoch:
                self._webhooks.append(delivery)
