"""Job-book helpers for tests: a request's row, and the intent a process leaves when it dies
during its POST."""

from __future__ import annotations

import socket
import subprocess
import sys
from typing import Any

from mai_tools import GenerateRequest, JobRequest
from mai_tools.jobbook import JobBook, JobRecord, open_job_book
from mai_tools.jobbook._record import describe, new_id


def dead_pid() -> int:
    """The pid of a process that has ended (and was reaped)."""
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    return int(gone.stdout)


def record_of(
    request: JobRequest, *, store_prompts: bool = True, surface: str = "client", **columns: Any
) -> JobRecord:
    """The row a client writes for ``request`` (``columns``: the row's other fields)."""
    described = describe(request, store_prompts=store_prompts)
    columns.setdefault("principal", "local")
    return JobRecord(
        id=new_id(),
        surface=surface,
        operation=described.operation,
        fingerprint=described.fingerprint,
        fields=described.fields,
        prompt=described.prompt,
        **columns,
    )


def dead_intent(
    book: JobBook, request: JobRequest, *, key: str, gateway: str, surface: str = "client"
) -> JobRecord:
    """Write the intent of ``request`` as a process that died during its POST left it."""
    record = record_of(
        request,
        surface=surface,
        gateway=gateway,
        idempotency_key=key,
        owner=f"{socket.gethostname()}:{dead_pid()}",
    )
    assert book.claim(record, 3600.0).created
    return record


def dead_call_intent(tool: str, args: dict[str, Any], *, gateway: str) -> JobRecord:
    """Write into the test's book (``MAI_JOB_BOOK``) the intent an MCP server left when it died
    sending the submit of the call ``tool(args)``: an identical call finds it by its twin key."""
    from mcp_server._arguments import ARGUMENTS
    from mcp_server._jobs import argument_key

    validated = ARGUMENTS[tool].model_validate(args).model_dump(mode="json")
    record = record_of(
        GenerateRequest(prompt=args["prompt"]),
        surface="mcp",
        gateway=gateway,
        twin_key=argument_key(tool, validated),
        owner=f"{socket.gethostname()}:{dead_pid()}",
    )
    book = open_job_book()
    assert book is not None
    assert book.claim(record, 3600.0).created
    return record
