"""Run-wide pacing: one token bucket for every API request, and one pause for every 429.

A gateway that answers 429 is overloaded for everyone: when one job hears it, the whole run
waits (once, for the longest ``Retry-After`` heard), instead of each job backing off alone and
the others carrying on into more 429s.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable


class Pacer:
    """A token bucket (``rate`` requests per second, bursts of ``burst``) and a run-wide pause.

    ``rate=None`` means no limit (the pause still applies). Time comes from ``clock`` and waits
    from ``sleep``, so tests can drive it without sleeping.
    """

    def __init__(
        self,
        rate: float | None,
        *,
        burst: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if rate is not None and not (rate > 0 and math.isfinite(rate)):
            raise ValueError("rate must be a positive number of requests per second")
        self.rate = rate
        self.burst = burst if burst is not None else max(1.0, rate or 1.0)
        self._clock = clock
        self._tat = clock()
        self._resume_at = 0.0
        self.pauses = 0

    @property
    def paused_until(self) -> float:
        return self._resume_at

    def pause(self, seconds: float) -> bool:
        """Hold every request for ``seconds`` from now; True if this started a new pause
        (a 429 heard during a pause that already covers it changes nothing)."""
        until = self._clock() + max(seconds, 0.0)
        if until <= self._resume_at:
            return False
        fresh = self._clock() >= self._resume_at
        self._resume_at = until
        if fresh:
            self.pauses += 1
        return fresh

    def reserve(self) -> float:
        """Take the next free slot; returns how many seconds from now it starts.

        A reservation (GCRA) rather than a polled bucket: each caller sleeps once, callers
        are served in order, and hundreds of waiting jobs cost nothing while they wait.
        """
        now = self._clock()
        base = max(now, self._resume_at)
        if self.rate is None:
            return base - now
        interval = 1.0 / self.rate
        theoretical = max(self._tat, base)
        allowed = max(base, theoretical - (self.burst - 1.0) * interval)
        self._tat = theoretical + interval
        return allowed - now

    async def acquire(self, stop: asyncio.Event | None = None) -> bool:
        """Wait for this request's slot (and the end of any pause); False if ``stop`` was set."""
        wait = self.reserve()
        while True:
            if stop is not None and stop.is_set():
                return False
            if wait <= 0:
                return True
            if stop is None:
                await asyncio.sleep(wait)
            else:
                try:
                    await asyncio.wait_for(stop.wait(), wait)
                    return False
                except TimeoutError:
                    pass
            # A pause that began while this request waited for its slot holds it too.
            wait = self._resume_at - self._clock()
