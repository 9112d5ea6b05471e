"""How each language's blocks run (see :mod:`tests.docs.harness` for the directives)."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]  # PyYAML (mkdocs'), no stubs installed
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client
from sybil.evaluators.python import PythonEvaluator

from mcp_server import _health, _logs
from tests.docs.harness import Block, Page, Runner
from tests.docs.shell import host_path, run_shell
from tests.support.chat_models import ConversationModel, tool_call

_STARTED_CONFIGS: dict[str, str] = {}
URL = re.compile(r"https?://\S+")
THEN = re.compile(r",\s*then\s+", re.IGNORECASE)


class ImageDrawingModel(ConversationModel):
    """Stands in for a provider's chat model in ``fake-chat-model`` blocks: it draws what the
    user asked with ``generate_image``, does each ", then ..." step with ``edit_image`` on the
    last image, and answers with the last tool result."""

    def reply(self, messages: list[BaseMessage]) -> AIMessage:
        asked = next(str(m.content) for m in messages if isinstance(m, HumanMessage))
        steps = THEN.split(asked)
        results = [m for m in messages if isinstance(m, ToolMessage)]
        done = len(results)
        if done == 0:
            return tool_call("generate_image", {"prompt": steps[0]}, "call_0")
        if done < len(steps):
            url = URL.search(str(results[-1].content))
            assert url, f"the tool answered with no image URL: {results[-1].content!r}"
            return tool_call("edit_image", {"prompt": steps[done], "image": url[0]}, f"call_{done}")
        return AIMessage(content=str(results[-1].content))


def _fake_init_chat_model(model: Any, *args: Any, **kwargs: Any) -> ImageDrawingModel:
    assert isinstance(model, str), model
    assert ":" in model, f"not a provider:model string: {model}"
    return ImageDrawingModel()


def run_python(page: Page, block: Block) -> None:
    """Run a Python block in the page's namespace (tracebacks name the page's lines)."""
    if "pytest" in block.directives:
        _run_under_pytest(page, block)
        return
    with pytest.MonkeyPatch.context() as mp:
        if "fake-chat-model" in block.directives:
            import langchain.agents.factory

            mp.setattr(langchain.agents.factory, "init_chat_model", _fake_init_chat_model)
            made_before = len(page.request_ids())
        PythonEvaluator()(block.example)
        if "fake-chat-model" in block.directives:
            made = len(page.request_ids()) - made_before
            page.notes.append(f"{block.where}: the fake chat model made {made} job(s)")


def _run_under_pytest(page: Page, block: Block) -> None:
    """Run a test-module block under pytest, with only the mai_emulator plugin (the entry
    point's registration is tests/packaging/test_imports.py's; the other plugins installed
    here would cost seconds of start-up)."""
    module = page.workdir / f"test_{Path(block.page).stem}_{block.line}.py"
    module.write_text(block.source, encoding="utf-8")
    plugin = ("-p", "mai_tools.emulator.pytest_plugin", "-p", "no:cacheprovider")
    done = subprocess.run(
        [str(page.bin_dir / "python"), "-m", "pytest", "-q", *plugin, module.name],
        cwd=page.workdir,
        env={**page.base_env(), "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, f"{block.where}: pytest exited {done.returncode}\n{done.stdout}"
    assert re.search(r"\b[1-9]\d* passed", done.stdout), done.stdout


def run_json(page: Page, block: Block) -> None:
    """Parse a JSON block; a desktop client's ``mcpServers`` config is started the way it says
    and must list the server's tools over stdio (a config the same as one that listed them
    already in this process, on another page, is not started again)."""
    data = json.loads(block.source)
    # Claude Desktop and most clients: "mcpServers"; VS Code: "servers" (with a "type").
    servers = {**data.get("mcpServers", {}), **data.get("servers", {})}
    for name, server in servers.items():
        ran = _STARTED_CONFIGS.setdefault(json.dumps(server, sort_keys=True), block.where)
        if ran != block.where:
            page.notes.append(f"{block.where}: server {name!r} as at {ran}")
            continue
        tools = asyncio.run(_list_tools(page, server))
        assert {"generate_image", "edit_image", "get_image_job", "view_image"} <= tools, (
            f"{block.where}: server {name!r} listed {sorted(tools)}"
        )


async def _list_tools(page: Page, server: dict[str, Any]) -> set[str]:
    command, args = server["command"], list(server.get("args", []))
    # `uvx mai-tools` runs the package's command from PyPI; here it is the test venv's.
    if command == "uvx":
        command, args = args[0], args[1:]
    env = {
        "PIXAZO_BASE_URL": page.emulator.base_url,
        **page.base_env(),
        **{key: host_path(page, value) for key, value in server.get("env", {}).items()},
    }
    params = StdioServerParameters(
        command=str(page.bin_dir / command), args=args, env=env, cwd=page.workdir
    )
    with (page.workdir / "stdio-server.log").open("a") as errlog:
        async with Client(stdio_client(params, errlog=errlog)) as client:
            listed = await client.list_tools()
    return {tool.name for tool in listed.tools}


def run_yaml(page: Page, block: Block) -> None:
    """Parse a YAML block; Kubernetes probes must name the server's probe paths."""
    data = yaml.safe_load(block.source)
    for probe in ("livenessProbe", "readinessProbe"):
        if probe in data:
            path = data[probe]["httpGet"]["path"]
            assert path in {_health.HEALTH_PATH, _health.READY_PATH}, f"{block.where}: {path}"


