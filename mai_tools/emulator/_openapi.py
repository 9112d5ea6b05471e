"""The emulator's OpenAPI 3.1 description, served at ``GET /openapi.json``.

Request bodies come from the same pydantic models the client validates with, so the document,
the emulator and the client cannot disagree on a limit. Response shapes follow
``shared/spec/mai-image-2.5-api.md``. Point schemathesis (or any OpenAPI tool) at it to judge
the emulator, or a client's requests, against the spec.

Errors have two shapes: ``GatewayError`` (``statusCode``, ``message``) from the API gateway in
front (Azure API Management: keys, rate limits, quotas, unknown routes) and ``Error``
(``error``, ``message``) from Pixazo behind it (validation, balance, job errors).
"""

from __future__ import annotations

import copy
from functools import cache
from typing import Any

from pydantic import BaseModel

from .._constants import STATUS_PATH
from .._models import OPERATIONS, PROMPT_PATTERN, Status
from .._version import __version__

_SCHEMAS = "#/components/schemas/"
_NULLABLE_STRING: dict[str, Any] = {"type": ["string", "null"]}
_TIMESTAMP: dict[str, Any] = {"type": ["string", "null"], "format": "date-time"}


def _request_schema(model: type[BaseModel]) -> dict[str, Any]:
    schema = copy.deepcopy(model.model_json_schema())
    # Validation the models do in code, said in the schema's own terms.
    schema["properties"]["prompt"]["pattern"] = PROMPT_PATTERN  # 3+ chars besides the blanks
    if "image_urls" in schema["properties"]:
        schema["properties"]["image_urls"]["items"]["pattern"] = (
            "^([hH][tT][tT][pP][sS]?://|[dD][aA][tT][aA]:)"
        )
    return schema


def _json(ref: str, description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": _SCHEMAS + ref}}},
    }
    if headers:
        response["headers"] = headers
    return response


_RETRY_AFTER = {
    "Retry-After": {
        "description": "Seconds to wait, or an HTTP date.",
        "schema": {"type": "string"},
    }
}
_ERRORS: dict[str, dict[str, Any]] = {
    "400": _json("Error", "Bad Request: the body failed validation (the message says how)."),
    "401": _json(
        "GatewayError", "Unauthorized (the gateway): missing or invalid subscription key."
    ),
    "403": {
        "description": (
            "Forbidden: this key may not use the model (Pixazo), or the key's call volume quota "
            "is used up (the gateway: 'Out of call volume quota. Quota will be replenished in "
            "hh:mm:ss.')."
        ),
        "content": {
            "application/json": {
                "schema": {
                    "oneOf": [{"$ref": _SCHEMAS + "Error"}, {"$ref": _SCHEMAS + "GatewayError"}]
                }
            }
        },
    },
    "429": _json(
        "GatewayError",
        "Too Many Requests (the gateway): 'Rate limit is exceeded. Try again in N seconds.'",
        _RETRY_AFTER,
    ),
    "500": _json("Error", "Internal Server Error."),
}


def _submit_operation(model: type[BaseModel], summary: str, operation_id: str) -> dict[str, Any]:
    return {
        "operationId": operation_id,
        "summary": summary,
        "parameters": [
            {
                "name": "X-Webhook-URL",
                "in": "header",
                "required": False,
                "description": "POST the final status body to this URL when the job ends.",
                "schema": {"type": "string", "pattern": "^[hH][tT][tT][pP][sS]?://[^\\s]+$"},
            }
        ],
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": _SCHEMAS + model.__name__}}},
        },
        "responses": {
            "202": _json("SubmitResponse", "Accepted: the job is queued; poll polling_url."),
            "200": _json("StatusResponse", "sync_mode: the finished job, images as data URIs."),
            **_ERRORS,
            "402": _json("Error", "Insufficient Balance."),
            "413": _json(
                "Error", "The request body exceeds the emulator's limit (32 MiB by default)."
            ),
        },
    }


