"""JSON in and out, and the type checks the body parsers share."""

from __future__ import annotations

import json
from typing import Any

import orjson

from .errors import InputError


def loads(body: bytes) -> Any:
    """Parse JSON; NaN/Infinity literals are parsed (and rejected later, naming the field)."""
    if not body:
        raise InputError(400, "request body is empty; expected a JSON object", "body", "malformed_json")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as first:
        try:  # stdlib json accepts NaN/Infinity/1e999 so that validation can name the field
            return json.loads(body)
        except (ValueError, RecursionError):
            raise InputError(400, f"malformed JSON: {first}", "body", "malformed_json") from None


def dumps(obj: Any) -> bytes:
    return orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY)


def type_name(v: Any) -> str:
    if v is None:
        return "null"
    return {bool: "boolean", str: "string", list: "array", dict: "object"}.get(type(v), type(v).__name__)


def want_object(v: Any, field: str, what: str = "an object") -> dict[str, Any]:
    if type(v) is not dict:
        message = (
            f"request body must be a JSON object, got {type_name(v)}"
            if field == "body"
            else f"{field}: expected {what}, got {type_name(v)}"
        )
        raise InputError(422, message, field, "wrong_type")
    return v
