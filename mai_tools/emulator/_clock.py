"""The emulator's time: job durations, retention, quota periods and callback timing.

Everything the emulator times reads one clock object. By default that is the real clock; a
test gives the emulator a :class:`ManualClock` and moves time itself with
:meth:`ManualClock.advance`, so a job ends, a job is forgotten or a quota is replenished the
moment the test says, never because the test slept long enough (a busy machine cannot fail it).

What is not emulator time stays real: ``slow_rate``/``slow_seconds`` delay answers like a slow
network, for the client's own (real) timeouts to see, and request ids carry the real time
(UUIDv7 ids sort in creation order across every emulator in the process).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from typing import Protocol


class EmulatorClock(Protocol):
    """Where the emulator reads time and how it waits for a job's end or a late callback."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back (job ages, TTLs, quota periods)."""
        ...

    def time(self) -> float:
        """Epoch seconds (timestamps in answers, ``Retry-After`` dates, callback records)."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` of this clock's time, on the server's event loop."""
        ...


class SystemClock:
    """The real clock (the default)."""

    def monotonic(self) -> float:
        return time.monotonic()

    def time(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(seconds, 0.0))


class ManualClock:
    """Time that moves only when :meth:`advance` is called, from any thread.

    Examples:
        >>> clock = ManualClock()
        >>> with run_emulator(EmulatorConfig(min_duration=2, max_duration=2), clock=clock) as emu:
        ...     ...  # submit: the job stays QUEUED/PROCESSING however long the test takes
        ...     clock.advance(2)  # now it is COMPLETED, and its callback (if any) is sent

    Args:
        start: the epoch time the clock shows first (default: the real time now).
    """

    def __init__(self, start: float | None = None) -> None:
        self._changed = threading.Condition()
        self._elapsed = 0.0
        self._start = time.time() if start is None else start
        # (deadline in elapsed seconds, the sleeper's loop, its future)
        self._sleepers: list[tuple[float, asyncio.AbstractEventLoop, asyncio.Future[None]]] = []

    def __repr__(self) -> str:
        return f"ManualClock(elapsed={self._elapsed:g}, sleepers={self.sleepers})"

    def monotonic(self) -> float:
        return self._elapsed

    def time(self) -> float:
        return self._start + self._elapsed

    @property
    def sleepers(self) -> int:
        """How many waits (jobs in ``sync_mode``, callbacks not yet due) are on this clock."""
        with self._changed:
            return len(self._sleepers)

    def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds``; every wait that is now due wakes up."""
        if seconds < 0:
            raise ValueError("a ManualClock only moves forward")
        with self._changed:
            self._elapsed += seconds
            due = [s for s in self._sleepers if s[0] <= self._elapsed]
            self._sleepers = [s for s in self._sleepers if s[0] > self._elapsed]
            self._changed.notify_all()
        for _, loop, future in due:
            with contextlib.suppress(RuntimeError):  # the server's loop has already closed
                loop.call_soon_threadsafe(_wake, future)

    def wait_for_sleepers(self, count: int, timeout: float = 30.0) -> None:
        """Block until at least ``count`` waits are on this clock (e.g. a late callback has
        started waiting for its delay); ``timeout`` (real seconds) only guards a broken test.

        Raises:
            TimeoutError: fewer than ``count`` waits after ``timeout`` seconds.
        """
        with self._changed:
            if not self._changed.wait_for(lambda: len(self._sleepers) >= count, timeout):
                raise TimeoutError(f"fewer than {count} waits on {self!r}")

    async def sleep(self, seconds: float) -> None:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        with self._changed:
            if seconds <= 0:
                entry = None
            else:
                entry = (self._elapsed + seconds, loop, future)
                self._sleepers.append(entry)
                self._changed.notify_all()
        if entry is None:
            await asyncio.sleep(0)
            return
        try:
            await future
        finally:
            with self._changed:
                if entry in self._sleepers:  # cancelled before it was due
                    self._sleepers.remove(entry)
                    self._changed.notify_all()


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


__all__ = ["EmulatorClock", "ManualClock", "SystemClock"]
