"""One way for every test to get an emulator: ``emulators(**config)``, a session-wide pool.

Each distinct configuration starts one in-process emulator the first time a test asks for it
and is reused (reset: no jobs, counters or faults) by every later test that asks for the same
configuration, in any module. Tests never build their own ``run_emulator`` servers for the
ordinary cases; the pool stops them all at the end of the session.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from mai_tools.emulator import EmulatorConfig, ManualClock, RunningEmulator, run_emulator


class EmulatorPool:
    """Running emulators by configuration; call it to get a reset one."""

    def __init__(self) -> None:
        self._stack = contextlib.ExitStack()
        self._running: dict[str, RunningEmulator] = {}

    def __call__(self, **config: Any) -> RunningEmulator:
        """A reset emulator for this configuration (any of EmulatorConfig's fields)."""
        settings = EmulatorConfig(**config)
        key = settings.model_dump_json()
        emu = self._running.get(key)
        if emu is None:
            emu = self._stack.enter_context(run_emulator(settings))
            self._running[key] = emu
        emu.control.reset()
        return emu

    def close(self) -> None:
        self._running.clear()
        self._stack.close()


@contextlib.contextmanager
def held_emulator(duration: float, **config: Any) -> Iterator[tuple[RunningEmulator, ManualClock]]:
    """An emulator on a :class:`ManualClock` whose jobs take ``duration`` emulated seconds:
    a job ends only when the test advances the clock, however busy the machine is."""
    clock = ManualClock()
    settings = EmulatorConfig(min_duration=duration, max_duration=duration, **config)
    with run_emulator(settings, clock=clock) as emu:
        yield emu, clock
