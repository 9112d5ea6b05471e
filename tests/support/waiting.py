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


def until_quiet(
    count: Callable[[], int], what: str, *, spell: float, deadline: float = DEADLINE
) -> None:
    """Return once ``count()`` has not changed for ``spell`` seconds (choose it longer than the
    widest gap of whatever is counted); fail with ``what`` if it keeps changing past
    ``deadline``. Proves that something stopped, however late a busy machine lets it stop."""
    end = time.monotonic() + deadline
    last, since = count(), time.monotonic()
    while time.monotonic() - since < spell:
        assert time.monotonic() < end, f"{what} still going after {deadline} s"
        time.sleep(0.05)
        now = count()
        if now != last:
            last, since = now, time.monotonic()


async def auntil_quiet(
    count: Callable[[], int], what: str, *, spell: float, deadline: float = DEADLINE
) -> None:
    """:func:`until_quiet` for async tests: the event loop runs while it waits."""
    end = time.monotonic() + deadline
    last, since = count(), time.monotonic()
    while time.monotonic() - since < spell:
        assert time.monotonic() < end, f"{what} still going after {deadline} s"
        await anyio.sleep(0.05)
        now = count()
        if now != last:
            last, since = now, time.monotonic()
