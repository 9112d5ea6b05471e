"""Mixed-fault soak through every adapter: the async client, the LangChain tools, the MCP server.

    python benchmarks/soak.py            # 3 x 200 calls (about 3 minutes)
    python benchmarks/soak.py --quick    # 3 x 30 calls, a smoke run
    python benchmarks/soak.py --no-neighbours   # without the hostile neighbours (a baseline)

The emulator runs in its own process with gateway faults on (429s, 5xx, HTML 502s, dropped and
slow answers, FAILED and ERROR jobs, refused submits, CDN 429s). In front of it, in a third
process, sits a hostile front of our own (``--front``): every request of the client goes
through it, and so does every media URL (the emulator's ``public_url`` is the front). The
front forwards and misbehaves on purpose:

- media downloads stall, drip a byte at a time, stop half-way, answer 429 (a long
  ``Retry-After`` too), 500, drop the connection, serve a decompression bomb (a PNG declaring
  30000x30000 pixels) or an HTML page instead of an image;
- status reads now and then carry another job's ``request_id``, a truncated body, an HTML page
  with status 200, a 429 with ``Retry-After: 120``, or a finished job whose media URLs are
  malformed (``http://[::1/...``, a space in the host, a bare ``xn--``, a port past 65535,
  odd IPv6 brackets, an empty string);
- a few submits reach the gateway (the job is created, and may be charged) but their answer is
  never delivered: the connection drops.

Beside them, hostile neighbours (issue 23; a fourth process, ``--neighbour``, plus tasks here):

- an FD flood on the async client's :class:`~mai_tools.WebhookReceiver` (every client call
  waits by push): connections from three other loopback addresses that send half a request
  and reconnect whenever the receiver closes them;
- stalled callback receivers: jobs submitted straight to the emulator whose callbacks go to a
  server that accepts and never answers, so the emulator's callback sender holds them;
- a session flood on the MCP server: an authenticated neighbour opens MCP sessions and never
  closes them (the server runs with ``--max-sessions 100 --session-idle-timeout 10`` so the
  flood fills the cap within the run); when it stops, a new client measures how long it is
  locked out.

Every call has a budget (``--budget``, seconds: the async client's generate ``timeout`` plus a
save with what is left, the LangChain tools' ``wait_timeout``, the MCP server's ``max_wait``).
Checked, per call, against what the front and the emulator saw:

- duplicates: jobs created beyond one per call (must be 0);
- calls past their budget: calls that returned more than ``--tolerance`` seconds after it
  (must be 0), with the largest overshoot;
- finished jobs reported as failures: the emulator completed the call's job, yet the answer
  was a failure (must be 0); a running job answered as "try again" (must be 0);
- escapes: an exception outside the documented tree (a raw httpx, Pillow, IDNA error...);
- peak RSS of this process (the async client and the LangChain tools) and of the MCP server,
  which runs as a deployment runs it: ``mai-image-mcp`` over streamable HTTP with a bearer
  token, in its own process, called through the MCP SDK's client.

Then every call answered "still running" is picked up by its request id (``wait``), to show
that no job was lost. Writes benchmarks/out/soak.md and soak.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import random
import resource
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

OUT = Path(__file__).resolve().parent / "out"
KEY = "soak-benchmark-key-0123456789"
STATUS_PREFIX = "/v2/requests/status/"
MALFORMED_MEDIA = (
    "http://[::1/broken.png",
    "https://exa mple.com/a.png",
    "https://xn--/a.png",
    # Issue 23: a port past 65535 (a raw OverflowError on async saves), bracket forms, empty.
    "http://127.0.0.1:99999999/x.png",
    "http://[::1]:65536/x.png",
    "http://[::1]]/x.png",
    "",
)

# ---------------------------------------------------------------------------------------------
# The hostile front (its own process)
# ---------------------------------------------------------------------------------------------

# Media behaviour shares (the rest is served as it came from the emulator).
MEDIA_FAULTS: dict[str, float] = {
    "stall": 0.05,
    "drip": 0.05,
    "half": 0.03,
    "429": 0.08,
    "429-long": 0.02,
    "500": 0.05,
    "drop": 0.04,
    "bomb": 0.03,
    "html": 0.02,
}
# Status read oddities (applied to 2xx answers from the emulator).
STATUS_FAULTS: dict[str, float] = {
    "foreign-id": 0.02,
    "truncated": 0.02,
    "html-200": 0.01,
    "429-long": 0.01,
}
MALFORMED_MEDIA_RATE = 0.03  # of COMPLETED status answers
LOST_SUBMIT_RATE = 0.015  # submits forwarded, answer dropped


def _bomb_png(side: int = 30_000) -> bytes:
    """A small, valid PNG whose header declares ``side`` x ``side`` pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    rows = zlib.compress(b"\0" * 4096)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")
    )


def _http(code: int, body: bytes, content_type: str, extra: dict[str, str] | None = None) -> bytes:
    lines = [f"HTTP/1.1 {code} X", f"Content-Length: {len(body)}", f"Content-Type: {content_type}"]
    lines += [f"{k}: {v}" for k, v in (extra or {}).items()]
    lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


