"""Cancelled waits under CPU load leave no connection stuck in httpcore's pool.

    python benchmarks/cancel_under_load.py     # 6 rounds, about 15 s

Two busy threads load the machine; each round starts 20 waits on 60 s jobs through one async
client, cancels them after a second (several are mid-request then), and counts the pool's
connections that are neither idle nor closed a second later (httpcore leaves them ACTIVE for
good when a plain asyncio cancellation cuts an exchange off). Known and open: 3-4 rounds in 6
had some on the 2-core VM. Letting a started exchange finish after its caller left fixed it
(0 in 6) but also sent requests that were still waiting for a connection, so it was reverted;
the fix must shield only exchanges already on the wire.
"""

from __future__ import annotations

import asyncio
import threading

from mai_tools import AsyncMAIImageClient, PollPolicy
from mai_tools._transport import SpreadTransport
from mai_tools.emulator import EmulatorConfig, run_emulator

KEY = "cancel-benchmark-key"
POLL = PollPolicy(first_delay=0.1, min_interval=0.05, cold_max_interval=0.4, min_samples=5)


def _burn(stop: threading.Event) -> None:
    while not stop.is_set():
        sum(range(10_000))


async def _round(base_url: str) -> int:
    client = AsyncMAIImageClient(KEY, base_url=base_url, poll_policy=POLL)
    try:
        tasks = [asyncio.create_task(client.generate(f"cancel me {i}")) for i in range(20)]
        await asyncio.sleep(1.0)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.sleep(1.0)
        transport = client._http._transport
        assert isinstance(transport, SpreadTransport)
        return sum(1 for c in transport.connections() if not (c.is_idle() or c.is_closed()))
    finally:
        await client.aclose()


async def main() -> None:
    stop = threading.Event()
    burners = [threading.Thread(target=_burn, args=(stop,), daemon=True) for _ in range(2)]
    for thread in burners:
        thread.start()
    config = EmulatorConfig(api_keys=(KEY,), min_duration=60, max_duration=60)
    try:
        with run_emulator(config) as emu:
            stuck = [await _round(emu.base_url) for _ in range(6)]
    finally:
        stop.set()
    print(f"connections stuck after cancelling, per round: {stuck}")
    print(f"rounds with any: {sum(1 for n in stuck if n)} of {len(stuck)}")


if __name__ == "__main__":
    asyncio.run(main())