LOG_LINE = re.compile(
    r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (DEBUG|INFO|WARNING|ERROR|CRITICAL) "
    r"(?P<logger>[\w.]+): \S.*$"
)


# The messages of the start line and of a job line, as the server words them.
_START_TEXT, _ = _logs.start_line(
    version="V", transport="T", address="A", auth="U", gateway="G", book="B"
)
START_MESSAGE = re.compile(
    re.escape(_START_TEXT)
    .replace("V", r"\S+")
    .replace("T", r"\S+")
    .replace("A", r"\S+")
    .replace("U", r"[^;]+")
    .replace("G", r"\S+")
    .replace("B", r"\S+")
)
JOB_MESSAGE = re.compile(
    r"job (intent|submitted|finished|unknown|released): principal=\S+ tool=\S+ "
    r"request_id=\S+ status=\S+ seconds=\S+ images=\d+"
)


def run_text(page: Page, block: Block) -> None:
    """A text block is log output: every line has the server's text log format
    (``mcp_server._logs.TextFormatter``), and a start or job line the server's wording."""
    messages = {_logs.START.name: START_MESSAGE, _logs.JOBS.name: JOB_MESSAGE}
    for line in block.source.splitlines():
        match = LOG_LINE.match(line)
        assert match, f"{block.where}: not a log line of the server's format: {line!r}"
        assert match["logger"] in messages, f"{block.where}: no such logger: {line!r}"
        message = line.split(": ", 1)[1]
        assert messages[match["logger"]].fullmatch(message), f"{block.where}: {message!r}"


ERROR_NAME = re.compile(r"\b[A-Z]\w*Error\b")


def check_exception_tree(page: Page, block: Block) -> None:
    """An ``exception-tree`` block draws mai_tools' exceptions as they are: each name is
    exported, each sits under its parent (by column; ``A ── B``: B under A), ``[O]`` marks
    exactly the OperatorErrors, ``(also ValueError)`` is a ValueError, ``(a X)`` an X; every
    exported exception is drawn."""
    import mai_tools

    def cls(name: str) -> type[BaseException]:
        found = getattr(mai_tools, name, None)
        assert name in mai_tools.__all__, f"{block.where}: {name} is not exported by mai_tools"
        assert isinstance(found, type), name
        assert issubclass(found, BaseException), name
        return found

    drawn: set[str] = set()
    stack: list[tuple[int, type[BaseException]]] = []  # the open ancestors, by column
    for line in block.source.splitlines():
        first = ERROR_NAME.search(line)
        if first is None:
            continue
        column, prefix = first.start(), line[: first.start()]
        if prefix.strip(" │├└─"):  # a legend line ("[O] also OperatorError: ...")
            drawn |= {cls(name).__name__ for name in ERROR_NAME.findall(line)}
            continue
        while stack and stack[-1][0] >= column:
            stack.pop()
        parent = stack[-1][1] if stack else BaseException
        for part in re.split(r",\s+", line[column:]):
            chain = [cls(name) for name in ERROR_NAME.findall(part.split("(")[0])]
            if not chain:
                continue
            for upper, lower in zip([parent, *chain], chain, strict=False):
                assert issubclass(lower, upper), f"{block.where}: {lower.__name__} under {upper}"
            for also in re.findall(r"\((?:also |a )(\w+)\)", part):
                extra = ValueError if also == "ValueError" else cls(also)
                assert issubclass(chain[0], extra), f"{block.where}: {chain[0].__name__}: {also}"
            names = list(ERROR_NAME.finditer(part.split("(")[0]))
            for this, after in zip(names, [*names[1:], None], strict=True):
                marked = "[O]" in part[this.end() : after.start() if after else None]
                operator = issubclass(cls(this.group()), mai_tools.OperatorError)
                assert marked == operator, f"{block.where}: {this.group()} [O] is {operator}"
            drawn |= {c.__name__ for c in chain}
        stack.append((column, cls(first.group())))
    exported = {
        name
        for name in mai_tools.__all__
        if isinstance(getattr(mai_tools, name), type)
        and issubclass(getattr(mai_tools, name), BaseException)
    }
    assert exported <= drawn, f"{block.where}: not drawn: {sorted(exported - drawn)}"


RUNNERS: dict[str, Runner] = {
    "python": run_python,
    "bash": run_shell,
    "console": run_shell,
    "shell": run_shell,
    "json": run_json,
    "yaml": run_yaml,
    "text": run_text,
}
CHECKS: dict[str, Runner] = {"exception-tree": check_exception_tree}