@cache
def _document() -> dict[str, Any]:
    statuses = [s.value for s in Status]
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "MAI Image 2.5 on the Pixazo gateway (mai-tools offline emulator)",
            "version": __version__,
            "description": (
                "The gateway's three endpoints as the emulator serves them, plus the result "
                "files it hosts in place of the CDN."
            ),
        },
        "security": [{"subscriptionKey": []}],
        "paths": {
            **{
                cls.path: {"post": _submit_operation(cls, cls.title, cls.operation)}
                for cls in OPERATIONS.values()
            },
            STATUS_PATH: {
                "get": {
                    "operationId": "getStatus",
                    "summary": "Status (and result) of a job",
                    "parameters": [
                        {
                            "name": "request_id",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string"},
                        }
                    ],
                    "responses": {
                        "200": _json("StatusResponse", "The job's current status."),
                        **_ERRORS,
                        "404": _json(
                            "Error", "No job with this request id (Pixazo: the route matched)."
                        ),
                        "502": {
                            "description": "Bad Gateway (an HTML page from a proxy).",
                            "content": {"text/html": {"schema": {"type": "string"}}},
                        },
                    },
                }
            },
            "/files/{request_id}/{name}": {
                "get": {
                    "operationId": "getFile",
                    "summary": "A finished job's image (stands in for the CDN; no key needed)",
                    "security": [],
                    "parameters": [
                        {
                            "name": "request_id",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string"},
                        },
                        {
                            "name": "name",
                            "in": "path",
                            "required": True,
                            "description": "`1.png`, `2.png`, ... in the job's output format.",
                            "schema": {"type": "string"},
                        },
                    ],
                    "responses": {
                        "200": {
                            "description": "The image.",
                            "content": {
                                media: {"schema": {"type": "string", "format": "binary"}}
                                for media in ("image/png", "image/jpeg", "image/webp")
                            },
                        },
                        "404": _json("Error", "No such file (or the job has not finished)."),
                        "429": {
                            "description": "The CDN's rate limit (Cloudflare: 'error code: 1015').",
                            "headers": _RETRY_AFTER,
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        },
                    },
                }
            },
        },
        "components": {
            "securitySchemes": {
                "subscriptionKey": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "Ocp-Apim-Subscription-Key",
                }
            },
            "schemas": {
                **{cls.__name__: _request_schema(cls) for cls in OPERATIONS.values()},
                "SubmitResponse": {
                    "type": "object",
                    "required": ["request_id", "status", "polling_url"],
                    "properties": {
                        "request_id": {"type": "string"},
                        "status": {"type": "string", "enum": statuses},
                        "polling_url": {"type": "string", "format": "uri"},
                    },
                },
                "StatusResponse": {
                    "type": "object",
                    "required": ["request_id", "status", "model_id", "error", "output"],
                    "properties": {
                        "request_id": {"type": "string"},
                        "status": {"type": "string", "enum": statuses},
                        "model_id": {"type": "string"},
                        "error": _NULLABLE_STRING,
                        "output": {
                            "oneOf": [
                                {"type": "null"},
                                {
                                    "type": "object",
                                    "required": ["media_url", "media_type"],
                                    "properties": {
                                        "media_url": {
                                            "type": "array",
                                            "items": {"type": "string"},
                                            "minItems": 1,
                                        },
                                        "media_type": {"type": "string"},
                                    },
                                },
                            ]
                        },
                        "created_at": _TIMESTAMP,
                        "updated_at": _TIMESTAMP,
                        "completed_at": _TIMESTAMP,
                    },
                },
                "Error": {
                    "description": "Pixazo's error shape.",
                    "type": "object",
                    "required": ["error", "message"],
                    "properties": {
                        "error": {"type": "string"},
                        "message": {"type": "string"},
                    },
                },
                "GatewayError": {
                    "description": "Azure API Management's error shape (the gateway in front).",
                    "type": "object",
                    "required": ["statusCode", "message"],
                    "properties": {
                        "statusCode": {"type": "integer"},
                        "message": {"type": "string"},
                    },
                },
            },
        },
    }


def openapi_document() -> dict[str, Any]:
    """The emulator's OpenAPI 3.1 document (a fresh copy each call)."""
    return copy.deepcopy(_document())
