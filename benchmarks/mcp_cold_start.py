"""How long an MCP stdio server takes from spawn to its ``tools/list`` answer (issue 25's goal
for ``mai-image-mcp`` from a built wheel in a fresh virtualenv: 1.5 s cold).

    python benchmarks/mcp_cold_start.py                          # .venv/bin/mai-image-mcp
    python benchmarks/mcp_cold_start.py --runs 5 /tmp/fresh/bin/mai-image-mcp
    python benchmarks/mcp_cold_start.py uvx --from dist/mai_tools-0.1.0-py3-none-any.whl mai-tools

Each run spawns the command, sends ``initialize``, ``notifications/initialized`` and
``tools/list`` at once (raw JSON-RPC lines, the 2025-11-25 handshake every client speaks) and
stops the clock at the ``tools/list`` answer. It also prints the CPU time the server used from
spawn to exit: on a loaded machine the wall time mostly measures the queue for a core, the CPU
time does not. The job book is off and no key is needed (listing tools sends nothing).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MESSAGES = [
    {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-11-25",
            "capabilities": {},
            "clientInfo": {"name": "mcp_cold_start", "version": "0"},
        },
    },
    {"jsonrpc": "2.0", "method": "notifications/initialized"},
    {"jsonrpc": "2.0", "id": 2, "method": "tools/list"},
]


def once(command: list[str]) -> tuple[float, float, int]:
    """(seconds to the tools/list answer, server CPU seconds to exit, tools listed)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIXAZO_", "MAI_"))}
    env["MAI_JOB_BOOK"] = "off"
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.Popen(
        command,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    assert proc.stdin is not None
    assert proc.stdout is not None
    proc.stdin.write(b"".join(json.dumps(m).encode() + b"\n" for m in MESSAGES))
    proc.stdin.flush()
    elapsed, tools = float("nan"), 0
    for line in proc.stdout:
        answer = json.loads(line)
        if answer.get("id") == 2:
            elapsed = time.perf_counter() - start
            tools = len(answer["result"]["tools"])
            break
    proc.stdin.close()
    proc.wait(timeout=30)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return elapsed, cpu, tools


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    command = args.command or [str(ROOT / ".venv" / "bin" / "mai-image-mcp")]
    print(f"command: {' '.join(command)}; load average {os.getloadavg()[0]:.1f}")
    results = [once(command) for _ in range(args.runs)]
    for elapsed, cpu, tools in results:
        print(f"tools/list after {elapsed:.3f} s ({tools} tools); server CPU {cpu:.3f} s")
    print(f"best {min(r[0] for r in results):.3f} s wall, {min(r[1] for r in results):.3f} s CPU")


if __name__ == "__main__":
    main()
