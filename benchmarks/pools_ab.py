"""A/B of the async client's transport: one httpx pool against the spread pools, interleaved.

    python benchmarks/pools_ab.py --rounds 3 --jobs 1000 --duration 5

Each run is a fresh process running ``run.concurrency(jobs, duration)`` (the emulator in its
own process); "one" is the client as it is with no proxy in the environment except that it
gets a plain httpx pool (as with a proxy set), "spread" is the client as it is. Client CPU is
this process's ``getrusage`` (user + system) around the run. Prints one JSON line per run, with
the load average of the machine before it.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import resource
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _one(variant: str, jobs: int, duration: float) -> None:
    spec = importlib.util.spec_from_file_location("run", HERE / "run.py")
    assert spec is not None
    assert spec.loader is not None
    run = importlib.util.module_from_spec(spec)
    sys.modules["run"] = run  # its dataclasses look their module up
    spec.loader.exec_module(run)  # benchmarks/run.py

    if variant == "one":
        import mai_tools._spread_pools as module

        module.environment_names_a_proxy = lambda: True  # the plain client, with its one pool
    before = resource.getrusage(resource.RUSAGE_SELF)
    result = asyncio.run(run.concurrency(jobs, duration))
    after = resource.getrusage(resource.RUSAGE_SELF)
    result["cpu"] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    print(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--variant", choices=["one", "spread"])  # internal: one run
    args = parser.parse_args()
    if args.variant:
        _one(args.variant, args.jobs, args.duration)
        return
    for round_ in range(args.rounds):
        for variant in ("one", "spread") if round_ % 2 == 0 else ("spread", "one"):
            load = os.getloadavg()[0]
            command = [sys.executable, __file__, "--variant", variant]
            command += ["--jobs", str(args.jobs), "--duration", str(args.duration)]
            out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
            result = json.loads(out.strip().splitlines()[-1])
            keep = ("wall", "cpu", "errors", "connections_opened", "status_requests")
            row = {"round": round_, "variant": variant, "load1": round(load, 2)}
            row.update(
                {
                    k: round(v, 2) if isinstance(v, float) else v
                    for k, v in result.items()
                    if k in keep
                }
            )
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
