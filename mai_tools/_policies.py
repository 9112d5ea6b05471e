"""Pure, injectable policies: retry backoff, adaptive polling, and the clock.

Nothing here does I/O. Tests build policies with zero delays, or drive the flow with a
:class:`FakeClock`, so no test sleeps for real.
"""

from __future__ import annotations

import asyncio
import math
import random
import threading
import time
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Protocol


class Clock(Protocol):
    """Where the flow reads time and how the drivers sleep."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back (its origin does not matter)."""

    def sleep(self, seconds: float) -> None:
        """Block for ``seconds`` (the sync client's waits)."""

    async def asleep(self, seconds: float) -> None:
        """Wait ``seconds`` without blocking the event loop (the async client's waits)."""


class SystemClock:
    """The real clock (``time.monotonic``, ``time.sleep``, ``asyncio.sleep``): the default of
    every client. Pass a :class:`FakeClock` instead to run waits without sleeping."""

    def monotonic(self) -> float:
        """``time.monotonic()``."""
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        """``time.sleep(seconds)`` (nothing for zero or less)."""
        if seconds > 0:
            time.sleep(seconds)

    async def asleep(self, seconds: float) -> None:
        """``await asyncio.sleep(seconds)``."""
        await asyncio.sleep(max(seconds, 0.0))


