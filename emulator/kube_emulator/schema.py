"""Structural-schema handling for custom resources: defaulting, pruning and validation.

A CRD version's ``openAPIV3Schema`` is translated to JSON Schema (Draft 7) for :mod:`jsonschema`:
``nullable``, ``x-kubernetes-int-or-string`` and OpenAPI 3.0's boolean ``exclusiveMinimum`` /
``exclusiveMaximum`` are rewritten. Like a real API server, unknown fields are pruned silently (unless
``x-kubernetes-preserve-unknown-fields``), ``default`` values are filled in, and violations become
``Invalid`` causes whose ``field`` is the path (``spec.rollout.steps[1].weight``).
CEL rules (``x-kubernetes-validations``) are compiled here once and run by :mod:`kube_emulator.cel`;
``format`` is not checked.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import jsonschema

from kube_emulator.cel import CelValidator
from kube_emulator.errors import Cause
from kube_emulator.patch import clone

_ROOT_FIELDS = ("apiVersion", "kind", "metadata")


def translate(schema: Any) -> Any:
    """An OpenAPI v3 structural schema as Draft-7 JSON Schema."""
    if isinstance(schema, list):
        return [translate(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key in ("properties", "patternProperties", "definitions"):
            out[key] = {k: translate(v) for k, v in value.items()} if isinstance(value, dict) else value
        elif key in ("items", "additionalProperties", "not", "allOf", "anyOf", "oneOf"):
            out[key] = translate(value)
        elif key.startswith("x-kubernetes-") or key in ("description", "example", "externalDocs"):
            continue
        else:
            out[key] = value
    nullable = bool(schema.get("nullable"))
    out.pop("nullable", None)
    if schema.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        if "anyOf" not in out:
            out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
        if nullable:
            out["anyOf"] = [*out["anyOf"], {"type": "null"}]
    elif nullable:
        if "type" in out:
            types = out["type"] if isinstance(out["type"], list) else [out["type"]]
            out["type"] = [*types, "null"]
        if "enum" in out and None not in out["enum"]:
            out["enum"] = [*out["enum"], None]
    for bound, exclusive in (("minimum", "exclusiveMinimum"), ("maximum", "exclusiveMaximum")):
        if isinstance(out.get(exclusive), bool) and out.pop(exclusive) and bound in out:
            out[exclusive] = out.pop(bound)
    return out


def _format_path(parts: Iterable[Any]) -> str:
    text = ""
    for part in parts:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text


def _show(value: Any) -> str:
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"), sort_keys=True)[:200]
    return json.dumps(value)


class StructuralSchema:
    """One CRD version's schema: prune + default + validate a custom resource."""

    def __init__(self, schema: dict[str, Any]) -> None:
        self.schema = schema
        translated = translate(schema)
        properties = dict(translated.get("properties") or {})
        for field in _ROOT_FIELDS:  # the API server validates these itself
            properties.pop(field, None)
        translated["properties"] = properties
        required = [r for r in translated.get("required") or [] if r not in _ROOT_FIELDS]
        if required:
            translated["required"] = required
        else:
            translated.pop("required", None)
        jsonschema.Draft7Validator.check_schema(translated)
        self._validator = jsonschema.Draft7Validator(translated)
        self.cel = CelValidator(schema)
        if self.cel.errors:
            raise ValueError("CEL compilation failed: " + "; ".join(self.cel.errors))

    # ------------------------------------------------------------------------------- pruning

    def prune(self, obj: dict[str, Any]) -> list[str]:
        """Fill defaults and drop unknown fields, in place. Returns the pruned field paths."""
        pruned: list[str] = []
        properties = self.schema.get("properties") or {}
        if self.schema.get("x-kubernetes-preserve-unknown-fields"):
            for key, sub in properties.items():
                if key not in _ROOT_FIELDS and key in obj:
                    obj[key] = _prune(obj[key], sub, key, pruned)
            return pruned
        _default(obj, properties)
        for key in list(obj):
            if key in _ROOT_FIELDS:
                continue
            if key not in properties:
                del obj[key]
                pruned.append(key)
            else:
                obj[key] = _prune(obj[key], properties[key], key, pruned)
        return pruned

    # ---------------------------------------------------------------------------- validation

    def validate(self, obj: dict[str, Any], *, only: str | None = None) -> list[Cause]:
        """Causes for every violation (optionally only under the top-level field ``only``)."""
        causes: list[Cause] = []
        for error in sorted(self._validator.iter_errors(obj), key=lambda e: list(map(str, e.absolute_path))):
            path = list(error.absolute_path)
            if only is not None and (not path or path[0] != only) and error.validator != "required":
                continue
            causes.extend(_causes(error, path))
        if only is not None:
            causes = [c for c in causes if c.field == only or c.field.startswith((only + ".", only + "["))]
        return causes


