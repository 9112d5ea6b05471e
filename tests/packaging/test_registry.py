"""``server.json``: the MCP Registry's entry for mai-tools, checked against the registry's schema
and against the package it points at (name, version, command, the variables it reads).

The schema is vendored in ``tests/packaging/schemas/`` (see the README there: source URL, date,
sha256), so this runs with no network.
"""

from __future__ import annotations

import hashlib
import json
import tomllib
import typing
from pathlib import Path
from typing import Any

import jsonschema
import pytest

import mai_tools
from mcp_server._settings import Settings, env_name, is_secret, options
from tests.packaging.conftest import ROOT, Built
from tests.packaging.test_artifacts import _wheel_metadata

SCHEMAS = Path(__file__).resolve().parent / "schemas"
SCHEMA_URL = "https://static.modelcontextprotocol.io/schemas/2025-12-11/server.schema.json"
# The published file's sha256 (the copy here is byte-for-byte): a new schema is a deliberate
# change of the file, this pin and $schema in server.json together.
SCHEMA_SHA256 = "3fba09590c99f61735d234822279f4223fab9e300c0a81e81c91ab62a4114de0"


def _json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def server() -> dict[str, Any]:
    found: dict[str, Any] = _json(ROOT / "server.json")
    return found


@pytest.fixture(scope="module")
def package(server: dict[str, Any]) -> dict[str, Any]:
    (only,) = server["packages"]
    found: dict[str, Any] = only
    return found


def test_the_vendored_schema_is_the_published_one() -> None:
    raw = (SCHEMAS / "server.schema.json").read_bytes()
    assert hashlib.sha256(raw).hexdigest() == SCHEMA_SHA256
    assert json.loads(raw)["$id"] == SCHEMA_URL


def test_server_json_is_valid_against_the_registry_schema(server: dict[str, Any]) -> None:
    schema = _json(SCHEMAS / "server.schema.json")
    assert server["$schema"] == schema["$id"]
    validator = jsonschema.Draft7Validator(schema, format_checker=jsonschema.FormatChecker())
    problems = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(server)]
    assert problems == []


def test_the_schema_check_catches_a_broken_entry(server: dict[str, Any]) -> None:
    # The validator really applies the registry's rules (the "$ref" root, the formats).
    schema = _json(SCHEMAS / "server.schema.json")
    validator = jsonschema.Draft7Validator(schema, format_checker=jsonschema.FormatChecker())
    broken = {**server, "name": "no-slash", "description": "x" * 101}
    assert {e.validator for e in validator.iter_errors(broken)} == {"pattern", "maxLength"}


def test_versions_agree_with_the_package(server: dict[str, Any], package: dict[str, Any]) -> None:
    manifest = _json(ROOT / "mcpb" / "manifest.json")
    assert server["version"] == package["version"] == mai_tools.__version__
    assert manifest["version"] == mai_tools.__version__


def test_the_package_is_this_project_and_its_command_has_its_name(
    package: dict[str, Any],
) -> None:
    # Registry clients start a PyPI package as `uvx <identifier>`: a console script of the
    # package's own name must be the MCP server (stdio).
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert package["registryType"] == "pypi"
    assert package["identifier"] == project["name"] == "mai-tools"
    assert package["runtimeHint"] == "uvx"
    assert package["transport"] == {"type": "stdio"}
    scripts = project["scripts"]
    assert scripts[package["identifier"]] == scripts["mai-image-mcp"]


def test_environment_variables_are_the_ones_the_server_reads(package: dict[str, Any]) -> None:
    fields = {env_name(name): info for name, info, _ in options()}
    listed = {var["name"]: var for var in package["environmentVariables"]}
    assert set(listed) <= set(fields), "server.json names a variable the server does not read"
    # What a stdio user sets; the HTTP server's settings (tokens, hosts, sessions, webhooks,
    # operators) do not apply to a package the client starts over stdio.
    assert {
        "PIXAZO_API_KEY",
        "MAI_MCP_OUTPUT_DIR",
        "MAI_MCP_ALLOWED_DIRS",
        "MAI_MCP_MAX_WAIT",
        "MAI_MCP_PREVIEW",
    } <= set(listed)
    for name, var in listed.items():
        info = fields[name]
        assert var.get("isSecret", False) == is_secret(info), name
        default = info.default
        if isinstance(default, bool):
            assert var.get("default") == str(default).lower(), name
        elif isinstance(default, float):
            assert var.get("default") == f"{default:g}", name
        elif default is not None and default != ():
            assert var.get("default") == str(default), name
        if typing.get_origin(info.annotation) is typing.Literal:
            assert var["choices"] == list(typing.get_args(info.annotation)), name


def test_the_key_is_a_required_secret(package: dict[str, Any]) -> None:
    (key,) = [v for v in package["environmentVariables"] if v["name"] == "PIXAZO_API_KEY"]
    assert key["isSecret"] is True
    assert key["isRequired"] is True
    assert Settings.model_fields["api_key"].validation_alias == "PIXAZO_API_KEY"


def test_the_readme_pypi_shows_carries_the_mcp_name(server: dict[str, Any], built: Built) -> None:
    # The registry proves PyPI ownership by finding "mcp-name: <name>" in the package's README.
    long_description = _wheel_metadata(built).get_payload()
    assert isinstance(long_description, str)
    assert f"mcp-name: {server['name']}" in long_description
    assert server["name"] == "io.github.mai-tools/mai-tools"
    assert server["repository"]["url"] == "https://github.com/mai-tools/mai-tools"
