"""Cancelled waits under CPU load: how often httpcore loses a connection to a cancellation.

    python benchmarks/cancel_under_load.py     # 6 rounds, about 15 s

Two busy threads load the machine; each round starts 20 waits on 60 s jobs through one async
client and cancels them after a second (several are mid-request then). httpcore 1.0.9 leaves a
connection ACTIVE for good (never reused, closed only with its client) when a cancellation lands
while a response is being closed; its debug log then says ``response_closed.failed``, counted
here (public: httpcore's documented logging, no private names). The client's pool is unbounded
(``pool_limits``), so such a connection costs a socket until the client closes, not one of the
client's request slots; a pool bounded to the slots would lose a slot each time
(``tests/core/test_connection_pool.py``).
"""

from __future__ import annotations

import asyncio
import logging
import logging.handlers
import sys
import threading

from mai_tools import AsyncMAIImageClient, PollPolicy
from mai_tools.emulator import EmulatorConfig, run_emulator

KEY = "cancel-benchmark-key"
POLL = PollPolicy(first_delay=0.1, min_interval=0.05, cold_max_interval=0.4, min_samples=5)


def _burn(stop: threading.Event) -> None:
    while not stop.is_set():
        sum(range(10_000))


def _cut_closes(log: logging.handlers.BufferingHandler) -> int:
    return sum(r.getMessage().startswith("response_closed.failed") for r in log.buffer)


async def _round(base_url: str, log: logging.handlers.BufferingHandler) -> int:
    before = _cut_closes(log)
    async with AsyncMAIImageClient(KEY, base_url=base_url, poll_policy=POLL) as client:
        tasks = [asyncio.create_task(client.generate(f"cancel me {i}")) for i in range(20)]
        await asyncio.sleep(1.0)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.sleep(1.0)
    return _cut_closes(log) - before


async def main() -> None:
    log = logging.handlers.BufferingHandler(capacity=sys.maxsize)  # keeps every record
    logger = logging.getLogger("httpcore.http11")
    logger.setLevel(logging.DEBUG)
    logger.addHandler(log)
    stop = threading.Event()
    burners = [threading.Thread(target=_burn, args=(stop,), daemon=True) for _ in range(2)]
    for thread in burners:
        thread.start()
    config = EmulatorConfig(api_keys=(KEY,), min_duration=60, max_duration=60)
    try:
        with run_emulator(config) as emu:
            lost = [await _round(emu.base_url, log) for _ in range(6)]
    finally:
        stop.set()
    print(f"connections lost after cancelling, per round: {lost}")
    print(f"rounds with any: {sum(1 for n in lost if n)} of {len(lost)}")


if __name__ == "__main__":
    asyncio.run(main())
