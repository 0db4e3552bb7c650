"""JSON in and out, and the typed accessors every body parser uses.

Every value taken from a request goes through one of these accessors (or an equally explicit
``type(x) is ...`` check), so a wrong JSON type at any position is a 422 naming that position,
never a ``TypeError`` deeper down. Nothing here recurses into client data: the parsers descend
exactly as deep as the protocol allows, so nesting depth cannot exhaust the stack.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Collection
from typing import Any, Final

import orjson

from .errors import InputError

DOUBLE_MAX: Final = sys.float_info.max


def loads(body: bytes) -> Any:
    """Parse JSON; NaN/Infinity literals are parsed (and rejected later, naming the field).

    orjson refuses nesting deeper than 1,024 levels and the standard library's fallback stops at
    the interpreter's recursion limit: both answer 400 ``malformed_json``.
    """
    if not body:
        raise InputError(400, "request body is empty; expected a JSON object", "body", "malformed_json")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as first:
        try:  # stdlib json accepts NaN/Infinity/1e999 so that validation can name the field
            return json.loads(body, parse_int=_int)
        except (ValueError, RecursionError):
            raise InputError(400, f"malformed JSON: {first}", "body", "malformed_json") from None


def _int(text: str) -> int | float:
    """Integers beyond a double's range (orjson refuses anything beyond 64 bits, so only this slow
    path sees them) become infinity, which validation refuses naming the field: they would round
    to the largest double or overflow later."""
    value = int(text)
    if -DOUBLE_MAX <= value <= DOUBLE_MAX:
        return value
    return math.inf if value > 0 else -math.inf


def dumps(obj: Any) -> bytes:
    return orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY)


def type_name(v: Any) -> str:
    if v is None:
        return "null"
    return {
        bool: "boolean",
        str: "string",
        list: "array",
        dict: "object",
        int: "number",
        float: "number",
    }.get(type(v), type(v).__name__)


def want_object(v: Any, field: str, what: str = "an object") -> dict[str, Any]:
    if type(v) is not dict:
        message = (
            f"request body must be a JSON object, got {type_name(v)}"
            if field == "body"
            else f"{field}: expected {what}, got {type_name(v)}"
        )
        raise InputError(422, message, field, "wrong_type")
    return v


def check_fields(obj: dict[str, Any], allowed: Collection[str], prefix: str = "") -> None:
    """Refuse fields the protocol does not define: a misspelt or unsupported option must not be
    silently ignored (the client would believe it took effect)."""
    for key in obj:
        if key not in allowed:
            field = f"{prefix}{key}"
            raise InputError(
                422,
                f"{field}: unknown field; expected one of: {', '.join(sorted(allowed))}",
                field,
                "unknown_field",
            )


def want_string(v: Any, field: str) -> str:
    if type(v) is not str:
        raise InputError(422, f"{field}: expected a string, got {type_name(v)}", field, "wrong_type")
    return v


def optional_parameters(obj: dict[str, Any], field: str) -> dict[str, Any]:
    """An OIP ``parameters`` object (absent = empty; null is not an object); its keys are extension
    points."""
    return want_object(obj["parameters"], field) if "parameters" in obj else {}