class FakeClock:
    """A clock that jumps forward instead of sleeping: for tests and simulations.

    Args:
        start: the time it shows first.

    Attributes:
        now: the time it shows.
        sleeps: every sleep asked of it, in seconds, in order (what a test asserts on).
    """

    def __init__(self, start: float = 0.0) -> None:
        self.now = start
        self.sleeps: list[float] = []
        self._lock = threading.Lock()

    def monotonic(self) -> float:
        """:attr:`now`."""
        return self.now

    def advance(self, seconds: float) -> None:
        """Move :attr:`now` forward by ``seconds`` (never back), from any thread."""
        with self._lock:
            self.now += max(seconds, 0.0)

    def sleep(self, seconds: float) -> None:
        """Record the sleep and :meth:`advance` by it, at once."""
        self.sleeps.append(seconds)
        self.advance(seconds)

    async def asleep(self, seconds: float) -> None:
        """Record the sleep, :meth:`advance` by it, and yield to the event loop once."""
        self.sleeps.append(seconds)
        self.advance(seconds)
        await asyncio.sleep(0)


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    if math.isnan(seconds) or math.isinf(seconds):
        return None
    return max(seconds, 0.0)


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter for retryable failures.

    Attributes:
        initial_backoff: delay before the first retry, in seconds.
        max_backoff: cap on any single backoff delay.
        multiplier: growth per attempt.
        jitter: fraction of the delay that is randomised (0 = deterministic).
        max_retry_after: longest ``Retry-After`` we will honour inside a call, in seconds;
            longer requests end the call with the rate-limit error.
    """

    initial_backoff: float = 0.5
    max_backoff: float = 8.0
    multiplier: float = 2.0
    jitter: float = 0.25
    max_retry_after: float = 120.0

    def backoff(
        self, attempt: int, retry_after: float | None = None, rng: random.Random | None = None
    ) -> float:
        """Delay before retry number ``attempt`` (1-based).

        A server-given ``Retry-After`` wins over the computed backoff when it is longer.
        """
        # Clamp the exponent: after enough attempts the cap holds anyway, and multiplier ** n
        # would overflow (OverflowError after ~1,025 doublings).
        exponent = min(max(attempt - 1, 0), 64)
        try:
            base = min(self.max_backoff, self.initial_backoff * self.multiplier**exponent)
        except OverflowError:
            base = self.max_backoff
        if self.jitter > 0 and base > 0:
            r = (rng or random).random()
            base = base * (1 - self.jitter) + base * self.jitter * 2 * r
        if retry_after is not None:
            return max(base, retry_after)
        return base


@dataclass(frozen=True)
class PollPolicy:
    """How often to read the status of a running job.

    Until durations have been learned for an operation, polls start ``first_delay`` after
    submission and then back off geometrically (``cold_growth``) up to ``cold_max_interval``.
    Once at least ``min_samples`` jobs of that operation have completed, the typical range
    [q_low, q_high] of their durations is known (widened while few jobs are known: see
    ``widen_low``): one early poll catches fast failures, then
    the poller sleeps until the window and reads ``window_polls`` times through it, on a grid
    that gets denser toward the window's end (``window_taper``): a read late in the window is
    paid only by the few jobs still running, one early in it by nearly all of them, so the
    same latency costs fewer reads. Gaps stay within [``min_interval``,
    ``max_dense_interval``] inside the window; past it the reads keep the window's mean gap
    for ``tail_hold`` gaps, then the gap grows by ``tail_growth`` up to ``max_interval`` for
    jobs slower than any seen.

    With push waiting (a :class:`~mai_tools.WebhookReceiver`), :meth:`push_delay` gives the
    fallback reads instead: one ``push_margin`` after the window ends, then backing off up to
    ``push_max_interval``; while recent callbacks got lost, every ``push_lossy_interval``
    through the window.

    Attributes:
        first_delay: seconds from submission to the first poll.
        min_interval: shortest gap between two polls.
        max_interval: longest gap between two polls.
        cold_growth: growth factor of the gap while nothing is learned.
        cold_max_interval: longest gap while nothing is learned.
        window_polls: reads spread over the learned typical-duration window.
        window_taper: how the reads crowd toward the window's end: read k of n is at
            ``q_high - width * (1 - k/n) ** window_taper``; 1 spaces them evenly.
        max_dense_interval: longest gap inside the learned window.
        tail_growth: growth factor of the gap once past the learned window.
        tail_hold: past the learned window, reads keep the window's mean gap for this many
            gaps before backing off (a job just past a window learned from few samples is
            common, and found as soon as one inside it).
        low_quantile, high_quantile: which quantiles of learned durations bound the window.
        widen_low, widen_high: the small-sample correction of the window: its low end moves
            down by ``widen_low`` and its high end up by ``widen_high`` times
            ``spread / n`` (spread = q_high - q_low of the n learned durations). The quantiles
            of a few samples fall inside the true ones (the 5%-95% quantiles of 20 uniform
            durations span on average 81% of their range, the true ones 90%), and a job
            running past the window has paid every read of it; with the full history (100)
            the correction is a few percent of the spread.
        min_samples: completed jobs needed before the learned schedule is used.
        history: how many recent durations are kept per operation.
        push_margin: with push waiting, the first fallback read comes this long after the
            learned window ends (or after ``push_cold_delay`` with nothing learned).
        push_cold_delay: with push waiting and nothing learned, the first fallback read.
        push_lossy_interval: with push waiting while callbacks are being lost, the gap
            between fallback reads through the window (how late a lost callback is found).
        push_max_interval: longest gap between fallback reads with push waiting.
    """

    first_delay: float = 0.5
    min_interval: float = 0.2
    max_interval: float = 5.0
    cold_growth: float = 1.5
    cold_max_interval: float = 2.0
    window_polls: float = 9.0
    window_taper: float = 1.4
    max_dense_interval: float = 2.0
    tail_growth: float = 1.5
    tail_hold: float = 2.0
    low_quantile: float = 0.05
    high_quantile: float = 0.95
    widen_low: float = 2.0
    widen_high: float = 5.0
    min_samples: int = 5
    history: int = 100
    push_margin: float = 1.0
    push_cold_delay: float = 5.0
    push_lossy_interval: float = 2.0
    push_max_interval: float = 15.0

    @classmethod
    def fixed(cls, interval: float) -> PollPolicy:
        """A plain fixed-interval poller (the vendor's documented loop is ``fixed(5)``)."""
        return cls(
            first_delay=interval,
            min_interval=interval,
            max_interval=interval,
            cold_growth=1.0,
            cold_max_interval=interval,
            window_polls=1.0,
            max_dense_interval=interval,
            tail_growth=1.0,
            tail_hold=0.0,
            min_samples=2**31,
            push_margin=interval,
            push_cold_delay=interval,
            push_lossy_interval=interval,
            push_max_interval=interval,
        )

    @classmethod
    def immediate(cls) -> PollPolicy:
        """Poll with no delay at all: for tests over mock transports."""
        return cls.fixed(0.0)

    def next_delay(
        self, *, elapsed: float, last_gap: float | None, window: tuple[float, float] | None
    ) -> float:
        """Seconds to sleep before the next poll.

        Args:
            elapsed: seconds since the job was submitted (or the wait began).
            last_gap: the previous gap, or None before the first poll.
            window: learned (q_low, q_high) duration window, or None.
        """
        # Whatever was learned (or restored from a cache someone edited), no gap between two
        # polls is ever longer than max_interval.
        return min(self._next_delay(elapsed, last_gap, window), self.max_interval)

    def _next_delay(
        self, elapsed: float, last_gap: float | None, window: tuple[float, float] | None
    ) -> float:
        if last_gap is None:
            first = self.first_delay
            if window is not None:
                # Jobs that usually finish before the first poll: poll when they usually do.
                first = min(first, window[0])
            return max(first - elapsed, 0.0)
        if window is None:
            gap = max(last_gap * self.cold_growth, self.min_interval)
            return min(gap, self.cold_max_interval)
        low, high = window
        dense = (high - low) / max(self.window_polls, 1.0)
        dense = min(max(dense, self.min_interval), self.max_dense_interval, self.max_interval)
        if elapsed < high:
            target = self._window_read(elapsed, low, high)
            delay = max(target - elapsed, self.min_interval)
            if elapsed >= low:
                delay = min(delay, self.max_dense_interval)
            return delay
        # Slower than usual: keep the dense gap a little longer, then back off from it.
        if elapsed < high + self.tail_hold * dense - 1e-9:
            return dense
        return max(last_gap * self.tail_growth, dense)

    def _window_read(self, elapsed: float, low: float, high: float) -> float:
        """The first read of the window's grid at least ``min_interval`` after ``elapsed``.

        Read k of n is at ``high - width * (1 - k/n) ** taper``: gaps shrink toward ``high``.
        The grid depends only on the window, so a late read (a retry) does not shift it.
        """
        width = high - low
        n = max(round(self.window_polls), 1)
        taper = max(self.window_taper, 1e-3)
        if width <= 0:
            return high
        left = min(max((high - elapsed) / width, 0.0), 1.0)  # share of the window to come
        k = math.floor(n * (1 - left ** (1 / taper)) + 1e-9) + 1
        while k <= n:
            target: float = high - width * (1.0 - k / n) ** taper
            if target - elapsed >= self.min_interval or k == n:
                return target
            k += 1
        return high  # pragma: no cover - the loop returns at k == n

    def push_delay(
        self,
        *,
        elapsed: float,
        last_gap: float | None,
        window: tuple[float, float] | None,
        lossy: bool,
    ) -> float:
        """Seconds until the next fallback read while a job's callback is awaited.

        The callback normally ends the wait long before; these reads only bound what a lost
        callback costs. Sparse while callbacks arrive (``lossy`` False): one read
        ``push_margin`` after the learned window, then backing off. While recent callbacks
        got lost: a read every ``push_lossy_interval`` through the window, so a lost callback
        is noticed within about that long.

        Args:
            elapsed: seconds since the job was submitted (or the wait began).
            last_gap: seconds since the previous read, or None before the first.
            window: learned (q_low, q_high) duration window, or None.
            lossy: whether recent push waits had to find their job done without a callback.
        """
        if lossy:
            if window is None:
                return self.next_delay(elapsed=elapsed, last_gap=last_gap, window=None)
            low, high = window
            step = max(self.push_lossy_interval, self.min_interval)
            if elapsed < high:
                k = math.floor(max(elapsed - low, 0.0) / step + 1e-9) + 1
                target = low + k * step
                return min(max(target - elapsed, self.min_interval), self.push_max_interval)
            base, end = step, high
        elif window is None:
            base, end = self.push_margin, self.push_cold_delay - self.push_margin
        else:
            base, end = self.push_margin, window[1]
        first = end + base
        if elapsed < first - 1e-9:
            return max(first - elapsed, self.min_interval)
        # Past the first fallback read: back off geometrically from ``base``.
        previous = min(last_gap if last_gap is not None else base, elapsed - end)
        gap = max(previous, base) * self.tail_growth
        return min(max(gap, self.min_interval), self.push_max_interval)


@dataclass
class CallbackStats:
    """Whether recent push waits got their callback; :meth:`PollPolicy.push_delay` follows it.

    A push wait that found its job finished by a fallback read, with no callback, counts as
    a lost callback. While any of the last ``history`` waits lost one, fallback reads are
    dense; once ``history`` waits in a row got theirs, sparse again. Thread-safe.
    """

    history: int = 20
    _outcomes: deque[bool] = field(default_factory=deque)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, arrived: bool) -> None:
        with self._lock:
            self._outcomes.append(arrived)
            while len(self._outcomes) > self.history:
                self._outcomes.popleft()

    def lossy(self) -> bool:
        with self._lock:
            return not all(self._outcomes)

    def lost(self) -> int:
        """Lost callbacks among the recent waits."""
        with self._lock:
            return sum(1 for arrived in self._outcomes if not arrived)


