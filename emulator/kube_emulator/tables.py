"""Server-side printing (``meta.k8s.io/v1 Table``), which ``kubectl get`` asks for.

Columns are Name, the CRD version's ``additionalPrinterColumns`` (or a few built-in ones for
Deployments), and Age. The column ``jsonPath`` supports the subset CRDs use in practice: ``.a.b``,
``[n]``, ``[*]`` and ``[?(@.key=="value")]`` filters.
"""

from __future__ import annotations

import calendar
import re
import time
from collections.abc import Callable, Iterable
from typing import Any

from kube_emulator.resources import ResourceInfo

_TOKEN = re.compile(
    r"""\.([A-Za-z0-9_$-]+)|\[(\d+|\*)\]|\[\?\(@\.([A-Za-z0-9_.-]+)\s*==\s*["']([^"']*)["']\)\]"""
)

NAME_COLUMN = {
    "name": "Name",
    "type": "string",
    "format": "name",
    "description": "Name must be unique within a namespace.",
    "priority": 0,
}
AGE_COLUMN = {
    "name": "Age",
    "type": "string",
    "format": "",
    "description": "CreationTimestamp is a timestamp representing the server time when this object was created.",
    "priority": 0,
}
_DEPLOYMENT_COLUMNS: tuple[dict[str, Any], ...] = (
    {"name": "Ready", "type": "string", "jsonPath": "__ready__"},
    {"name": "Up-to-date", "type": "integer", "jsonPath": ".status.updatedReplicas"},
    {"name": "Available", "type": "integer", "jsonPath": ".status.availableReplicas"},
)


def jsonpath(obj: Any, path: str) -> list[Any]:
    """Evaluate the supported JSONPath subset; returns every match."""
    text = path.strip()
    if text.startswith("{") and text.endswith("}"):
        text = text[1:-1]
    text = text.removeprefix("$")
    values: list[Any] = [obj]
    position = 0
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None:
            return []
        position = match.end()
        field, index, filter_key, filter_value = match.groups()
        out: list[Any] = []
        for value in values:
            if field is not None:
                if isinstance(value, dict) and field in value:
                    out.append(value[field])
            elif index is not None:
                if isinstance(value, list):
                    if index == "*":
                        out.extend(value)
                    elif int(index) < len(value):
                        out.append(value[int(index)])
            elif isinstance(value, list):
                for item in value:
                    probe: Any = item
                    for part in filter_key.split("."):
                        probe = probe.get(part) if isinstance(probe, dict) else None
                    if probe is not None and str(probe) == filter_value:
                        out.append(item)
        values = out
    return values


def age(timestamp: str | None, now: float) -> str:
    if not timestamp:
        return "<unknown>"
    try:
        created = calendar.timegm(time.strptime(timestamp, "%Y-%m-%dT%H:%M:%SZ"))
    except ValueError:
        return "<unknown>"
    seconds = max(0, int(now - created))
    if seconds < 120:
        return f"{seconds}s"
    minutes = seconds // 60
    if minutes < 10:
        return f"{minutes}m{seconds % 60}s" if seconds % 60 else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    hours = minutes // 60
    if hours < 48:
        return f"{hours}h"
    return f"{hours // 24}d"


def _columns(info: ResourceInfo) -> list[dict[str, Any]]:
    if info.printer_columns:
        return [dict(c) for c in info.printer_columns]
    if info.group == "apps" and info.plural == "deployments":
        return [dict(c) for c in _DEPLOYMENT_COLUMNS]
    return []


def _cell(obj: dict[str, Any], column: dict[str, Any], now: float) -> Any:
    path = str(column.get("jsonPath", ""))
    if path == "__ready__":
        status = obj.get("status") or {}
        return f"{status.get('readyReplicas', 0)}/{(obj.get('spec') or {}).get('replicas', 0)}"
    found = jsonpath(obj, path)
    if not found:
        return None
    value = found[0] if len(found) == 1 else ",".join(str(v) for v in found)
    if column.get("type") == "date":
        return age(str(value), now)
    return value


def table(
    info: ResourceInfo,
    objects: Iterable[dict[str, Any]],
    *,
    include_object: str = "Metadata",
    resource_version: str | None = None,
    with_columns: bool = True,
    clock: Callable[[], float] = time.time,
) -> dict[str, Any]:
    now = clock()
    extra = _columns(info)
    has_age = any(str(c.get("name", "")).lower() == "age" for c in extra)
    definitions = [NAME_COLUMN]
    for column in extra:
        definitions.append(
            {
                "name": column.get("name", ""),
                "type": "string" if column.get("type") == "date" else column.get("type", "string"),
                "format": column.get("format", ""),
                "description": column.get("description", ""),
                "priority": int(column.get("priority", 0)),
            }
        )
    if not has_age:
        definitions.append(AGE_COLUMN)
    rows = []
    for obj in objects:
        meta = obj.get("metadata") or {}
        cells: list[Any] = [meta.get("name")]
        cells.extend(_cell(obj, column, now) for column in extra)
        if not has_age:
            cells.append(age(meta.get("creationTimestamp"), now))
        row: dict[str, Any] = {"cells": cells}
        if include_object == "Object":
            row["object"] = obj
        elif include_object != "None":
            row["object"] = {
                "kind": "PartialObjectMetadata",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": meta,
            }
        rows.append(row)
    result: dict[str, Any] = {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": resource_version} if resource_version else {},
        "rows": rows,
    }
    if with_columns:
        result["columnDefinitions"] = definitions
    else:
        result["columnDefinitions"] = None
    return result
