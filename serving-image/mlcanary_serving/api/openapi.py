"""The OpenAPI document, generated from the routes table."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, Final

from .common import JSON
from .routing import Route

OPENAPI_VERSION: Final = "3.1.0"

_NUM = {"type": "number"}
_ROW = {"oneOf": [{"type": "array", "items": _NUM}, {"type": "object", "additionalProperties": _NUM}]}
_TENSOR = {
    "type": "object",
    "required": ["name", "shape", "datatype", "data"],
    "properties": {
        "name": {"type": "string"},
        "shape": {"type": "array", "items": {"type": "integer"}},
        "datatype": {"type": "string"},
        "data": {"type": "array"},
    },
}
REQUEST_SCHEMAS: Final[dict[str, dict[str, Any]]] = {
    "PredictRequest": {
        "type": "object",
        "properties": {
            "features": {"oneOf": [_ROW, {"type": "array", "items": _ROW}]},
            "instances": {"type": "array", "items": _ROW},
        },
    },
    "InferenceRequest": {
        "type": "object",
        "required": ["inputs"],
        "properties": {"id": {"type": "string"}, "inputs": {"type": "array", "items": _TENSOR}},
    },
    "FeedbackRequest": {
        "type": "object",
        "properties": {
            "request_id": {"type": "string"},
            "label": {},
            "labels": {"type": "array"},
            "features": {"oneOf": [_ROW, {"type": "array", "items": _ROW}]},
        },
    },
}


def _operation(route: Route) -> dict[str, Any]:
    op: dict[str, Any] = {
        "operationId": route.operation_id,
        "summary": route.summary,
        "tags": [route.tag],
        "parameters": [
            {"name": p, "in": "path", "required": True, "schema": {"type": "string"}}
            for p in re.findall(r"{(\w+)}", route.path)
        ],
        "responses": {"200": {"description": "Successful Response"}},
    }
    if route.description:
        op["description"] = route.description
    if route.request_body is not None:
        schema = {"$ref": f"#/components/schemas/{route.request_body}"}
        op["requestBody"] = {"required": True, "content": {JSON: {"schema": schema}}}
    return op


def openapi_document(routes: Sequence[Route], title: str, version: str, summary: str) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        paths.setdefault(route.path, {})[route.method.lower()] = _operation(route)
    return {
        "openapi": OPENAPI_VERSION,
        "info": {"title": title, "version": version, "summary": summary},
        "paths": paths,
        "components": {"schemas": REQUEST_SCHEMAS},
    }