@dataclass
class DurationStats:
    """Recent job durations per operation (``generate``, ``edit``), learned by a client.

    Thread-safe. Share one instance between clients (``durations=``) to pool what they learn;
    save it with :meth:`to_dict` and restore it with :meth:`update` so a new process polls
    adaptively from its first job.
    """

    history: int = 100
    _samples: dict[str, deque[float]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, operation: str, seconds: float) -> None:
        if not (seconds >= 0 and math.isfinite(seconds)):
            return
        with self._lock:
            bucket = self._samples.setdefault(operation, deque(maxlen=self.history))
            bucket.append(seconds)

    def learn(self, operation: str, *, server: float | None, observed: float | None) -> None:
        """Record one finished job's duration: the gateway's own (``completed_at`` minus
        ``created_at``) when it is sane, else the ``observed`` time from submission to the read
        that found it finished. A gateway figure longer than what was observed (plus 1 s of
        clock skew) is wrong, and so is a negative one."""
        duration = observed
        if server is not None and server >= 0 and (observed is None or server <= observed + 1.0):
            duration = server
        if duration is not None:
            self.record(operation, duration)

    def to_dict(self) -> dict[str, list[float]]:
        """The recent durations, oldest first, per operation (JSON-ready)."""
        with self._lock:
            return {operation: list(bucket) for operation, bucket in self._samples.items()}

    def update(self, durations: Mapping[str, Iterable[object]]) -> None:
        """Add durations (as from :meth:`to_dict`); values that are not sane seconds are skipped."""
        for operation, values in durations.items():
            if not isinstance(operation, str) or not isinstance(values, list | tuple | deque):
                continue
            for value in values:
                if isinstance(value, int | float) and not isinstance(value, bool):
                    try:
                        seconds = float(value)
                    except OverflowError:  # an integer beyond any float
                        continue
                    self.record(operation, seconds)

    def count(self, operation: str) -> int:
        with self._lock:
            return len(self._samples.get(operation, ()))

    def typical(self, operation: str) -> float | None:
        """The median of the recent durations of ``operation`` (None before the first one): what
        a "still running" answer tells a model to expect, so it neither polls impatiently nor
        gives up early."""
        with self._lock:
            recent = sorted(self._samples.get(operation, ()))
        if not recent:
            return None
        return _quantile(recent, 0.5)

    def window(self, operation: str, policy: PollPolicy) -> tuple[float, float] | None:
        """The learned (q_low, q_high) duration window, or None if too few samples."""
        with self._lock:
            recent = list(self._samples.get(operation, ()))
        if len(recent) < policy.min_samples:
            return None
        low, high = _window(recent, policy)
        # When the last few jobs all fell outside the window, the gateway has changed pace:
        # follow the recent jobs instead of waiting for a hundred old samples to age out.
        latest = recent[-_DRIFT_JOBS:]
        if len(latest) == _DRIFT_JOBS and all(not (low <= d <= high) for d in latest):
            return _window(latest, policy)
        return low, high


_DRIFT_JOBS = 3
"""Consecutive jobs outside the learned window after which the window follows recent jobs."""


def _window(samples: list[float], policy: PollPolicy) -> tuple[float, float]:
    ordered = sorted(samples)
    low = _quantile(ordered, policy.low_quantile)
    high = _quantile(ordered, policy.high_quantile)
    # The small-sample correction: n samples leave about spread / n uncovered at each end.
    step = (high - low) / len(ordered)
    return max(low - policy.widen_low * step, 0.0), high + policy.widen_high * step


def _quantile(sorted_values: list[float], q: float) -> float:
    if len(sorted_values) == 1:
        return sorted_values[0]
    pos = q * (len(sorted_values) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


__all__ = [
    "CallbackStats",
    "Clock",
    "DurationStats",
    "FakeClock",
    "PollPolicy",
    "RetryPolicy",
    "SystemClock",
    "parse_retry_after",
]