@dataclass
class Front:
    upstream: str
    seed: int
    http: httpx.AsyncClient = field(init=False)
    rng: random.Random = field(init=False)
    created: dict[str, list[str]] = field(default_factory=dict)  # prompt -> request ids
    lost: list[str] = field(default_factory=list)  # prompts whose submit answer was dropped
    media: Counter[str] = field(default_factory=Counter)
    status: Counter[str] = field(default_factory=Counter)
    ids: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        limits = httpx.Limits(max_connections=400, max_keepalive_connections=100)
        self.http = httpx.AsyncClient(base_url=self.upstream, timeout=60, limits=limits)

    def pick(self, shares: dict[str, float]) -> str:
        roll = self.rng.random()
        for name, share in shares.items():
            if roll < share:
                return name
            roll -= share
        return "ok"

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, target, _ = lines[0].split(" ", 2)
            headers: dict[str, str] = {}
            for line in lines[1:]:
                if ":" in line:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            await self.route(method, target, headers, body, writer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        except httpx.HTTPError:
            self.status["upstream-dropped"] += 1  # the emulator's own faults: pass them on
        except asyncio.CancelledError:
            pass
        finally:
            writer.close()

    async def route(
        self,
        method: str,
        target: str,
        headers: dict[str, str],
        body: bytes,
        writer: asyncio.StreamWriter,
    ) -> None:
        if target == "/_front/stats":
            stats = {
                "created": self.created,
                "lost": self.lost,
                "media": self.media,
                "status": self.status,
            }
            writer.write(_http(200, json.dumps(stats).encode(), "application/json"))
            return
        if method == "GET" and target.startswith("/files/"):
            await self.serve_media(target, writer)
            return
        forward = {
            k: v
            for k, v in headers.items()
            if k in ("content-type", "ocp-apim-subscription-key", "x-webhook-url")
        }
        answer = await self.http.request(method, target, headers=forward, content=body)
        payload, kind = answer.content, answer.headers.get("content-type", "application/json")
        extra = {}
        if "retry-after" in answer.headers:
            extra["Retry-After"] = answer.headers["retry-after"]
        if method == "POST":
            prompt = str(json.loads(body or b"{}").get("prompt", ""))
            request_id = None
            if answer.is_success:
                with contextlib.suppress(ValueError, AttributeError):
                    request_id = answer.json().get("request_id")
            if request_id:
                self.created.setdefault(prompt, []).append(str(request_id))
                self.ids.append(str(request_id))
                if self.rng.random() < LOST_SUBMIT_RATE:
                    self.lost.append(prompt)
                    return  # the job exists; its answer never arrives
        elif method == "GET" and target.startswith(STATUS_PREFIX) and answer.is_success:
            fault = self.pick(STATUS_FAULTS)
            self.status[fault] += 1
            if fault == "foreign-id" and self.ids:
                data = answer.json()
                data["request_id"] = self.rng.choice(self.ids)
                payload = json.dumps(data).encode()
            elif fault == "truncated":
                payload = payload[: max(1, len(payload) // 2)]
            elif fault == "html-200":
                payload, kind = b"<html><body>Service Unavailable</body></html>", "text/html"
            elif fault == "429-long":
                writer.write(_http(429, b'{"error":"throttled"}', kind, {"Retry-After": "120"}))
                return
            else:
                data = answer.json()
                output = data.get("output") or {}
                finished = data.get("status") == "COMPLETED" and output.get("media_url")
                if finished and self.rng.random() < MALFORMED_MEDIA_RATE:
                    output["media_url"] = [self.rng.choice(MALFORMED_MEDIA)]
                    self.status["malformed-media"] += 1
                    payload = json.dumps(data).encode()
        writer.write(_http(answer.status_code, payload, kind, extra))
        await writer.drain()

    async def serve_media(self, target: str, writer: asyncio.StreamWriter) -> None:
        fault = self.pick(MEDIA_FAULTS)
        self.media[fault] += 1
        if fault == "stall":
            await asyncio.sleep(3600)
        elif fault == "drop":
            return
        elif fault in ("429", "429-long"):
            wait = "120" if fault == "429-long" else "0.5"
            writer.write(_http(429, b"error code: 1015", "text/plain", {"Retry-After": wait}))
        elif fault == "500":
            writer.write(_http(500, b"internal error", "text/plain"))
        elif fault == "bomb":
            writer.write(_http(200, _bomb_png(), "image/png"))
        elif fault == "html":
            writer.write(_http(200, b"<html>Just a moment...</html>", "text/html"))
        else:
            answer = await self.http.get(target)
            kind = answer.headers.get("content-type", "image/png")
            if fault == "ok" or not answer.is_success:
                writer.write(_http(answer.status_code, answer.content, kind))
            else:  # drip / half: the headers promise the whole image, the bytes do not come
                whole = _http(200, answer.content, kind)
                cut = whole.index(b"\r\n\r\n") + 4 + 16
                writer.write(whole[:cut])
                await writer.drain()
                for byte in whole[cut:]:
                    await asyncio.sleep(0.25 if fault == "drip" else 3600)
                    writer.write(bytes([byte]))
                    await writer.drain()
        await writer.drain()


async def _serve_front(upstream: str, port: int, seed: int) -> None:
    front = Front(upstream, seed)
    server = await asyncio.start_server(front.handle, "127.0.0.1", port, backlog=1024)
    async with server:
        await server.serve_forever()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_until_up(url: str, proc: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            httpx.get(url, timeout=2)
            return
        except httpx.TransportError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{what} did not start") from None
            time.sleep(0.1)


@contextlib.contextmanager
def hostile_front(upstream: str, port: int, seed: int) -> Iterator[str]:
    command = [sys.executable, __file__, "--front", upstream, "--port", str(port)]
    command += ["--seed", str(seed)]
    proc = subprocess.Popen(command)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_until_up(f"{url}/_front/stats", proc, "the hostile front")
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


# ---------------------------------------------------------------------------------------------
# The hostile neighbours: an FD flood on the receiver, stalled callback receivers (own process)
# ---------------------------------------------------------------------------------------------

HALF_SENT = b"POST /mai-tools/webhooks/" + b"A" * 43 + b" HTTP/1.1\r\nHost: hooks\r\n"
FLOOD_SOURCES = ("127.0.0.2", "127.0.0.3", "127.0.0.4")
FLOOD_PER_SOURCE = 100  # 300 in all: past the receiver's 64 per client, 192 under its 256
MCP_MAX_SESSIONS = 100
MCP_SESSION_IDLE = 15.0
STALLED_JOBS_PER_S = 8.0
SESSION_FLOODERS = 8  # sessions being opened at once (each flooder: one after another)
FLOOD_RECONNECT = 1.0  # seconds before a flood connection the receiver closed comes back


async def _half_sent(port: int, source: str, stats: Counter[str]) -> None:
    """One flood connection at a time from ``source``: half a request, held until the
    receiver closes it; then another."""
    while True:
        writer = None
        try:
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", port, local_addr=(source, 0)
            )
            writer.write(HALF_SENT)
            await writer.drain()
            stats["flood-opened"] += 1
            await reader.read()  # b"" once the receiver closes it
        except OSError:
            pass
        finally:
            stats["flood-closed-by-receiver"] += 1
            if writer is not None:
                writer.close()
        await asyncio.sleep(FLOOD_RECONNECT)


async def _serve_neighbour(receiver_port: int, stall_port: int) -> None:
    stats: Counter[str] = Counter()

    async def stalled(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        stats["stalled-callbacks-held"] += 1
        try:
            await asyncio.sleep(3600)  # a callback receiver that never answers
        except asyncio.CancelledError:
            pass
        finally:
            writer.close()

    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    server = await asyncio.start_server(stalled, "127.0.0.1", stall_port, backlog=1024)
    async with server:
        flood = [
            asyncio.create_task(_half_sent(receiver_port, source, stats))
            for source in FLOOD_SOURCES
            for _ in range(FLOOD_PER_SOURCE)
        ]
        await stop.wait()
        for task in flood:
            task.cancel()
    print(json.dumps(stats), flush=True)


@contextlib.contextmanager
def neighbour(
    receiver_port: int, stall_port: int, seed: int, *, enabled: bool = True
) -> Iterator[dict[str, int]]:
    """The neighbour process; the dict it yields gets its counts when it ends."""
    if not enabled:
        yield {}
        return
    command = [sys.executable, __file__, "--neighbour", str(receiver_port)]
    command += ["--port", str(stall_port), "--seed", str(seed)]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE)
    counts: dict[str, int] = {}
    try:
        deadline = time.monotonic() + 60
        while True:  # up once its stalled receiver listens
            with contextlib.suppress(OSError):
                socket.create_connection(("127.0.0.1", stall_port), timeout=1).close()
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the neighbour did not start")
            time.sleep(0.1)
        yield counts
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
        with contextlib.suppress(ValueError):
            counts.update(json.loads(out or b"{}"))


async def _stalled_callbacks(emu_url: str, stall_url: str, sent: Counter[str]) -> None:
    """Jobs straight to the emulator (not through the front: not the soak's calls) whose
    callbacks go to the stalled receiver."""
    from mai_tools import AsyncMAIImageClient, GenerateRequest, MAIImageError

    async with AsyncMAIImageClient(KEY, base_url=emu_url) as client:
        n = 0
        while True:
            n += 1
            request = GenerateRequest(prompt=f"a job of a stalled receiver {n}")
            try:
                await client.submit(request, webhook_url=f"{stall_url}/cb/{n}")
                sent["stalled-jobs"] += 1
            except MAIImageError:
                sent["stalled-jobs-refused"] += 1  # the emulator's own faults
            await asyncio.sleep(1 / STALLED_JOBS_PER_S)


MCP_ACCEPT = {"Accept": "application/json, text/event-stream"}
FLOODER = {"name": "session-flood", "version": "1"}
# An MCP initialize request: each opens a session the flooder never closes.
INITIALIZE = {"jsonrpc": "2.0", "id": 1, "method": "initialize"}
INITIALIZE["params"] = {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": FLOODER}


async def _open_session(http: httpx.AsyncClient, url: str) -> int:
    """One MCP session opened (and never closed): the HTTP status."""
    try:
        answer = await http.post(url, json=INITIALIZE)
    except httpx.HTTPError:
        return 0
    return answer.status_code


async def _session_flood(http: httpx.AsyncClient, url: str, seen: Counter[str]) -> None:
    while True:
        seen[f"session-flood-{await _open_session(http, url)}"] += 1


async def _lockout(http: httpx.AsyncClient, url: str) -> float:
    """Seconds until a new MCP client gets a session, asked every 0.25 s."""
    started = time.monotonic()
    while await _open_session(http, url) != 200:
        if time.monotonic() - started > 600:
            return float("inf")
        await asyncio.sleep(0.25)
    return time.monotonic() - started


def _deliveries(records: list[dict[str, Any]], prefix: str) -> dict[str, int]:
    """The emulator's callback records to URLs under ``prefix``, by outcome."""
    return dict(
        Counter(str(r.get("outcome")) for r in records if str(r.get("url")).startswith(prefix))
    )


def _descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


# ---------------------------------------------------------------------------------------------
# The calls (this process)
# ---------------------------------------------------------------------------------------------


@dataclass
class Call:
    adapter: str
    prompt: str
    budget: float
    elapsed: float = 0.0
    outcome: str = ""  # saved, not-saved, running, failed, refused, lost-answer, escaped
    request_id: str | None = None
    text: str = ""


def _source_png(directory: Path) -> Path:
    from PIL import Image

    directory.mkdir()
    path = directory / "source.png"
    Image.new("RGB", (96, 64), (200, 60, 30)).save(path)
    return path


async def _client_call(
    call: Call, base_url: str, out: Path, source: Path, edit: bool, webhooks: Any
) -> None:
    from mai_tools import (
        AsyncMAIImageClient,
        DownloadError,
        JobFailedError,
        JobTimeoutError,
        MAIImageError,
    )

    started = time.monotonic()
    try:
        async with AsyncMAIImageClient(KEY, base_url=base_url, webhooks=webhooks) as client:
            if edit:
                result = await client.edit(call.prompt, source, timeout=call.budget)
            else:
                result = await client.generate(call.prompt, num_images=2, timeout=call.budget)
            call.request_id = result.request_id
            left = call.budget - (time.monotonic() - started)
            try:
                await client.save(result, out, timeout=max(left, 0.01))
                call.outcome = "saved"
            except DownloadError as exc:
                call.outcome, call.text = "not-saved", str(exc)
    except JobTimeoutError as exc:
        call.outcome, call.request_id, call.text = "running", exc.request_id, str(exc)
    except JobFailedError as exc:
        call.outcome, call.request_id, call.text = "failed", exc.request_id, str(exc)
    except MAIImageError as exc:
        call.outcome, call.text = "refused", str(exc)
        call.request_id = getattr(exc, "request_id", None)
    except Exception as exc:
        call.outcome, call.text = "escaped", f"{type(exc).__name__}: {exc}"
    call.elapsed = time.monotonic() - started


def _classify_answer(call: Call, done: bool | None, saved: bool, error: bool, data: Any) -> None:
    if isinstance(data, dict):
        call.request_id = data.get("request_id") or call.request_id
    if not error:
        call.outcome = "running" if done is False else ("saved" if saved else "not-saved")
    elif isinstance(data, dict) and data.get("status") in ("FAILED", "ERROR"):
        call.outcome = "failed"
    else:
        call.outcome = "refused"


async def _langchain_call(call: Call, base_url: str, out: Path, source: Path, edit: bool) -> None:
    from langchain_core.messages import ToolMessage
    from pydantic import SecretStr

    from mai_tools.langchain import MAIImageEditTool, MAIImageGenerateTool

    tool_type = MAIImageEditTool if edit else MAIImageGenerateTool
    tool = tool_type(
        api_key=SecretStr(KEY),
        base_url=base_url,
        output_dir=out,
        allowed_dirs=(source.parent,),
        wait_timeout=call.budget,
    )
    args: dict[str, Any] = {"prompt": call.prompt}
    if edit:
        args["image"] = str(source)
    else:
        args["num_images"] = 2
    started = time.monotonic()
    try:
        message = await tool.ainvoke(
            # A fresh id per call, as models make them (the id keys the job in the job book).
            {"type": "tool_call", "id": f"call-{id(call)}", "name": tool.name, "args": args}
        )
        assert isinstance(message, ToolMessage)
        call.text = str(message.content)
        artifact = message.artifact
        data = artifact.model_dump() if hasattr(artifact, "model_dump") else None
        done = data.get("done") if isinstance(data, dict) else None
        saved = bool(
            isinstance(data, dict) and data.get("saved_paths") and not data.get("save_error")
        )
        _classify_answer(call, done, saved, message.status == "error", data)
    except Exception as exc:
        call.outcome, call.text = "escaped", f"{type(exc).__name__}: {exc}"
    call.elapsed = time.monotonic() - started


async def _mcp_call(call: Call, client: Any, source: Path, edit: bool) -> None:
    args: dict[str, Any] = {"prompt": call.prompt}
    if edit:
        args["image"] = str(source)
    else:
        args["num_images"] = 2
    started = time.monotonic()
    try:
        result = await client.call_tool("edit_image" if edit else "generate_image", args)
        data = result.structured_content
        call.text = " ".join(getattr(c, "text", "") for c in result.content)
        done = data.get("done") if isinstance(data, dict) else None
        saved = bool(
            isinstance(data, dict) and data.get("saved_paths") and not data.get("save_error")
        )
        _classify_answer(call, done, saved, bool(result.is_error), data)
    except Exception as exc:
        call.outcome, call.text = "escaped", f"{type(exc).__name__}: {exc}"
    call.elapsed = time.monotonic() - started


async def _run_adapter(
    name: str,
    count: int,
    concurrency: int,
    one: Callable[[Call, bool], Awaitable[None]],
    budget: float,
    rng: random.Random,
) -> list[Call]:
    gate = asyncio.Semaphore(concurrency)
    calls = [Call(name, f"soak {name} call {i}", budget) for i in range(count)]
    edits = [rng.random() < 0.2 for _ in calls]
    # a share of prompts end FAILED or ERROR on purpose (the emulator's markers)
    for call in calls:
        roll = rng.random()
        if roll < 0.04:
            call.prompt += " [fail]"
        elif roll < 0.07:
            call.prompt += " [error]"

    async def gated(call: Call, edit: bool) -> None:
        async with gate:
            await one(call, edit)

    await asyncio.gather(*(gated(c, e) for c, e in zip(calls, edits, strict=True)))
    return calls


async def _watch_loop(lags: list[float], fds: list[int]) -> None:
    """How late the event loop wakes up (a busy loop makes every call late by as much), and
    this process's open file descriptors (the receiver's server runs here)."""
    while True:
        start = time.monotonic()
        await asyncio.sleep(0.05)
        lags.append(time.monotonic() - start - 0.05)
        if len(lags) % 5 == 0:
            fds.append(_descriptors())


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time a running process has used (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return round((int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"), 2)


def _peak_rss_mb(pid: int) -> float:
    """The high-water mark of a running process's resident memory (Linux), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


@contextlib.contextmanager
def mcp_http_server(
    base_url: str, budget: float, out: Path, allowed: Path, token_file: Path
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """``mai-image-mcp`` over streamable HTTP with a bearer token, as a deployment runs it."""
    port = _free_port()
    command = [sys.executable, "-m", "mcp_server", "--transport", "streamable-http"]
    command += ["--port", str(port), "--auth-token-file", str(token_file)]
    command += ["--max-wait", str(budget), "--output-dir", str(out), "--allow-dir", str(allowed)]
    command += ["--preview", "preview", "--max-sessions", str(MCP_MAX_SESSIONS)]
    command += ["--session-idle-timeout", str(MCP_SESSION_IDLE)]
    env = {**os.environ, "PIXAZO_API_KEY": KEY, "PIXAZO_BASE_URL": base_url}
    env.pop("MAI_MCP_AUTH_TOKEN", None)
    proc = subprocess.Popen(command, env=env)
    origin = f"http://127.0.0.1:{port}"
    try:
        _wait_until_up(f"{origin}/mcp", proc, "the MCP server")
        yield f"{origin}/mcp", proc
    finally:
        proc.terminate()
        proc.wait(30)


async def soak(
    args: argparse.Namespace, base_url: str, emu: Any, work: Path
) -> tuple[list[Call], list[float], dict[str, float], dict[str, Any]]:
    import httpx2
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    from mai_tools import WebhookReceiver

    source = _source_png(work / "inputs")
    rng = random.Random(args.seed)
    out = {name: work / name for name in ("client", "langchain", "mcp")}
    for directory in out.values():
        directory.mkdir()
    token = "soak-" + os.urandom(16).hex()
    token_file = work / "token"
    token_file.write_text(token)
    token_file.chmod(0o600)
    lags: list[float] = []
    fds: list[int] = [_descriptors()]
    watcher = asyncio.create_task(_watch_loop(lags, fds))
    stall_port = _free_port()
    seen: Counter[str] = Counter()
    receiver = WebhookReceiver()
    with (
        receiver,
        neighbour(
            receiver._bound_port or 0, stall_port, args.seed, enabled=not args.no_neighbours
        ) as flood,
        mcp_http_server(base_url, args.budget, out["mcp"], source.parent, token_file) as (
            url,
            proc,
        ),
    ):
        headers = {"Authorization": f"Bearer {token}"}
        neighbours: list[asyncio.Task[None]] = []
        async with (
            httpx.AsyncClient(headers={**headers, **MCP_ACCEPT}, timeout=30) as flooder,
            httpx2.AsyncClient(headers=headers, timeout=args.budget + 60) as http,
            Client(streamable_http_client(url, http_client=http)) as mcp_client,
        ):
            if not args.no_neighbours:
                stall_url = f"http://127.0.0.1:{stall_port}"
                neighbours.append(
                    asyncio.create_task(_stalled_callbacks(emu.base_url, stall_url, seen))
                )
                neighbours += [
                    asyncio.create_task(_session_flood(flooder, url, seen))
                    for _ in range(SESSION_FLOODERS)
                ]
            adapters: dict[str, Callable[[Call, bool], Awaitable[None]]] = {
                "client": lambda c, e: _client_call(
                    c, base_url, out["client"], source, e, receiver
                ),
                "langchain": lambda c, e: _langchain_call(c, base_url, out["langchain"], source, e),
                "mcp": lambda c, e: _mcp_call(c, mcp_client, source, e),
            }
            results = await asyncio.gather(
                *(
                    _run_adapter(
                        name,
                        args.calls,
                        args.concurrency,
                        one,
                        args.budget,
                        random.Random(rng.random()),
                    )
                    for name, one in adapters.items()
                )
            )
            for task in neighbours:
                task.cancel()
            await asyncio.gather(*neighbours, return_exceptions=True)
            lockout = await _lockout(flooder, url)
        mcp = {"peak_rss_mb": _peak_rss_mb(proc.pid), "cpu_s": _cpu_seconds(proc.pid)}
        received, receiver_url = receiver.stats(), receiver.url
    watcher.cancel()
    deliveries = emu.stats().webhook_deliveries
    faults = {
        "receiver": {k: received[k] for k in sorted(received)},
        "flood": flood,
        "fds_start_peak": [fds[0], max(fds)],
        "callbacks_to_receiver": _deliveries(deliveries, receiver_url),
        "callbacks_to_stalled": _deliveries(deliveries, f"http://127.0.0.1:{stall_port}"),
        "neighbours": dict(seen),
        "new_mcp_client_lockout_s": round(lockout, 2),
    }
    return [call for group in results for call in group], lags, mcp, faults


async def pick_up(calls: list[Call], base_url: str) -> tuple[int, int]:
    """Wait for every job answered "still running", by its request id: (picked up, total)."""
    from mai_tools import AsyncMAIImageClient, JobFailedError, MAIImageError

    running = [c for c in calls if c.outcome == "running" and c.request_id]
    done = 0
    async with AsyncMAIImageClient(KEY, base_url=base_url) as client:

        async def one(call: Call) -> bool:
            assert call.request_id is not None
            for _ in range(5):  # the front keeps misbehaving: a few waits may be needed
                try:
                    await client.wait(call.request_id, timeout=30)
                    return True
                except JobFailedError:
                    return True  # it ended, as a failure the gateway reported
                except MAIImageError:
                    continue
            return False

        done = sum(await asyncio.gather(*(one(c) for c in running)))
    return done, len(running)


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))] if ordered else 0


# Our own advice for something to redo later; the gateway's quoted words ("Try again in 0.5
# seconds", about one status read) are not advice to the caller.
RETRY_ADVICE = ("try again in a minute", "retry later", "slow down", "start a new job")
RESUME_HINTS = ("wait(", "get_image_job", "mai-image wait")


def _advises_retry_or_lacks_resume(text: str) -> bool:
    lowered = text.lower()
    return any(a in lowered for a in RETRY_ADVICE) or not any(h in text for h in RESUME_HINTS)


def _may_exist(text: str) -> bool:
    lowered = text.lower()
    return "a job may exist" in lowered or "may have been created" in lowered


def check(
    calls: list[Call], front: dict[str, Any], outcomes: dict[str, str], tolerance: float
) -> dict[str, Any]:
    created: dict[str, list[str]] = front["created"]
    lost = set(front["lost"])
    duplicates = sum(len(ids) - 1 for ids in created.values() if len(ids) > 1)
    past = [c for c in calls if c.elapsed > c.budget + tolerance]
    finished_as_failure = []
    running_as_retry = []
    unanswered: list[Call] = []
    for call in calls:
        ids = created.get(call.prompt, [])
        completed = any(outcomes.get(i) == "COMPLETED" for i in ids)
        if call.outcome in ("failed", "refused", "escaped") and completed:
            if call.prompt in lost and call.outcome == "refused" and call.request_id is None:
                continue  # the client never learnt the id; checked below
            if call.outcome == "refused" and call.request_id is None and _may_exist(call.text):
                # The submit's answer did not come in time (a loaded machine): the client
                # never learnt the id and says a job may exist, which is true, not a failure.
                unanswered.append(call)
                continue
            finished_as_failure.append(call)
        if call.outcome == "running" and _advises_retry_or_lacks_resume(call.text):
            running_as_retry.append(call)
    lost_calls = [c for c in calls if c.prompt in lost]
    lost_told = [c for c in lost_calls if "may have" in c.text.lower() or c.request_id]
    per_adapter: dict[str, Counter[str]] = {}
    for call in calls:
        per_adapter.setdefault(call.adapter, Counter())[call.outcome] += 1
    elapsed = [c.elapsed for c in calls]
    return {
        "calls": len(calls),
        "jobs_created": sum(len(ids) for ids in created.values()),
        "duplicates": duplicates,
        "past_budget": len(past),
        "max_overshoot_s": round(max(0.0, *(c.elapsed - c.budget for c in calls)), 3),
        "elapsed_p50_s": round(_pct(elapsed, 0.5), 3),
        "elapsed_p95_s": round(_pct(elapsed, 0.95), 3),
        "elapsed_max_s": round(max(elapsed), 3),
        "finished_reported_as_failure": len(finished_as_failure),
        "running_reported_as_retry": len(running_as_retry),
        "escaped": sum(1 for c in calls if c.outcome == "escaped"),
        "submits_unanswered_in_time_told_may_exist": len(unanswered),
        "past_budget_by_adapter": dict(Counter(c.adapter for c in past)),
        "lost_submit_answers": len(lost_calls),
        "lost_submit_answers_told_may_exist": len(lost_told),
        "outcomes": {name: dict(counter) for name, counter in sorted(per_adapter.items())},
        "examples": {
            "escaped": [c.text[:300] for c in calls if c.outcome == "escaped"][:5],
            "finished_as_failure": [f"{c.adapter}: {c.text[:300]}" for c in finished_as_failure][
                :5
            ],
            "past_budget": [f"{c.adapter} {c.outcome} {c.elapsed:.2f}s" for c in past][:10],
            "slowest": [
                f"{c.adapter} {c.outcome} {c.elapsed:.2f}s: {c.text[:160]}"
                for c in sorted(calls, key=lambda c: -c.elapsed)[:8]
            ],
            "running_as_retry": [f"{c.adapter}: {c.text[:400]}" for c in running_as_retry][:5],
            "lost_not_told": [c.text[:300] for c in lost_calls if c not in lost_told][:5],
            "refused": sorted(
                {f"{c.adapter}: {c.text[:200]}" for c in calls if c.outcome == "refused"}
            )[:8],
        },
        "front": {"media": front["media"], "status": front["status"]},
    }


def _report(summary: dict[str, Any], args: argparse.Namespace, wall: float) -> str:
    s = summary
    picked = f"{s['picked_up']} of {s['running']}"
    times = f"{s['elapsed_p50_s']} / {s['elapsed_p95_s']} / {s['elapsed_max_s']} s"
    rows = [
        ("calls (async client + LangChain + MCP)", s["calls"], ""),
        ("jobs created", s["jobs_created"], ""),
        ("duplicate jobs", s["duplicates"], "0"),
        (f"calls past budget ({args.budget:g} s + {args.tolerance:g} s)", s["past_budget"], "0"),
        ("largest overshoot of a budget", f"{s['max_overshoot_s']} s", ""),
        ("call time p50 / p95 / max", times, ""),
        ("calls past budget, by adapter", s["past_budget_by_adapter"], ""),
        ("finished jobs reported as failures", s["finished_reported_as_failure"], "0"),
        ("... submits unanswered in time, told 'a job may exist' (not counted above)",
         s["submits_unanswered_in_time_told_may_exist"], ""),
        ("running jobs told to retry (or not how to resume)", s["running_reported_as_retry"], "0"),
        ("errors escaping the exception tree", s["escaped"], "0"),
        ("submits whose answer was dropped (job created)", s["lost_submit_answers"], ""),
        ("... answered 'may have been created'", s["lost_submit_answers_told_may_exist"], "all"),
        ("'still running' answers picked up later by id", picked, "all"),
        ("peak RSS: client process (async client + LangChain)", f"{s['peak_rss_mb']} MB", ""),
        ("peak RSS: MCP server process", f"{s['mcp_server_peak_rss_mb']} MB", ""),
        ("CPU: client process / MCP server", f"{s['client_cpu_s']} / {s['mcp_server_cpu_s']}", ""),
        ("event-loop lag p99 / max", f"{s['loop_lag_p99_s']} / {s['loop_lag_max_s']} s", ""),
        ("wall", f"{wall:.1f} s", ""),
    ]  # fmt: skip
    n = s.get("neighbours")
    if n:
        r, flood, seen = n["receiver"], n["flood"], n["neighbours"]
        rows += [
            ("receiver FD flood: connections opened / closed by the receiver",
             f"{flood.get('flood-opened', 0)} / {flood.get('flood-closed-by-receiver', 0)}", ""),
            ("... receiver connections peak / turned away / cut as too slow",
             f"{r['connections_peak']} / {r['connections_turned_away']} / "
             f"{r['connections_too_slow']}", "peak <= 256"),
            ("... this process's file descriptors at start / peak",
             " / ".join(map(str, n["fds_start_peak"])), ""),
            ("... callbacks the receiver accepted / ignored (wait already over)",
             f"{r['accepted']} / {r['ignored']}", ""),
            ("emulator callbacks to the receiver, by outcome", n["callbacks_to_receiver"], ""),
            ("stalled receivers: jobs / callbacks held", f"{seen.get('stalled-jobs', 0)} / "
             f"{flood.get('stalled-callbacks-held', 0)}", ""),
            ("emulator callbacks to stalled receivers, by outcome", n["callbacks_to_stalled"], ""),
            ("MCP session flood: initialize answers 200 / 503",
             f"{seen.get('session-flood-200', 0)} / {seen.get('session-flood-503', 0)}", ""),
            (f"... a new MCP client's lockout after it (idle timeout {MCP_SESSION_IDLE:g} s)",
             f"{n['new_mcp_client_lockout_s']} s", f"<= {MCP_SESSION_IDLE:g} s"),
        ]  # fmt: skip
    lines = ["| measure | result | must be |", "|---|---|---|"]
    lines += [f"| {name} | {value} | {goal} |" for name, value, goal in rows]
    lines += ["", "| adapter | outcomes |", "|---|---|"]
    for name, counter in summary["outcomes"].items():
        lines.append(f"| {name} | {', '.join(f'{k} {v}' for k, v in sorted(counter.items()))} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200, help="calls per adapter")
    parser.add_argument("--concurrency", type=int, default=40, help="calls at once per adapter")
    parser.add_argument("--budget", type=float, default=8.0, help="seconds per call")
    parser.add_argument("--tolerance", type=float, default=0.5, help="seconds past the budget")
    parser.add_argument("--seed", type=int, default=12)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument(
        "--no-neighbours",
        action="store_true",
        help="without the receiver FD flood, stalled callback receivers and session flood "
        "(a baseline for the same machine)",
    )
    parser.add_argument("--front", metavar="UPSTREAM", help=argparse.SUPPRESS)
    parser.add_argument("--neighbour", type=int, metavar="RECEIVER_PORT", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.neighbour:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(_serve_neighbour(args.neighbour, args.port))
        return
    if args.front:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(_serve_front(args.front, args.port, args.seed))
        return
    if args.quick:
        args.calls = 30

    from mai_tools.emulator import Faults, spawn_emulator

    faults = Faults(
        rate_limit_poll_rate=0.04,
        retry_after=0.5,
        rate_limit_submit_rate=0.03,
        submit_error_rate=0.03,
        error_500_rate=0.03,
        error_502_rate=0.03,
        drop_rate=0.03,
        slow_rate=0.03,
        slow_seconds=0.5,
        cdn_rate_limit_rate=0.04,
    )
    port = _free_port()
    started = time.monotonic()
    with (
        spawn_emulator(
            api_key=KEY,
            min_duration=1.0,
            max_duration=4.0,
            seed=args.seed,
            faults=faults,
            long_side=256,
            public_url=f"http://127.0.0.1:{port}",
        ) as emu,
        hostile_front(emu.base_url, port, args.seed) as front_url,
        tempfile.TemporaryDirectory(prefix="mai-soak-") as tmp,
    ):
        # Every process of the soak (this one and the MCP server) writes a book of its own
        # run, never the user's.
        os.environ["MAI_JOB_BOOK"] = str(Path(tmp) / "jobs.sqlite3")
        calls, lags, mcp, hostile = asyncio.run(soak(args, front_url, emu, Path(tmp)))
        cpu = {"client_cpu_s": _cpu_seconds(os.getpid()), "mcp_server_cpu_s": mcp["cpu_s"]}
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        front = httpx.get(f"{front_url}/_front/stats", timeout=10).json()
        outcomes = emu.stats().outcomes
        summary = check(calls, front, outcomes, args.tolerance)
        picked, running = asyncio.run(pick_up(calls, front_url))
    wall = time.monotonic() - started
    summary.update(picked_up=picked, running=running, peak_rss_mb=round(rss, 1))
    summary.update(mcp_server_peak_rss_mb=mcp["peak_rss_mb"], **cpu)
    summary.update(loop_lag_p99_s=round(_pct(lags, 0.99), 3), loop_lag_max_s=round(max(lags), 3))
    summary["neighbours"] = hostile
    summary["run"] = {
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "args": {k: v for k, v in vars(args).items() if k not in ("front", "port", "neighbour")},
    }
    table = _report(summary, args, wall)
    OUT.mkdir(exist_ok=True)
    (OUT / "soak.md").write_text(table + "\n")
    (OUT / "soak.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    print(table)
    print(json.dumps(summary["examples"], indent=2))
    print(json.dumps(summary["front"]))
    print(json.dumps(summary["neighbours"], indent=2))
    bad = summary["duplicates"] + summary["past_budget"] + summary["escaped"]
    bad += summary["finished_reported_as_failure"] + summary["running_reported_as_retry"]
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
