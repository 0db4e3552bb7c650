"""The simple protocol (``POST /predict``; ``instances`` is accepted as an alias of ``features``)::

    {"features": [x1, ..., xn]}                      one row, positional
    {"features": {"mean radius": 14.1, ...}}         one row, by name (optional features may be left out)
    {"features": [[...], [...]]}                     a batch, positional
    {"features": [{"mean radius": ...}, ...]}        a batch, by name

Any other top-level field is refused (422 ``unknown_field``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from .codec import check_fields, type_name, want_object
from .errors import InputError
from .validator import Validator

REQUEST_FIELDS = ("features", "instances")

Row = tuple[Any, float, list[float] | None]  # label, score, probabilities (one per predicted row)


@dataclass(frozen=True)
class Parsed:
    X: npt.NDArray[np.float64]
    batch: bool  # the caller sent a list of rows: answer with lists
    request_id: str | None = None  # v2 "id"
    outputs: tuple[str, ...] | None = None  # v2 outputs asked for (None: all)
    field: str = "features"  # the request field holding the rows (errors about a row name it) ...
    indexed_rows: bool = False  # ... as field[i] (a batch of rows) rather than field
    binary_outputs: tuple[str, ...] = ()  # v2 outputs to answer as binary data (binary tensor extension)


def rows_field(obj: dict[str, Any]) -> str:
    """Which of ``features`` / ``instances`` holds the rows."""
    if "features" in obj:
        if "instances" in obj:
            raise InputError(422, "send either 'features' or 'instances', not both", "instances", "ambiguous")
        return "features"
    if "instances" in obj:
        return "instances"
    raise InputError(422, "missing field 'features' (or 'instances')", "features", "missing_field")


def parse_rows(data: Any, field: str, v: Validator) -> Parsed:
    """One row or a batch of rows, positional or by name."""
    if type(data) is dict:
        X = v.to_matrix([v.named(data, field)], lambda r, c: f"{field}.{v.names[c]}", True)
        return Parsed(X, False, field=field)
    if type(data) is not list:
        raise InputError(
            422, f"{field}: expected an array or an object, got {type_name(data)}", field, "wrong_type"
        )
    if not data:
        raise InputError(422, f"{field}: empty; send at least one row", field, "empty_batch")
    first = data[0]
    if type(first) is not list and type(first) is not dict:
        return Parsed(
            v.to_matrix([v.positional(data, field)], lambda r, c: f"{field}[{c}]"), False, field=field
        )
    v.check_rows(len(data), field)
    named = type(first) is dict
    rows: list[list[Any]] = []
    for i, r in enumerate(data):
        f = f"{field}[{i}]"
        if named and type(r) is dict:
            rows.append(v.named(r, f))
        elif not named and type(r) is list:
            rows.append(v.positional(r, f))
        else:
            want = "an object" if named else "an array"
            raise InputError(422, f"{f}: expected {want} like row 0, got {type_name(r)}", f, "wrong_type")
    if named:
        return Parsed(
            v.to_matrix(rows, lambda r, c: f"{field}[{r}].{v.names[c]}", True),
            True,
            field=field,
            indexed_rows=True,
        )
    return Parsed(v.to_matrix(rows, lambda r, c: f"{field}[{r}][{c}]"), True, field=field, indexed_rows=True)


def parse_simple(obj: Any, v: Validator) -> Parsed:
    body = want_object(obj, "body")
    check_fields(body, REQUEST_FIELDS)
    field = rows_field(body)
    return parse_rows(body[field], field, v)


def render_simple(parsed: Parsed, rows: list[Row], identity: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = dict(identity)
    if parsed.batch:
        out["predictions"] = [r[0] for r in rows]
        out["scores"] = [r[1] for r in rows]
        if rows and rows[0][2] is not None:
            out["probabilities"] = [r[2] for r in rows]
    else:
        label, score, proba = rows[0]
        out["prediction"] = label
        out["score"] = score
        if proba is not None:
            out["probabilities"] = proba
    return out
