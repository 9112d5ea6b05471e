"""The emulator in its own process, driven over its admin endpoints.

Use it where the emulator must not share a GIL with the code under test: soak tests and
benchmarks with hundreds of concurrent jobs.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx

from ._config import DEFAULT_EMULATOR_KEY, Faults
from ._state import EmulatorStats


class RemoteEmulator:
    """Control handle for an emulator reached over HTTP (``/_emulator/*``)."""

    def __init__(self, base_url: str, api_key: str) -> None:
        self.base_url = base_url
        self.api_key = api_key
        # The admin endpoints take one of the emulator's keys, like the API itself.
        self._admin = httpx.Client(
            base_url=base_url,
            timeout=60,
            headers={"Ocp-Apim-Subscription-Key": api_key},
            trust_env=False,  # loopback: never through a proxy from the environment
        )

    def __repr__(self) -> str:
        return f"RemoteEmulator(base_url={self.base_url!r})"

    def set_faults(self, faults: Faults | None = None, **changes: Any) -> Faults:
        """Replace the faults (``faults=``) and/or change some fields."""
        body = faults.model_dump(mode="json") if faults is not None else {}
        body.update(changes)
        response = self._admin.put("/_emulator/faults", json=body)
        response.raise_for_status()
        return Faults.model_validate(response.json())

    def reset(self) -> None:
        self._admin.post("/_emulator/reset").raise_for_status()

    def stats(self) -> EmulatorStats:
        response = self._admin.get("/_emulator/stats")
        response.raise_for_status()
        return EmulatorStats.model_validate(response.json())

    def close(self) -> None:
        self._admin.close()


@contextlib.contextmanager
def spawn_emulator(
    *,
    min_duration: float = 1.5,
    max_duration: float = 3.0,
    api_key: str = DEFAULT_EMULATOR_KEY,
    seed: int | None = None,
    faults: Faults | None = None,
    long_side: int | None = None,
    public_url: str | None = None,
    startup_timeout: float = 60.0,
) -> Iterator[RemoteEmulator]:
    """Run ``python -m mai_tools.emulator`` on a free loopback port; stop it on exit."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    command = [
        sys.executable,
        "-m",
        "mai_tools.emulator",
        "--port",
        str(port),
        "--key",
        api_key,
        "--min-duration",
        str(min_duration),
        "--max-duration",
        str(max_duration),
        "--log-level",
        "error",
    ]
    if seed is not None:
        command += ["--seed", str(seed)]
    if long_side is not None:
        command += ["--long-side", str(long_side)]
    if public_url is not None:
        command += ["--public-url", public_url]
    proc = subprocess.Popen(  # noqa: S603 - our own module, fixed arguments
        command,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    remote = RemoteEmulator(f"http://127.0.0.1:{port}", api_key)
    try:
        deadline = time.monotonic() + startup_timeout
        while True:
            try:
                remote.stats()
                break
            except httpx.TransportError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the emulator process did not start") from None
                time.sleep(0.1)
        if faults is not None:
            remote.set_faults(faults)
        yield remote
    finally:
        remote.close()
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
