"""The MCP server's spans (mcp 2.3 emits them) continue a client's trace, and each job's span
is a child of its tools/call span."""

from __future__ import annotations

from collections.abc import Iterator
from typing import cast

import pytest
from mcp import Client
from mcp.types import CallToolResult, RequestParamsMeta
from opentelemetry.trace import SpanKind

from mai_tools.emulator import EmulatorConfig, RunningEmulator, run_emulator
from mcp_server import Settings, create_server
from tests.support.fakes import KEY
from tests.telemetry.conftest import Otel

TRACE_ID = 0x0AF7651916CD43DD8448EB211C80319C
PARENT_ID = 0x00F067AA0BA902B7
TRACEPARENT = f"00-{TRACE_ID:032x}-{PARENT_ID:016x}-01"


@pytest.fixture(scope="module")
def emu() -> Iterator[RunningEmulator]:
    with run_emulator(EmulatorConfig(api_keys=(KEY,), min_duration=0.0, max_duration=0.0)) as emu:
        yield emu


async def test_a_tool_call_continues_the_clients_trace(emu: RunningEmulator, otel: Otel) -> None:
    settings = Settings(api_key=KEY, base_url=emu.base_url, preview="off")
    async with Client(create_server(settings)) as client:
        result = await client.call_tool(
            "generate_image",
            {"prompt": "a red fox in the snow", "num_images": 2},
            # An open map (extra_items) that mypy cannot read yet: cast.
            meta=cast(RequestParamsMeta, {"traceparent": TRACEPARENT}),
        )
    assert isinstance(result, CallToolResult)
    assert not result.is_error
    call = otel.span("tools/call generate_image")
    assert call.kind is SpanKind.SERVER
    assert call.context.trace_id == TRACE_ID
    assert call.parent is not None
    assert call.parent.span_id == PARENT_ID
    assert (call.attributes or {})["mcp.method.name"] == "tools/call"
    assert (call.attributes or {})["gen_ai.tool.name"] == "generate_image"
    job = otel.span("generate_image microsoft-mai-image-2-5")
    assert job.context.trace_id == TRACE_ID
    assert job.parent is not None
    assert job.parent.span_id == call.context.span_id
    assert (job.attributes or {})["gen_ai.request.choice.count"] == 2
    requests = [s for s in otel.spans() if s.name in ("POST submit", "GET status")]
    assert requests
    assert all(s.context.trace_id == TRACE_ID for s in requests)
