"""Shell blocks: the lines that run this project's commands run, against the page's emulator.

Each command line (``\\`` continuations joined, ``&&`` chains split, ``#`` comments dropped)
runs from the test venv's ``bin`` directory in the page's temporary directory, with the page's
environment (``PIXAZO_BASE_URL``/``PIXAZO_API_KEY`` of its emulator, a private job book) plus
the line's ``VAR=value`` prefixes and the page's earlier ``export`` lines. It must exit 0. A
command that serves (``mai-image emulator``, ``python -m mai_tools.emulator``,
``mai-image-mcp``/``mai-tools`` without a subcommand) is started, must answer (the emulator's
``/openapi.json``, the HTTP server's ``/healthz``, a stdio server's ``tools/list``), and is
stopped.

What the harness substitutes, so that the commands run as printed (``SUBSTITUTIONS``):

- a request id written with an ellipsis (``microsoft-mai-image-2-5_019d...``) is the id of the
  first job made on the page's emulator (by an earlier command or Python block of the page);
- port ``8000`` (``--port 8000``, ``host:8000``) is a free port, the same for the whole page;
- a ``postgresql://`` URL of an example host is an empty database on the tests' own Postgres
  server (``postgres_url``; where none can start, the command is left to its covered-by test);
- a command with ``--emulator`` (its own emulator, nothing shared) that ran already in this
  process, from another page, is not run again (the READMEs and the index share one);
- absolute example paths (``/etc/mai-image/``, ``/var/log/mai-image/``, ``/Users/me/``) are
  folders of the page's temporary directory, which also holds the files the commands read
  (``FIXTURE_FILES``: ``photo.jpg``, ``prompts.jsonl``, ``prompts.txt``, the token file).

A command that cannot run offline (an install from PyPI or npm, ``uvx``/``pipx``/``npx``, a
real remote such as an OAuth issuer) is not run; its block must name the test that covers it
(``<!-- snippet: covered-by PATH -->``).
"""

from __future__ import annotations

import asyncio
import io
import itertools
import re
import shlex
import signal
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import httpx
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client
from PIL import Image

from tests.docs.harness import Block, Page
from tests.support.waiting import eventually

OURS = frozenset({"mai-image", "mai-image-mcp", "mai-tools"})
MODULES = frozenset({"mai_tools.emulator", "mcp_server"})
LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})
# Flags whose URL the server reads at start: a real remote, unless it is on loopback.
REMOTE_FLAGS = frozenset({"--oauth-issuer", "--oauth-jwks-url"})
ELLIPSIS_ID = re.compile(r"microsoft-mai-image-2-5(?:-edit)?_[0-9a-f]*(?:\.\.\.|…)")
EXAMPLE_ROOTS = ("/etc/mai-image", "/var/log/mai-image", "/Users/me")
DOC_PORT = "8000"
TOKEN = "docs-snippet-token-0123456789abcdef"


_RAN_WITH_OWN_EMULATOR: dict[tuple[str, ...], str] = {}


def _jpeg() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 120, 40)).save(out, "JPEG")
    return out.getvalue()


FIXTURE_FILES: dict[str, bytes] = {
    "photo.jpg": _jpeg(),
    "prompts.jsonl": b'{"id": "fox", "prompt": "a red fox"}\n'
    b'{"prompt": "a blue owl", "num_images": 2}\n'
    b'{"id": "crane", "prompt": "a paper crane", "aspect_ratio": "4:3"}\n',
    "prompts.txt": b"a lighthouse at dawn\na harbour at night\n",
    "etc/mai-image/token": TOKEN.encode(),
}
FIXTURE_DIRS = ("var/log/mai-image", "Users/me/Pictures/mai", "Users/me/Pictures/to-edit")


def prepare(workdir: Path) -> None:
    """The files and folders the pages' commands read, in the page's temporary directory."""
    for name, data in FIXTURE_FILES.items():
        path = workdir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        path.chmod(0o600)
    for name in FIXTURE_DIRS:
        (workdir / name).mkdir(parents=True, exist_ok=True)


def host_path(page: Page, value: str) -> str:
    """``value`` with the example paths and port of the docs made this page's."""
    for root in EXAMPLE_ROOTS:
        value = value.replace(root, str(page.workdir) + root)
    return re.sub(rf"(?<=:){DOC_PORT}\b|^{DOC_PORT}$", str(page.port), value)


def _lines(source: str) -> list[str]:
    joined = re.sub(r"\\\n\s*", " ", source)
    return [
        line for line in joined.splitlines() if line.strip() and not line.strip().startswith("#")
    ]


def _commands(line: str) -> list[list[str]]:
    commands: list[list[str]] = [[]]
    for token in shlex.split(line, comments=True):
        if token == "&&":
            commands.append([])
        else:
            commands[-1].append(token)
    return [c for c in commands if c]


