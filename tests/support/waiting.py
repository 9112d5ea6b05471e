"""Waiting for a condition in tests, the one way a busy machine cannot break.

A test that needs something to have happened waits for that thing, polling with a generous
deadline; it never sleeps a fixed time that "should be long enough". A slow machine only makes
the wait longer; a condition that never comes fails with ``what`` at the deadline.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import anyio

DEADLINE = 30.0  # seconds: far beyond any healthy wait, well under the per-test timeout


def eventually(
    condition: Callable[[], object], what: str, *, deadline: float = DEADLINE, every: float = 0.01
) -> None:
    """Return once ``condition()`` is true; fail with ``what`` after ``deadline`` seconds."""
    end = time.monotonic() + deadline
    while not condition():
        assert time.monotonic() < end, f"gave up after {deadline} s waiting for {what}"
        time.sleep(every)


async def aeventually(
    condition: Callable[[], object], what: str, *, deadline: float = DEADLINE, every: float = 0.01
) -> None:
    """:func:`eventually` for async tests: the event loop runs while it waits."""
    end = time.monotonic() + deadline
    while not condition():
        assert time.monotonic() < end, f"gave up after {deadline} s waiting for {what}"
        await anyio.sleep(every)
