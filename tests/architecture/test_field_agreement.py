"""Every face of a job has the same fields: a new gateway field fails here until each decided.

The faces: the request models (:data:`mai_tools.OPERATIONS`), the LangChain tools' ``args_schema``,
the MCP tools' input schemas (listed by an in-process MCP client), the CLI's ``generate``/``edit``
parameters, the batch line model, and the emulator's OpenAPI request schemas. Each face is read
as it is served and translated into request-field names (a tool's ``image`` is the request's
``image_urls``); what a face leaves out on purpose is named, with the reason, in one of the sets
below (or in ``mai_tools._tools.NOT_EXPOSED_TO_MODELS``). CONTRIBUTING.md lists the files a new
field touches.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, Final

import click
import pytest
from mcp import Client
from pydantic import BaseModel, create_model

import mai_tools._tools as tools_module
from mai_tools._models import OPERATIONS
from mai_tools._tools import (
    NOT_EXPOSED_TO_MODELS,
    TOOL_ONLY_FIELDS,
    TOOLS,
    GenerateImageArgs,
    ToolSpec,
)
from mai_tools.batch import _input as batch_input
from mai_tools.cli import cli
from mai_tools.emulator._openapi import openapi_document
from mai_tools.langchain import MAIImageGenerateTool, MAIImageToolkit
from mcp_server import _server as mcp_server_module
from mcp_server._server import create_server
from mcp_server._settings import Settings

Faces = dict[str, dict[str, set[str]]]
"""face -> operation -> its fields, as request-field names."""

NOT_IN_BATCH: Final[Mapping[str, str]] = {
    "sync_mode": "a batch saves files and journals every line; inline base64 has no place there",
}
"""Request fields a batch line does not take, each with the reason."""

NOT_A_FIELD_CLI_OPTIONS: Final = frozenset(
    {
        # how to wait and where to save
        "out",
        "no_save",
        "timeout",
        "quiet",
        # push waiting
        "webhook_listen",
        "webhook_public_url",
        # which gateway, and output format
        "emulator",
        "base_url",
        "api_key",
        "as_json",
        # the job book
        "idempotency_key",
        "job_book",
    }
)
"""CLI parameters of ``generate``/``edit`` that are not request fields."""


def _as_request_fields(names: set[str]) -> set[str]:
    return {TOOL_ONLY_FIELDS.get(name, name) for name in names}


def _job_tools() -> dict[str, ToolSpec]:
    return {spec.operation: spec for spec in TOOLS if spec.operation is not None}


# --------------------------------------------------------------------------- reading the faces


def request_face() -> dict[str, set[str]]:
    return {op: set(cls.model_fields) for op, cls in OPERATIONS.items()}


def langchain_face() -> dict[str, set[str]]:
    by_name = {tool.name: tool for tool in MAIImageToolkit().get_tools()}
    face = {}
    for op, spec in _job_tools().items():
        schema = by_name[spec.name].args_schema
        assert isinstance(schema, type)
        assert issubclass(schema, BaseModel)
        face[op] = _as_request_fields(set(schema.model_fields))
    return face


async def mcp_face() -> dict[str, set[str]]:
    async with Client(create_server(Settings())) as client:
        listed = {tool.name: tool for tool in (await client.list_tools()).tools}
    return {
        op: _as_request_fields(set(listed[spec.name].input_schema["properties"]))
        for op, spec in _job_tools().items()
    }


def cli_face() -> dict[str, set[str]]:
    face = {}
    for op in OPERATIONS:
        command = cli.commands[op]
        assert isinstance(command, click.Command)
        params = {p.name for p in command.params if p.name is not None}
        face[op] = _as_request_fields(params - NOT_A_FIELD_CLI_OPTIONS)
    return face


def batch_face() -> dict[str, set[str]]:
    # One line model for both operations (an ``image`` makes a line an edit), plus its ``id``.
    fields = _as_request_fields(set(batch_input._LineModel.model_fields) - {"id"})
    return dict.fromkeys(OPERATIONS, fields)


def openapi_face() -> dict[str, set[str]]:
    document = openapi_document()
    schemas = document["components"]["schemas"]
    return {op: set(schemas[cls.__name__]["properties"]) for op, cls in OPERATIONS.items()}


async def read_faces() -> Faces:
    return {
        "requests": request_face(),
        "langchain": langchain_face(),
        "mcp": await mcp_face(),
        "cli": cli_face(),
        "batch": batch_face(),
        "openapi": openapi_face(),
    }


# --------------------------------------------------------------------------- the checker


def expected(faces: Faces) -> Faces:
    """What each face must show, from the request models and the named exceptions."""
    requests = faces["requests"]
    for_models = {op: names - set(NOT_EXPOSED_TO_MODELS) for op, names in requests.items()}
    in_batch = set().union(*(names - set(NOT_IN_BATCH) for names in requests.values()))
    return {
        "requests": requests,
        "langchain": for_models,
        "mcp": for_models,
        "cli": requests,
        "batch": dict.fromkeys(requests, in_batch),
        "openapi": requests,
    }


def disagreements(faces: Faces) -> list[str]:
    """Every field a face has and should not, or lacks, in words that say where to decide."""
    problems = []
    for face, wanted in expected(faces).items():
        for op, names in wanted.items():
            shown = faces[face].get(op, set())
            for name in sorted(names - shown):
                problems.append(
                    f"{op}: {name!r} is missing from {face} (add it there, or name it with the "
                    "reason in that face's set of fields it leaves out)"
                )
            for name in sorted(shown - names):
                problems.append(
                    f"{op}: {face} has {name!r}, which the request models "
                    f"({OPERATIONS[op].__name__}) lack, or which that face should leave out"
                )
    return problems


# --------------------------------------------------------------------------- the tests


async def test_every_face_has_the_request_fields() -> None:
    assert disagreements(await read_faces()) == []


async def test_each_tool_is_described_once() -> None:
    """The LangChain tools and the MCP server show each spec as it is written."""
    langchain = {tool.name: tool for tool in MAIImageToolkit().get_tools()}
    async with Client(create_server(Settings())) as client:
        served = {tool.name: tool for tool in (await client.list_tools()).tools}
    assert list(langchain) == [spec.name for spec in TOOLS]
    assert set(served) - set(langchain) == {"list_recent_jobs"}  # the server's own job book
    for spec in TOOLS:
        assert langchain[spec.name].description == spec.description
        assert langchain[spec.name].args_schema is spec.arguments
        mcp_tool = served[spec.name]
        assert (mcp_tool.title, mcp_tool.description) == (spec.title, spec.description)
        assert mcp_tool.annotations is not None
        assert mcp_tool.annotations.read_only_hint is not spec.creates_job
        assert mcp_tool.annotations.idempotent_hint is not spec.creates_job
        assert (
            mcp_tool.input_schema["properties"]
            == (spec.arguments.model_json_schema()["properties"])
        )


async def test_the_exceptions_name_request_fields_only() -> None:
    """A stale exception (a field that was renamed or dropped) is a mistake too."""
    every = set().union(*request_face().values())
    assert set(NOT_EXPOSED_TO_MODELS) <= every
    assert set(NOT_IN_BATCH) <= every
    assert set(TOOL_ONLY_FIELDS.values()) <= every
    assert not set(TOOL_ONLY_FIELDS) & every  # a tool-only name must not shadow a field


FACES = ("requests", "langchain", "mcp", "cli", "batch", "openapi")
NEW = "a_new_gateway_field"
"""A field no face has: the checker's own tests add it to one face."""


