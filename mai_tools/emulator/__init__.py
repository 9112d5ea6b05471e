"""An offline emulator of the Pixazo gateway for MAI Image 2.5.

Same paths, JSON shapes, status codes, auth and job lifecycle as the real gateway, with real
images drawn from each request, fault injection, and counters for tests. Use it to try
mai-tools without a key, to run the examples, and to test your own agents offline::

    from mai_tools import MAIImageClient
    from mai_tools.emulator import run_emulator

    with run_emulator() as emu:
        client = MAIImageClient(emu.api_key, base_url=emu.base_url)
        print(client.generate("a lighthouse at dawn").image_urls)

From a shell: ``python -m mai_tools.emulator --port 8000`` (or ``mai-image emulator``). In
pytest, the ``mai_emulator`` fixture (installed with mai-tools) gives a fresh emulator per
test and points ``PIXAZO_API_KEY``/``PIXAZO_BASE_URL`` at it. Tests that need time to pass
(a job's end, a TTL, a late callback) give the emulator a :class:`ManualClock` and advance it
instead of sleeping: ``run_emulator(config, clock=ManualClock())``.

The names below load on first use: the pytest plugin lives in this package, and every pytest
run loads it, so importing the package must not import Pillow, Starlette or uvicorn.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._app import create_app
    from ._clock import EmulatorClock, ManualClock
    from ._config import DEFAULT_EMULATOR_KEY, EmulatorConfig, Faults
    from ._openapi import openapi_document
    from ._remote import RemoteEmulator, spawn_emulator
    from ._server import RunningEmulator, run_emulator
    from ._state import Emulator, EmulatorStats, RateLimitRecord, RequestRecord

_LAZY = {
    "DEFAULT_EMULATOR_KEY": "._config",
    "Emulator": "._state",
    "EmulatorClock": "._clock",
    "EmulatorConfig": "._config",
    "EmulatorStats": "._state",
    "Faults": "._config",
    "ManualClock": "._clock",
    "RateLimitRecord": "._state",
    "RemoteEmulator": "._remote",
    "RequestRecord": "._state",
    "RunningEmulator": "._server",
    "create_app": "._app",
    "openapi_document": "._openapi",
    "run_emulator": "._server",
    "spawn_emulator": "._remote",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'mai_tools.emulator' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "DEFAULT_EMULATOR_KEY",
    "Emulator",
    "EmulatorClock",
    "EmulatorConfig",
    "EmulatorStats",
    "Faults",
    "ManualClock",
    "RateLimitRecord",
    "RemoteEmulator",
    "RequestRecord",
    "RunningEmulator",
    "create_app",
    "openapi_document",
    "run_emulator",
    "spawn_emulator",
]
