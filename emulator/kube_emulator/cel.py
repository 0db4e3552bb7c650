"""CEL validation rules (``x-kubernetes-validations``) of CRD schemas, evaluated with cel-python (``celpy``).

cel-python is pure Python and implements the CEL core the rules here use: ``has()``, the ``all``,
``exists``, ``exists_one``, ``filter`` and ``map`` macros, ``size()``, ``duration()``, ``timestamp()``,
``matches``, ``startsWith``/``endsWith``/``contains``. Kubernetes' string extensions (``lowerAscii``,
``upperAscii``, ``trim``, ``split``, ``join``, ``replace``, ``indexOf``) are added below.

Like a real API server: each rule is compiled once (programs are cached by their text), a rule runs
for every value its schema node validates (each list item, each map value), transition rules (those
that read ``oldSelf``) run only on update and only where the old value exists, ``messageExpression``
is used when it evaluates to a string, and a failure is a cause ``<path>: Invalid value: "<type>":
<message>`` (``reason`` and ``fieldPath`` honoured).
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import celpy
from celpy import celtypes
from celpy.adapter import json_to_cel

from kube_emulator.errors import Cause

logger = logging.getLogger(__name__)

_REASONS = {
    "FieldValueInvalid": "Invalid value: {value}: {message}",
    "FieldValueForbidden": "Forbidden: {message}",
    "FieldValueRequired": "Required value: {message}",
    "FieldValueDuplicate": "Duplicate value: {value}: {message}",
}


def _string_function(fn: Callable[..., Any]) -> Callable[..., Any]:
    def wrapper(*args: Any) -> Any:
        result = fn(*args)
        if isinstance(result, str):
            return celtypes.StringType(result)
        if isinstance(result, list):
            return celtypes.ListType([celtypes.StringType(x) for x in result])
        if isinstance(result, int) and not isinstance(result, bool):
            return celtypes.IntType(result)
        return result

    return wrapper


# Kubernetes' CEL string library (k8s.io/apiserver/pkg/cel/library, ext.Strings).
EXTENSIONS: dict[str, Callable[..., Any]] = {
    "lowerAscii": _string_function(lambda s: str(s).lower()),
    "upperAscii": _string_function(lambda s: str(s).upper()),
    "trim": _string_function(lambda s: str(s).strip()),
    "split": _string_function(lambda s, sep, *n: str(s).split(str(sep))),
    "join": _string_function(lambda items, sep="": str(sep).join(str(i) for i in items)),
    "replace": _string_function(lambda s, old, new, *n: str(s).replace(str(old), str(new))),
    "indexOf": _string_function(lambda s, sub, *start: str(s).find(str(sub))),
    "lastIndexOf": _string_function(lambda s, sub, *start: str(s).rfind(str(sub))),
}

_ENVIRONMENT = celpy.Environment()


@functools.lru_cache(maxsize=4096)
def compile_rule(expression: str) -> Any:
    """A runnable program for one rule (cached: every CRD version sharing a rule shares the program)."""
    return _ENVIRONMENT.program(_ENVIRONMENT.compile(expression), functions=EXTENSIONS)


# One step from a schema node to a child: ("property", name), ("items", None), ("additional", None).
Step = tuple[str, str | None]


@dataclass(frozen=True, slots=True)
class Rule:
    path: tuple[Step, ...]
    rule: str
    message: str | None
    message_expression: str | None
    reason: str
    field_path: str | None
    transition: bool


def _collect(schema: Any, path: tuple[Step, ...], out: list[Rule]) -> None:
    if not isinstance(schema, Mapping):
        return
    for entry in schema.get("x-kubernetes-validations") or []:
        if not isinstance(entry, Mapping) or not entry.get("rule"):
            continue
        text = str(entry["rule"])
        out.append(
            Rule(
                path=path,
                rule=text,
                message=entry.get("message"),
                message_expression=entry.get("messageExpression"),
                reason=str(entry.get("reason") or "FieldValueInvalid"),
                field_path=entry.get("fieldPath"),
                transition=re.search(r"\boldSelf\b", text) is not None,
            )
        )
    for name, sub in (schema.get("properties") or {}).items():
        _collect(sub, (*path, ("property", str(name))), out)
    if isinstance(schema.get("items"), Mapping):
        _collect(schema["items"], (*path, ("items", None)), out)
    if isinstance(schema.get("additionalProperties"), Mapping):
        _collect(schema["additionalProperties"], (*path, ("additional", None)), out)


def _cel_type_name(value: Any) -> str:
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


def _field(base: str, step: str) -> str:
    if step.startswith("["):
        return base + step
    return f"{base}.{step}" if base else step


def _values(value: Any, old: Any, path: tuple[Step, ...], field: str) -> Iterator[tuple[Any, Any, str]]:
    """(value, old value or None, field path) for every value a schema path reaches."""
    if not path:
        yield value, old, field
        return
    (kind, name), rest = path[0], path[1:]
    if kind == "property":
        if isinstance(value, Mapping) and name in value:
            old_child = old.get(name) if isinstance(old, Mapping) else None
            yield from _values(value[name], old_child, rest, _field(field, str(name)))
    elif kind == "items":
        if isinstance(value, list):
            for index, item in enumerate(value):  # list items are not correlated with old ones
                yield from _values(item, None, rest, _field(field, f"[{index}]"))
    elif isinstance(value, Mapping):
        for key, item in value.items():
            old_child = old.get(key) if isinstance(old, Mapping) else None
            yield from _values(item, old_child, rest, _field(field, f"[{key}]"))


class CelValidator:
    """The rules of one CRD version's schema, compiled once."""

    def __init__(self, schema: Mapping[str, Any]) -> None:
        rules: list[Rule] = []
        _collect(schema, (), rules)
        self.rules = rules
        self.errors: list[str] = []
        for rule in rules:  # compile now: a broken rule is the CRD's error, as on a real server
            for text in (rule.rule, rule.message_expression):
                if text:
                    try:
                        compile_rule(text)
                    except Exception as exc:
                        self.errors.append(f"{text!r}: {exc}")

    def __bool__(self) -> bool:
        return bool(self.rules)

    def validate(
        self, obj: Mapping[str, Any], old: Mapping[str, Any] | None, only: str | None = None
    ) -> list[Cause]:
        causes: list[Cause] = []
        for rule in self.rules:
            if only is not None and (not rule.path or rule.path[0] != ("property", only)):
                continue
            if rule.transition and old is None:
                continue
            for value, old_value, field in _values(obj, old, rule.path, ""):
                if rule.transition and old_value is None:
                    continue
                cause = self._check(rule, value, old_value, field)
                if cause is not None:
                    causes.append(cause)
        return causes

    def _check(self, rule: Rule, value: Any, old_value: Any, field: str) -> Cause | None:
        activation: dict[str, Any] = {"self": json_to_cel(value)}
        if rule.transition:
            activation["oldSelf"] = json_to_cel(old_value)
        try:
            result = compile_rule(rule.rule).evaluate(activation)
        except Exception as exc:  # evaluation errors fail the rule, as on a real server
            message = f"{exc} evaluating rule: {rule.rule}"
        else:
            if isinstance(result, celtypes.BoolType) and bool(result):
                return None
            if not isinstance(result, celtypes.BoolType):
                message = f"rule did not evaluate to a bool: {rule.rule}"
            else:
                message = self._message(rule, activation)
        if rule.field_path:
            field = _field(field, rule.field_path.lstrip("."))
        template = _REASONS.get(rule.reason, _REASONS["FieldValueInvalid"])
        text = template.format(value=f'"{_cel_type_name(value)}"', message=message)
        return Cause(field, rule.reason if rule.reason in _REASONS else "FieldValueInvalid", text)

    @staticmethod
    def _message(rule: Rule, activation: dict[str, Any]) -> str:
        if rule.message_expression:
            try:
                produced = compile_rule(rule.message_expression).evaluate(activation)
                if isinstance(produced, str) and produced.strip():
                    return str(produced)
            except Exception as exc:
                logger.debug("messageExpression %r failed: %s", rule.message_expression, exc)
        return str(rule.message) if rule.message else f"failed rule: {rule.rule}"