def _default(obj: dict[str, Any], properties: dict[str, Any]) -> None:
    for key, sub in properties.items():
        if key not in obj and isinstance(sub, dict) and "default" in sub:
            obj[key] = clone(sub["default"])


def _prune(value: Any, schema: Any, path: str, pruned: list[str]) -> Any:
    if not isinstance(schema, dict):
        return value
    if isinstance(value, list):
        items = schema.get("items")
        if isinstance(items, dict):
            return [_prune(v, items, f"{path}[{i}]", pruned) for i, v in enumerate(value)]
        return value
    if not isinstance(value, dict):
        return value
    properties = schema.get("properties")
    additional = schema.get("additionalProperties")
    preserve = bool(schema.get("x-kubernetes-preserve-unknown-fields"))
    embedded = bool(schema.get("x-kubernetes-embedded-resource"))
    if isinstance(properties, dict):
        _default(value, properties)
    for key in list(value):
        if isinstance(properties, dict) and key in properties:
            value[key] = _prune(value[key], properties[key], f"{path}.{key}", pruned)
        elif isinstance(additional, dict):
            value[key] = _prune(value[key], additional, f"{path}.{key}", pruned)
        elif preserve or additional is True or (embedded and key in _ROOT_FIELDS):
            continue
        elif properties is None and additional is None and schema.get("type") != "object":
            continue  # an untyped node (only junctors): nothing to prune by
        else:
            del value[key]
            pruned.append(f"{path}.{key}")
    return value


def _causes(error: jsonschema.ValidationError, path: list[Any]) -> list[Cause]:
    field = _format_path(path)
    kind = error.validator
    value = error.instance
    if kind == "required":
        missing = [r for r in error.validator_value if not isinstance(value, dict) or r not in value]
        return [
            Cause(_format_path([*path, name]), "FieldValueRequired", "Required value") for name in missing
        ]
    if kind == "type":
        expected = error.validator_value
        expected_text = " or ".join(expected) if isinstance(expected, list) else str(expected)
        return [
            Cause(
                field,
                "FieldValueTypeInvalid",
                f"Invalid value: {_show(value)}: {field} in body must be of type {expected_text}: "
                f'"{_json_type(value)}"',
            )
        ]
    if kind == "enum":
        supported = ", ".join(_show(v) for v in error.validator_value)
        return [
            Cause(
                field,
                "FieldValueNotSupported",
                f"Unsupported value: {_show(value)}: supported values: {supported}",
            )
        ]
    messages = {
        "maximum": f"should be less than or equal to {error.validator_value}",
        "minimum": f"should be greater than or equal to {error.validator_value}",
        "exclusiveMaximum": f"should be less than {error.validator_value}",
        "exclusiveMinimum": f"should be greater than {error.validator_value}",
        "pattern": f"should match '{error.validator_value}'",
        "maxLength": f"may not be longer than {error.validator_value}",
        "minLength": f"should be at least {error.validator_value} chars long",
        "maxItems": f"must have at most {error.validator_value} items",
        "minItems": f"should have at least {error.validator_value} items",
        "maxProperties": f"must have at most {error.validator_value} properties",
        "minProperties": f"should have at least {error.validator_value} properties",
        "uniqueItems": "shouldn't contain duplicates",
        "multipleOf": f"should be a multiple of {error.validator_value}",
    }
    if kind in ("maxItems", "maxLength", "maxProperties"):
        reason = "FieldValueTooLong" if kind != "maxItems" else "FieldValueTooMany"
        return [Cause(field, reason, f"Too long: {field} in body {messages[kind]}")]
    if kind == "uniqueItems":
        return [Cause(field, "FieldValueDuplicate", f"Duplicate value: {field} {messages[kind]}")]
    detail = messages.get(str(kind), error.message)
    return [Cause(field, "FieldValueInvalid", f"Invalid value: {_show(value)}: {field} in body {detail}")]


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"
