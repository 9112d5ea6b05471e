"""Run the emulator with uvicorn: in a background thread (tests, demos) or in the foreground."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import uvicorn

from ._app import create_app
from ._clock import EmulatorClock, SystemClock
from ._config import EmulatorConfig
from ._state import Emulator

# Clients keep connections alive across polls; uvicorn's default 5 s would close them.
KEEP_ALIVE = 120
# On exit, answers still running (a sync_mode job, a slow fault, a wait on a ManualClock
# nobody will advance) get this long, then are cancelled: leaving never hangs on them.
SHUTDOWN_GRACE = 1  # seconds (uvicorn takes whole seconds)


@dataclass(frozen=True)
class RunningEmulator:
    """A started emulator: where it listens, a key it accepts, and its control handle."""

    base_url: str
    api_key: str
    control: Emulator

    def __repr__(self) -> str:
        return f"RunningEmulator(base_url={self.base_url!r})"

    @property
    def clock(self) -> EmulatorClock:
        """The emulator's clock (a :class:`ManualClock` if one was given: advance it)."""
        return self.control.clock


def listening_socket(host: str, port: int) -> socket.socket:
    """A bound TCP socket for uvicorn, with Nagle off.

    Starlette sends headers and body as two writes; with Nagle on, the second waits for the
    client's delayed ACK (~40 ms per response on loopback). Accepted sockets inherit the option.
    """
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def uvicorn_config(app: object, host: str, port: int, log_level: str = "warning") -> uvicorn.Config:
    return uvicorn.Config(
        app,  # type: ignore[arg-type]
        host=host,
        port=port,
        log_level=log_level,
        access_log=False,
        timeout_keep_alive=KEEP_ALIVE,
        backlog=2048,
        lifespan="on",
        timeout_graceful_shutdown=SHUTDOWN_GRACE,
    )


@contextlib.contextmanager
def run_emulator(
    config: EmulatorConfig | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    clock: EmulatorClock | None = None,
) -> Iterator[RunningEmulator]:
    """Start the emulator on ``host:port`` (a free port by default) in a background thread.

    Works from any thread, also one running an event loop (the server has its own loop).
    ``clock`` times jobs, retention, quotas and callbacks: pass a :class:`ManualClock` to
    move time with ``clock.advance(seconds)`` instead of sleeping (default: the real clock).

    Examples:
        >>> with run_emulator() as emu:  # doctest: +SKIP
        ...     client = MAIImageClient(emu.api_key, base_url=emu.base_url)
    """
    cfg = config or EmulatorConfig()
    emulator = Emulator(cfg, clock or SystemClock())
    app = create_app(emulator)
    sock = listening_socket(host, port)
    bound_port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn_config(app, host, bound_port))
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="mai-emulator", daemon=True
    )
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            sock.close()
            raise RuntimeError("the emulator did not start")
        time.sleep(0.005)
    shown_host = f"[{host}]" if ":" in host else host
    try:
        yield RunningEmulator(
            base_url=f"http://{shown_host}:{bound_port}", api_key=cfg.api_keys[0], control=emulator
        )
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
