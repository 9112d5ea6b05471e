"""The OpenAI Agents SDK at its default 5 s MCP timeout against a 40 s job (issue 24).

    python benchmarks/agents_sdk_timeout.py                # this checkout's server
    python benchmarks/agents_sdk_timeout.py --job 40 --runs 1
    python benchmarks/agents_sdk_timeout.py --server-python /old/.venv/bin/python --server-cwd /old

The Agents SDK cuts an MCP tool call off after ``client_session_timeout_seconds`` (5 s by
default) and shows the model "An error occurred while running the tool. Please try again."
This runs a real ``agents.Agent`` with the SDK's own ``MCPServerStdio`` (its default timeout)
in front of ``python -m mcp_server`` and the offline emulator (started here, every job taking
``--job`` seconds), driven by a scripted model that acts as the observed models did: on the
generic error it calls the same tool again; on "still running" with a request id it calls
get_image_job; on image URLs it answers. Counted: the generic errors the model saw before it
first had a request id, the model turns, the jobs the emulator created, the wall time.

openai-agents lives in its own virtualenv, ``.ci/agents-venv`` (made on first use:
``python3 -m venv .ci/agents-venv && .ci/agents-venv/bin/python -m pip install
openai-agents==0.24.0``); this script re-runs itself there as the driver (``--drive``).
Real time: each run lasts about one job (this is a benchmark, not a test).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
VENV = ROOT / ".ci" / "agents-venv"
AGENTS = "openai-agents==0.24.0"
KEY = "sk-bench-0123456789abcdef"
GENERIC = "An error occurred while running the tool"


def _agents_python() -> Path:
    python = VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", AGENTS], check=True)
    return python


# --------------------------------------------------------------------------- the driver


def _drive(base_url: str, server_python: str, server_cwd: str, max_turns: int) -> dict[str, Any]:
    """In the agents virtualenv: one agent run; returns what the model saw."""
    from agents import Agent, ModelResponse, Runner, Usage, set_tracing_disabled
    from agents.mcp import MCPServerStdio
    from agents.models.interface import Model
    from openai.types.responses import (
        ResponseFunctionToolCall,
        ResponseOutputMessage,
        ResponseOutputText,
    )

    set_tracing_disabled(True)
    seen: list[dict[str, Any]] = []
    turns = {"n": 0}

    def call(name: str, arguments: dict[str, Any]) -> Any:
        n = turns["n"]
        return ResponseFunctionToolCall(
            type="function_call",
            id=f"fc_{n}",
            call_id=f"call_{n}",
            name=name,
            arguments=json.dumps(arguments),
        )

    def say(text: str) -> Any:
        return ResponseOutputMessage(
            type="message",
            id=f"msg_{turns['n']}",
            role="assistant",
            status="completed",
            content=[ResponseOutputText(type="output_text", text=text, annotations=[])],
        )

    class Scripted(Model):  # type: ignore[misc]
        """Acts as the observed models did (a retry on a generic error, a poll when told)."""

        async def get_response(self, *args: Any, **kwargs: Any) -> Any:
            turns["n"] += 1
            items = kwargs.get("input", args[1] if len(args) > 1 else [])
            outputs = [
                i for i in items if isinstance(i, dict) and i.get("type") == "function_call_output"
            ]
            if not outputs:
                item = call("generate_image", {"prompt": "a lighthouse at dusk"})
            else:
                text = str(outputs[-1].get("output", ""))
                seen.append({"turn": turns["n"], "output": text[:300]})
                rid = next(
                    (
                        line.split(":", 1)[1].strip()
                        for line in text.replace("\\n", "\n").splitlines()
                        if "request_id" in line and ":" in line
                    ),
                    None,
                )
                if "/files/" in text or "http" in text.split("request_id")[0]:
                    item = say("Here is your image.")
                elif rid is not None and rid.strip('"').startswith("microsoft-"):
                    item = call("get_image_job", {"request_id": rid.strip('"').strip()})
                else:  # the generic error (or anything else): try the same call again
                    item = call("generate_image", {"prompt": "a lighthouse at dusk"})
            return ModelResponse(output=[item], usage=Usage(), response_id=None)

        def stream_response(self, *args: Any, **kwargs: Any) -> Any:
            raise NotImplementedError

    async def run() -> dict[str, Any]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PIXAZO_", "MAI_MCP_"))}
        env |= {"PIXAZO_API_KEY": KEY, "PIXAZO_BASE_URL": base_url, "MAI_MCP_PREVIEW": "off"}
        server = MCPServerStdio(
            params={
                "command": server_python,
                "args": ["-m", "mcp_server"],
                "cwd": server_cwd,
                "env": env,
            },
            cache_tools_list=True,
        )  # client_session_timeout_seconds: the SDK's default
        started = time.monotonic()
        async with server:
            agent = Agent(name="artist", model=Scripted(), mcp_servers=[server])
            result = await Runner.run(
                agent, "Make me an image of a lighthouse.", max_turns=max_turns
            )
        timeout = getattr(server, "client_session_timeout_seconds", None)
        return {
            "final": str(result.final_output),
            "wall": round(time.monotonic() - started, 1),
            "turns": turns["n"],
            "seen": seen,
            "timeout": timeout,
        }

    return asyncio.run(run())


# --------------------------------------------------------------------------- the bench


def _summary(report: dict[str, Any], jobs: int) -> dict[str, Any]:
    seen = report["seen"]
    first_rid = next((i for i, s in enumerate(seen) if "request_id" in s["output"]), len(seen))
    generic = sum(1 for s in seen[:first_rid] if GENERIC in s["output"])
    return {
        "generic errors before a request id": generic,
        "model turns": report["turns"],
        "get_image_job calls": sum(1 for s in seen[first_rid:] if "request_id" in s["output"]),
        "jobs created": jobs,
        "wall s": report["wall"],
        "answered": "Here is your image" in report["final"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--job", type=float, default=40.0, help="seconds each job takes")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--max-turns", type=int, default=60)
    parser.add_argument("--server-python", default=sys.executable)
    parser.add_argument("--server-cwd", default=str(ROOT))
    parser.add_argument("--drive", metavar="BASE_URL", help=argparse.SUPPRESS)
    parser.add_argument("--json", action="store_true", help="print the raw reports too")
    args = parser.parse_args()
    if args.drive:
        report = _drive(args.drive, args.server_python, args.server_cwd, args.max_turns)
        print(json.dumps(report))
        return

    from mai_tools.emulator import EmulatorConfig, run_emulator

    python = _agents_python()
    rows = []
    for _ in range(args.runs):
        config = EmulatorConfig(api_keys=(KEY,), min_duration=args.job, max_duration=args.job)
        with run_emulator(config) as emu:
            driven = subprocess.run(
                [
                    str(python),
                    __file__,
                    "--drive",
                    emu.base_url,
                    "--server-python",
                    args.server_python,
                    "--server-cwd",
                    args.server_cwd,
                    "--max-turns",
                    str(args.max_turns),
                ],
                capture_output=True,
                text=True,
                check=False,
            )
            if driven.returncode != 0:
                sys.exit(f"the agent run failed:\n{driven.stderr[-3000:]}")
            report = json.loads(driven.stdout.strip().splitlines()[-1])
            rows.append(_summary(report, emu.control.stats().jobs_created))
            if args.json:
                print(json.dumps(report, indent=1))
    print(f"OpenAI Agents SDK ({AGENTS}), MCP timeout: the SDK's default; jobs of {args.job:g} s")
    print()
    print("| " + " | ".join(rows[0]) + " |")
    print("|" + "---|" * len(rows[0]))
    for row in rows:
        print("| " + " | ".join(str(v) for v in row.values()) + " |")


if __name__ == "__main__":
    main()