def _new_problems(before: Faces, after: Faces) -> list[str]:
    return sorted(set(disagreements(after)) - set(disagreements(before)))


@pytest.mark.parametrize("face", FACES)
async def test_the_checker_fails_on_a_field_in_one_face_only(face: str) -> None:
    faces = await read_faces()
    changed = {**faces, face: {op: names | {NEW} for op, names in faces[face].items()}}
    problems = _new_problems(faces, changed)
    assert problems
    assert all(repr(NEW) in p for p in problems)
    if face == "requests":  # every other face lacks it
        assert {f for f in FACES if f != face} == {
            f for f in FACES for p in problems if f"missing from {f} " in p
        }
    else:
        assert all(f"{face} has {NEW!r}" in p for p in problems)


async def test_the_checker_sees_a_field_added_to_a_real_tool_spec(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Not only the checker: a field really added to the generate tool's arguments shows up in
    the LangChain and MCP faces as served, and fails the check."""
    before = await read_faces()
    new_field: dict[str, Any] = {NEW: (int | None, None)}
    extended: type[BaseModel] = create_model(
        "ExtendedGenerateImageArgs", __base__=GenerateImageArgs, **new_field
    )
    spec = dataclasses.replace(tools_module.GENERATE_TOOL, arguments=extended)
    monkeypatch.setattr(
        mcp_server_module, "TOOLS", tuple(spec if t.name == spec.name else t for t in TOOLS)
    )
    real_get_tools = MAIImageToolkit.get_tools

    def get_tools(self: MAIImageToolkit) -> list[Any]:
        return [
            MAIImageGenerateTool(args_schema=extended) if t.name == spec.name else t
            for t in real_get_tools(self)
        ]

    monkeypatch.setattr(MAIImageToolkit, "get_tools", get_tools)
    after = await read_faces()
    assert NEW in after["langchain"]["generate"]
    assert NEW in after["mcp"]["generate"]
    assert _new_problems(before, after) == [
        f"generate: langchain has {NEW!r}, which the request models (GenerateRequest) lack, or "
        "which that face should leave out",
        f"generate: mcp has {NEW!r}, which the request models (GenerateRequest) lack, or which "
        "that face should leave out",
    ]
