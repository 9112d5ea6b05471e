"""The emulator's OpenAPI description, and schemathesis judging the emulator against it.

Positive cases (bodies the document allows) must be accepted; negative cases (bodies it
forbids) must be rejected with a 4xx; every answer must match the documented status codes,
content types and schemas; and no request may be served without a valid key.
"""

from __future__ import annotations

from typing import Any

import hypothesis
import pytest
import schemathesis
from schemathesis import GenerationMode
from schemathesis.specs.openapi import checks as openapi_checks

from mai_tools.emulator import EmulatorConfig, create_app, openapi_document
from tests.support.fakes import KEY

APP = create_app(EmulatorConfig(api_keys=(KEY,), min_duration=0, max_duration=0, long_side=32))
SCHEMA = schemathesis.openapi.from_asgi("/openapi.json", APP)
SCHEMA.config.generation.update(
    modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE], max_examples=100, deterministic=True
)
AUTH = {"Ocp-Apim-Subscription-Key": KEY}


def test_document_names_the_spec_paths_and_shares_the_client_limits() -> None:
    document = openapi_document()
    assert document["openapi"].startswith("3.1")
    assert set(document["paths"]) == {
        "/microsoft-mai-image-2-5/v1/microsoft-mai-image-2-5-request",
        "/microsoft-mai-image-2-5-edit/v1/microsoft-mai-image-2-5-edit-request",
        "/v2/requests/status/{request_id}",
        "/files/{request_id}/{name}",
    }
    schemas = document["components"]["schemas"]
    prompt = schemas["GenerateRequest"]["properties"]["prompt"]
    assert (prompt["minLength"], prompt["maxLength"]) == (3, 5000)
    assert schemas["GenerateRequest"]["additionalProperties"] is False
    assert "21:9" not in schemas["EditRequest"]["properties"]["aspect_ratio"]["enum"]
    key = document["components"]["securitySchemes"]["subscriptionKey"]
    assert key == {"type": "apiKey", "in": "header", "name": "Ocp-Apim-Subscription-Key"}
    document["paths"].clear()  # each call returns a copy
    assert openapi_document()["paths"]


@SCHEMA.parametrize()
@hypothesis.settings(
    deadline=None,
    suppress_health_check=list(hypothesis.HealthCheck),
    database=None,
)
def test_emulator_conforms_to_its_openapi_document(case: Any) -> None:
    # A webhook URL sends the emulator to that host when the job ends: no test goes there.
    if case.headers:
        case.headers.pop("X-Webhook-URL", None)
    # API Management matches an operation by method and path together: a method the document
    # does not list matches no operation and gets the gateway's 404 "Resource not found", not
    # a 405 (tests/emulator/test_emulator_api.py checks that answer).
    excluded = [openapi_checks.unsupported_method]
    if case.operation.path.startswith("/microsoft-mai-image-2-5-edit/"):
        # A data: URI the schema allows can still hold bytes that are not an image: the
        # emulator (like the gateway) refuses it with a 400. Acceptance is checked for URLs.
        excluded.append(openapi_checks.positive_data_acceptance)
    case.call_and_validate(headers=AUTH, excluded_checks=excluded)


@pytest.mark.parametrize("key", [None, "wrong-key"])
def test_requests_without_a_valid_key_are_refused(key: str | None) -> None:
    from starlette.testclient import TestClient

    headers = {} if key is None else {"Ocp-Apim-Subscription-Key": key}
    with TestClient(APP) as http:
        for method, path in (
            ("POST", "/microsoft-mai-image-2-5/v1/microsoft-mai-image-2-5-request"),
            ("POST", "/microsoft-mai-image-2-5-edit/v1/microsoft-mai-image-2-5-edit-request"),
            ("GET", "/v2/requests/status/anything"),
        ):
            response = http.request(method, path, headers=headers, json={"prompt": "a cat"})
            assert response.status_code == 401
            assert set(response.json()) == {"statusCode", "message"}  # the gateway's shape
        assert http.get("/openapi.json").status_code == 200