def _needs_remote(argv: list[str]) -> str | None:
    for flag, value in itertools.pairwise(argv):
        if flag in REMOTE_FLAGS and urlsplit(value).hostname not in LOOPBACK:
            return f"{flag} {value}"
    for arg in argv:
        if arg.startswith("postgresql://") and urlsplit(arg).hostname not in LOOPBACK:
            return arg
    return None


def _resolve(page: Page, argv: list[str]) -> list[str] | None:
    """The command as the test venv runs it, or None when it is not this project's."""
    name = Path(argv[0]).name if argv[0].startswith(".venv/bin/") else argv[0]
    if name in OURS:
        return [str(page.bin_dir / name), *argv[1:]]
    if name in {"python", "python3"} and len(argv) > 2 and argv[1] == "-m" and argv[2] in MODULES:
        return [str(page.bin_dir / "python"), *argv[1:]]
    return None


def run_shell(page: Page, block: Block) -> None:
    for line in _lines(block.source):
        for argv in _commands(line):
            _run_command(page, block, argv)


def _run_command(page: Page, block: Block, argv: list[str]) -> None:
    env = {**page.base_env()}
    if argv[0] == "export":
        for assignment in argv[1:]:
            key, _, value = assignment.partition("=")
            page.env[key] = host_path(page, value)
        return
    while argv and re.match(r"^[A-Z_][A-Z0-9_]*=", argv[0]):
        key, _, value = argv.pop(0).partition("=")
        env[key] = host_path(page, value)
    shown = shlex.join(argv)
    remote = _needs_remote(argv)
    if remote is not None and remote.startswith("postgresql://"):
        local = page.postgres()
        if local is not None:
            argv = [local if arg == remote else arg for arg in argv]
            remote = _needs_remote(argv)
    command = _resolve(page, argv)
    if command is None or remote is not None:
        why = f"needs {remote}" if remote else "not this project's command"
        assert block.covered_by(), (
            f"{block.where}: `{shown}` cannot run offline ({why}): name the test that covers "
            "it, <!-- snippet: covered-by tests/... -->"
        )
        page.notes.append(f"{block.where}: `{shown}` covered by {block.covered_by()}")
        return
    if any(ELLIPSIS_ID.fullmatch(arg) for arg in command):
        assert page.request_ids(), (
            f"{block.where}: `{shown}` names a job, and no earlier block of the page made one"
        )
    command = [
        page.request_ids()[0] if ELLIPSIS_ID.fullmatch(arg) else host_path(page, arg)
        for arg in command
    ]
    kind = _serves(argv)
    if "--emulator" in argv and kind is None:
        # Self-contained (its own emulator, the test's own book): the READMEs and the index
        # show the same first command; it runs once per process.
        ran = _RAN_WITH_OWN_EMULATOR.setdefault(tuple(command), block.where)
        if ran != block.where:
            page.notes.append(f"{block.where}: `{shown}` ran at {ran}")
            return
    if kind == "stdio":
        tools = asyncio.run(_stdio_tools(page, command, env))
        assert "generate_image" in tools, f"{block.where}: `{shown}` listed {tools}"
    elif kind is not None:
        _serve_and_stop(page, block, command, env, kind)
    else:
        done = subprocess.run(
            command,
            cwd=page.workdir,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, (
            f"{block.where}: `{shown}` exited {done.returncode}\n{done.stdout}\n{done.stderr}"
        )
    page.notes.append(f"{block.where}: ran `{shown}`")


def _serves(argv: list[str]) -> str | None:
    """``emulator``, ``http``, ``stdio``, or None for a command that ends by itself."""
    name = Path(argv[0]).name
    args = argv[1:]
    if (name == "mai-image" and args[:1] == ["emulator"]) or args[1:2] == ["mai_tools.emulator"]:
        return "emulator"
    is_server = name in {"mai-image-mcp", "mai-tools"} or args[1:2] == ["mcp_server"]
    if not is_server or "--help" in args or "tokens" in args:
        return None
    return "http" if "streamable-http" in args else "stdio"


async def _stdio_tools(page: Page, command: list[str], env: dict[str, str]) -> list[str]:
    params = StdioServerParameters(command=command[0], args=command[1:], env=env, cwd=page.workdir)
    with (page.workdir / "stdio-server.log").open("a") as errlog:
        async with Client(stdio_client(params, errlog=errlog)) as client:
            listed = await client.list_tools()
    return [tool.name for tool in listed.tools]


def _serve_and_stop(
    page: Page, block: Block, command: list[str], env: dict[str, str], kind: str
) -> None:
    path = "/openapi.json" if kind == "emulator" else "/healthz"
    url = f"http://127.0.0.1:{page.port}{path}"
    log = page.workdir / f"server-{page.port}.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            command,
            cwd=page.workdir,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        eventually(lambda: proc.poll() is not None or _answers(url), f"{url} to answer", every=0.1)
        assert proc.poll() is None, (
            f"{block.where}: `{shlex.join(command)}` exited {proc.returncode}:\n{log.read_text()}"
        )
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=5).status_code == 200
    except httpx.TransportError:
        return False
