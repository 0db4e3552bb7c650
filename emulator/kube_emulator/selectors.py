"""Label and field selectors, as the Kubernetes API parses them from query strings.

Label selectors support ``k=v``, ``k==v``, ``k!=v``, ``k in (a,b)``, ``k notin (a,b)``, ``k``
(exists), ``!k`` (does not exist), ``k>n`` and ``k<n``. Field selectors support ``=``, ``==`` and
``!=`` on any dotted path (``metadata.name``, ``metadata.namespace``, ``status.phase`` ...).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kube_emulator.errors import ApiError, bad_request

_NAME = r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"
_LABEL_NAME = re.compile(rf"^{_NAME}$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_REQUIREMENT = re.compile(
    r"^\s*(?P<neg>!)?\s*(?P<key>[^\s=!<>(),]+)\s*"
    r"(?:(?P<op>==|=|!=|<|>|\s+in\s+|\s+notin\s+)\s*(?P<value>.*?))?\s*$",
)


def label_key_error(key: str) -> str | None:
    """Why ``key`` is not a valid label/annotation key, or None."""
    prefix, slash, name = key.rpartition("/")
    if slash and (not prefix or len(prefix) > 253 or not _DNS_SUBDOMAIN.match(prefix)):
        return "prefix part must be a lowercase RFC 1123 subdomain"
    if not name or len(name) > 63 or not _LABEL_NAME.match(name):
        return (
            "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and "
            "end with an alphanumeric character (at most 63 characters)"
        )
    return None


def label_value_error(value: Any) -> str | None:
    """Why ``value`` is not a valid label value, or None."""
    if not isinstance(value, str):
        return "must be a string"
    if value and (len(value) > 63 or not _LABEL_NAME.match(value)):
        return (
            "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or "
            "'.', and must start and end with an alphanumeric character (at most 63 characters)"
        )
    return None


@dataclass(frozen=True, slots=True)
class Requirement:
    key: str
    op: str  # "=", "!=", "in", "notin", "exists", "!", "<", ">"
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        op = self.op
        if op == "=":
            return labels.get(self.key) == self.values[0]
        if op == "in":
            return labels.get(self.key) in self.values
        if op == "exists":
            return self.key in labels
        if op == "!":
            return self.key not in labels
        if op == "!=":
            return labels.get(self.key) != self.values[0]
        if op == "notin":
            return labels.get(self.key) not in self.values
        value = labels.get(self.key)
        if value is None:
            return False
        try:
            number = int(value)
        except ValueError:
            return False
        return number < int(self.values[0]) if op == "<" else number > int(self.values[0])

    @property
    def indexable(self) -> bool:
        """Whether the label index can produce the candidates (the key must be present)."""
        return self.op in ("=", "in", "exists")


def _split_top_level(text: str) -> list[str]:
    parts: list[str] = []
    depth = 0
    current: list[str] = []
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return [part for part in (p.strip() for p in parts) if part]


@dataclass(frozen=True, slots=True)
class LabelSelector:
    requirements: tuple[Requirement, ...] = ()

    @classmethod
    def parse(cls, text: str | None) -> LabelSelector:
        if not text or not text.strip():
            return cls()
        reqs: list[Requirement] = []
        for part in _split_top_level(text):
            match = _REQUIREMENT.match(part)
            if match is None:
                raise bad_request(f"unable to parse requirement: {part!r}")
            key, op, value = match["key"], match["op"], match["value"]
            if match["neg"]:
                if op:
                    raise bad_request(f"unable to parse requirement: {part!r}")
                reqs.append(Requirement(key, "!"))
                continue
            if key_error := label_key_error(key):
                raise bad_request(f"unable to parse requirement: invalid label key {key!r}: {key_error}")
            if not op:
                reqs.append(Requirement(key, "exists"))
                continue
            op = op.strip()
            if op in ("in", "notin"):
                value = value.strip()
                if not (value.startswith("(") and value.endswith(")")):
                    raise bad_request(f"unable to parse requirement: {part!r}: expected a (list)")
                values = tuple(v.strip() for v in value[1:-1].split(",") if v.strip())
                reqs.append(Requirement(key, op, values))
            elif op in ("<", ">"):
                try:
                    int(value)
                except ValueError:
                    raise bad_request(f"unable to parse requirement: {part!r}: not an integer") from None
                reqs.append(Requirement(key, op, (value,)))
            else:
                if label_value_error(value):
                    raise bad_request(f"unable to parse requirement: invalid label value {value!r}")
                reqs.append(Requirement(key, "!=" if op == "!=" else "=", (value,)))
        return cls(tuple(reqs))

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any] | None) -> LabelSelector:
        """From a ``metav1.LabelSelector`` (``matchLabels`` + ``matchExpressions``)."""
        if not spec:
            return cls()
        reqs = [Requirement(str(k), "=", (str(v),)) for k, v in (spec.get("matchLabels") or {}).items()]
        ops = {"In": "in", "NotIn": "notin", "Exists": "exists", "DoesNotExist": "!"}
        for expr in spec.get("matchExpressions") or []:
            op = ops.get(str(expr.get("operator")))
            if op is None:
                raise ApiError(422, "Invalid", f"invalid label selector operator: {expr.get('operator')!r}")
            reqs.append(
                Requirement(str(expr.get("key")), op, tuple(str(v) for v in expr.get("values") or ()))
            )
        return cls(tuple(reqs))

    def __bool__(self) -> bool:
        return bool(self.requirements)

    def matches(self, labels: Mapping[str, str] | None) -> bool:
        labels = labels or {}
        return all(req.matches(labels) for req in self.requirements)

    def __str__(self) -> str:
        out: list[str] = []
        for req in self.requirements:
            if req.op == "exists":
                out.append(req.key)
            elif req.op == "!":
                out.append(f"!{req.key}")
            elif req.op in ("in", "notin"):
                out.append(f"{req.key} {req.op} ({','.join(req.values)})")
            else:
                out.append(f"{req.key}{req.op}{req.values[0]}")
        return ",".join(out)


def lookup_path(obj: Mapping[str, Any], path: str) -> Any:
    value: Any = obj
    for part in path.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


@dataclass(frozen=True, slots=True)
class FieldSelector:
    requirements: tuple[tuple[str, bool, str], ...] = ()  # (path, equal?, value)

    @classmethod
    def parse(cls, text: str | None) -> FieldSelector:
        if not text or not text.strip():
            return cls()
        reqs: list[tuple[str, bool, str]] = []
        for part in _split_top_level(text):
            for op, equal in (("!=", False), ("==", True), ("=", True)):
                if op in part:
                    path, _, value = part.partition(op)
                    reqs.append((path.strip(), equal, value.strip()))
                    break
            else:
                raise bad_request(f"invalid field selector: {part!r}: expected an operator")
        return cls(tuple(reqs))

    def __bool__(self) -> bool:
        return bool(self.requirements)

    def exact_name(self) -> str | None:
        """The name the selector pins with ``metadata.name=``, if any (to avoid a scan)."""
        for path, equal, value in self.requirements:
            if equal and path == "metadata.name":
                return value
        return None

    def matches(self, obj: Mapping[str, Any]) -> bool:
        for path, equal, expected in self.requirements:
            value = lookup_path(obj, path)
            if isinstance(value, bool):
                text = "true" if value else "false"
            else:
                text = "" if value is None else str(value)
            if (text == expected) != equal:
                return False
        return True
