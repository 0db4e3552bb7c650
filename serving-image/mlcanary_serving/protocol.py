"""Wire protocols: request bodies -> validated float matrix, results -> response bodies.

Pure functions (no I/O, no model, no metrics), so every bad-input rule is testable on its own.

Simple protocol (``POST /predict``; ``instances`` is accepted as an alias of ``features``)::

    {"features": [x1, ..., xn]}                      one row, positional
    {"features": {"mean radius": 14.1, ...}}         one row, by name (optional features may be left out)
    {"features": [[...], [...]]}                     a batch, positional
    {"features": [{"mean radius": ...}, ...]}        a batch, by name

Open Inference Protocol v2 (``POST /v2/models/{name}/infer``): one tensor of shape [rows, n]
(or [n]), data flat or nested; or one tensor per feature, named after it, of shape [rows] or
[rows, 1].

Every rejection is an ``InputError`` with an HTTP status and the field it is about.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from .bundle import Schema


class InputError(Exception):
    """A request the server refuses; ``status`` is a 4xx code, ``field`` names the culprit."""

    def __init__(self, status: int, message: str, field: str | None = None, code: str = "invalid_input"):
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field
        self.code = code


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


_NUMBER_TYPES = (int, float)


def _type_name(v: Any) -> str:
    if v is None:
        return "null"
    return {bool: "boolean", str: "string", list: "array", dict: "object"}.get(type(v), type(v).__name__)


class Validator:
    """Checks rows against the bundle's feature schema."""

    def __init__(self, schema: Schema, max_rows: int = 1000, reject_out_of_range: bool = False) -> None:
        f = schema.features
        self.schema = schema
        self.max_rows = max_rows
        self.reject_out_of_range = reject_out_of_range
        self.names = [x.name for x in f]
        self.index = {x.name: i for i, x in enumerate(f)}
        self.lo = np.array([-np.inf if x.min is None else x.min for x in f])
        self.hi = np.array([np.inf if x.max is None else x.max for x in f])
        self.int_idx = np.array([i for i, x in enumerate(f) if x.type == "int"], dtype=int)
        self.defaults: list[float | None] = [x.default for x in f]
        self.required = [x.required for x in f]

    @property
    def n(self) -> int:
        return len(self.names)

    def _label(self, field: str, col: int) -> str:
        return f"{field}[{col}] ({self.names[col]})"

    def positional(self, row: Sequence[Any], field: str) -> list[Any]:
        if len(row) != self.n:
            raise InputError(
                422,
                f"{field}: expected {self.n} feature values, got {len(row)}",
                field,
                "wrong_feature_count",
            )
        for i, v in enumerate(row):
            if type(v) is not float and type(v) is not int:
                raise InputError(
                    422,
                    f"{self._label(field, i)}: expected a number, got {_type_name(v)}",
                    f"{field}[{i}]",
                    "wrong_type",
                )
        return list(row)

    def named(self, row: dict[str, Any], field: str) -> list[Any]:
        out: list[Any] = list(self.defaults)
        for key, v in row.items():
            i = self.index.get(key)
            if i is None:
                raise InputError(
                    422, f"{field}.{key}: unknown feature name", f"{field}.{key}", "unknown_feature"
                )
            if type(v) is not float and type(v) is not int:
                raise InputError(
                    422,
                    f"{field}.{key}: expected a number, got {_type_name(v)}",
                    f"{field}.{key}",
                    "wrong_type",
                )
            out[i] = v
        if len(row) < self.n:
            for i, name in enumerate(self.names):
                if name not in row and self.required[i]:
                    raise InputError(
                        422,
                        f"{field}.{name}: required feature is missing",
                        f"{field}.{name}",
                        "missing_feature",
                    )
        return out

    def to_matrix(
        self, rows: list[list[Any]], field: str, named: bool, batch: bool = False
    ) -> npt.NDArray[np.float64]:
        try:
            X = np.array(rows, dtype=np.float64)
        except OverflowError:
            X = np.array([[_to_float(v) for v in r] for r in rows], dtype=np.float64)
        if not np.isfinite(X).all():
            r, c = np.argwhere(~np.isfinite(X))[0]
            raise InputError(
                422,
                f"{self._where(field, int(r), int(c), batch, named)}: value {X[r, c]} is not a finite "
                "number (NaN and infinity are not allowed)",
                self._field(field, int(r), int(c), batch, named),
                "not_finite",
            )
        if self.int_idx.size:
            sub = X[:, self.int_idx]
            bad = sub != np.round(sub)
            if bad.any():
                r, k = np.argwhere(bad)[0]
                c = int(self.int_idx[k])
                raise InputError(
                    422,
                    f"{self._where(field, int(r), c, batch, named)}: expected an integer, got {X[r, c]}",
                    self._field(field, int(r), c, batch, named),
                    "wrong_type",
                )
        if self.reject_out_of_range:
            bad = (self.lo > X) | (self.hi < X)
            if bad.any():
                r, c = (int(v) for v in np.argwhere(bad)[0])
                raise OutOfRange(
                    f"{self._where(field, r, c, batch, named)}: value {X[r, c]} is outside the allowed "
                    f"range [{self.lo[c]:g}, {self.hi[c]:g}]",
                    self._field(field, r, c, batch, named),
                    bad.sum(axis=0),
                )
        return X

    def _field(self, field: str, r: int, c: int, batch: bool, named: bool) -> str:
        base = f"{field}[{r}]" if batch else field
        return f"{base}.{self.names[c]}" if named else f"{base}[{c}]"

    def _where(self, field: str, r: int, c: int, batch: bool, named: bool) -> str:
        f = self._field(field, r, c, batch, named)
        return f if named else f"{f} ({self.names[c]})"

    def out_of_range_counts(self, X: npt.NDArray[np.float64]) -> npt.NDArray[np.int64] | None:
        """Rows out of range per feature, or None when every value is in range (the usual case)."""
        bad = (self.lo > X) | (self.hi < X)
        if not bad.any():
            return None
        return np.asarray(bad.sum(axis=0), dtype=np.int64)


class OutOfRange(InputError):
    def __init__(self, message: str, field: str, counts: npt.NDArray[np.int64]) -> None:
        super().__init__(422, message, field, "out_of_range")
        self.counts = counts


def _to_float(v: Any) -> float:
    try:
        return float(v)
    except OverflowError:
        return math.inf if v > 0 else -math.inf


@dataclass(frozen=True)
class Parsed:
    X: npt.NDArray[np.float64]
    batch: bool  # the caller sent a list of rows: answer with lists
    request_id: str | None = None  # v2 "id"


def parse_simple(obj: Any, v: Validator) -> Parsed:
    if type(obj) is not dict:
        raise InputError(
            422, f"request body must be a JSON object, got {_type_name(obj)}", "body", "wrong_type"
        )
    if "features" in obj:
        field = "features"
        if "instances" in obj:
            raise InputError(422, "send either 'features' or 'instances', not both", "instances", "ambiguous")
    elif "instances" in obj:
        field = "instances"
    else:
        raise InputError(422, "missing field 'features' (or 'instances')", "features", "missing_field")
    data = obj[field]
    if type(data) is dict:
        return Parsed(v.to_matrix([v.named(data, field)], field, named=True), batch=False)
    if type(data) is not list:
        raise InputError(
            422, f"{field}: expected an array or an object, got {_type_name(data)}", field, "wrong_type"
        )
    if not data:
        raise InputError(422, f"{field}: empty; send at least one row", field, "empty_batch")
    first = data[0]
    if type(first) is not list and type(first) is not dict:
        return Parsed(v.to_matrix([v.positional(data, field)], field, named=False), batch=False)
    if len(data) > v.max_rows:
        raise InputError(
            422, f"{field}: {len(data)} rows exceed the limit of {v.max_rows}", field, "too_many_rows"
        )
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
            raise InputError(422, f"{f}: expected {want} like row 0, got {_type_name(r)}", f, "wrong_type")
    return Parsed(_batch_matrix(v, rows, field, named), batch=True)


def _batch_matrix(v: Validator, rows: list[list[Any]], field: str, named: bool) -> npt.NDArray[np.float64]:
    return v.to_matrix(rows, field, named, batch=True)


V2_NUMERIC = {
    "FP16",
    "FP32",
    "FP64",
    "INT8",
    "INT16",
    "INT32",
    "INT64",
    "UINT8",
    "UINT16",
    "UINT32",
    "UINT64",
}


def _flatten(data: Any, field: str) -> list[Any]:
    if type(data) is not list:
        raise InputError(
            422, f"{field}.data: expected an array, got {_type_name(data)}", f"{field}.data", "wrong_type"
        )
    if data and type(data[0]) is list:
        out: list[Any] = []
        for i, row in enumerate(data):
            if type(row) is not list:
                raise InputError(
                    422, f"{field}.data[{i}]: expected an array", f"{field}.data[{i}]", "wrong_type"
                )
            out.extend(_flatten(row, f"{field}.data[{i}]") if row and type(row[0]) is list else row)
        return out
    return data


def _shape(t: dict[str, Any], field: str) -> list[int]:
    shape = t.get("shape")
    if type(shape) is not list or not shape or not all(type(d) is int and d >= 0 for d in shape):
        raise InputError(
            422, f"{field}.shape: expected a list of non-negative integers", f"{field}.shape", "wrong_shape"
        )
    return shape


def _check_dtype(t: dict[str, Any], field: str) -> None:
    dt = t.get("datatype")
    if dt not in V2_NUMERIC:
        raise InputError(
            422,
            f"{field}.datatype: {dt!r} is not a numeric tensor type ({', '.join(sorted(V2_NUMERIC))})",
            f"{field}.datatype",
            "wrong_type",
        )


def _numbers(values: list[Any], field: str) -> None:
    for i, x in enumerate(values):
        if type(x) is not float and type(x) is not int:
            raise InputError(
                422,
                f"{field}.data[{i}]: expected a number, got {_type_name(x)}",
                f"{field}.data[{i}]",
                "wrong_type",
            )


def parse_v2(obj: Any, v: Validator) -> Parsed:
    if type(obj) is not dict:
        raise InputError(
            422, f"request body must be a JSON object, got {_type_name(obj)}", "body", "wrong_type"
        )
    rid = obj.get("id")
    if rid is not None and type(rid) is not str:
        raise InputError(422, "id: expected a string", "id", "wrong_type")
    inputs = obj.get("inputs")
    if type(inputs) is not list or not inputs:
        raise InputError(422, "inputs: expected a non-empty array of tensors", "inputs", "missing_field")
    for i, t in enumerate(inputs):
        if type(t) is not dict:
            raise InputError(422, f"inputs[{i}]: expected a tensor object", f"inputs[{i}]", "wrong_type")
    if len(inputs) == 1 and inputs[0].get("name") not in v.index:
        t, field = inputs[0], "inputs[0]"
        _check_dtype(t, field)
        shape = _shape(t, field)
        if len(shape) == 1:
            shape = [1, shape[0]]
        if len(shape) != 2:
            raise InputError(
                422, f"{field}.shape: expected [rows, {v.n}], got {shape}", f"{field}.shape", "wrong_shape"
            )
        rows, cols = shape
        if cols != v.n:
            raise InputError(
                422,
                f"{field}.shape: expected {v.n} features per row, got {cols}",
                f"{field}.shape",
                "wrong_feature_count",
            )
        if rows == 0:
            raise InputError(422, f"{field}: empty; send at least one row", f"{field}.shape", "empty_batch")
        if rows > v.max_rows:
            raise InputError(
                422,
                f"{field}: {rows} rows exceed the limit of {v.max_rows}",
                f"{field}.shape",
                "too_many_rows",
            )
        flat = _flatten(t.get("data"), field)
        if len(flat) != rows * cols:
            raise InputError(
                422,
                f"{field}.data: shape {shape} needs {rows * cols} values, got {len(flat)}",
                f"{field}.data",
                "wrong_shape",
            )
        _numbers(flat, field)
        matrix = [flat[r * cols : (r + 1) * cols] for r in range(rows)]
        return Parsed(_batch_matrix(v, matrix, f"{field}.data", named=False), batch=True, request_id=rid)
    # one tensor per feature
    columns: dict[int, list[Any]] = {}
    nrows: int | None = None
    for i, t in enumerate(inputs):
        field = f"inputs[{i}]"
        name = t.get("name")
        if name not in v.index:
            raise InputError(
                422, f"{field}.name: unknown feature {name!r}", f"{field}.name", "unknown_feature"
            )
        _check_dtype(t, field)
        shape = _shape(t, field)
        if len(shape) > 2 or (len(shape) == 2 and shape[1] != 1):
            raise InputError(
                422,
                f"{field}.shape: expected [rows] or [rows, 1], got {shape}",
                f"{field}.shape",
                "wrong_shape",
            )
        flat = _flatten(t.get("data"), field)
        if len(flat) != shape[0]:
            raise InputError(
                422,
                f"{field}.data: shape {shape} needs {shape[0]} values, got {len(flat)}",
                f"{field}.data",
                "wrong_shape",
            )
        _numbers(flat, field)
        if nrows is None:
            nrows = shape[0]
        elif shape[0] != nrows:
            raise InputError(
                422,
                f"{field}.shape: {shape[0]} rows, other inputs have {nrows}",
                f"{field}.shape",
                "wrong_shape",
            )
        columns[v.index[name]] = flat
    assert nrows is not None
    if nrows == 0:
        raise InputError(422, "inputs: empty; send at least one row", "inputs", "empty_batch")
    if nrows > v.max_rows:
        raise InputError(
            422, f"inputs: {nrows} rows exceed the limit of {v.max_rows}", "inputs", "too_many_rows"
        )
    for i, name in enumerate(v.names):
        if i not in columns:
            if v.required[i]:
                raise InputError(
                    422, f"inputs: required feature {name!r} is missing", f"inputs.{name}", "missing_feature"
                )
            columns[i] = [v.defaults[i]] * nrows
    matrix = [[columns[c][r] for c in range(v.n)] for r in range(nrows)]
    return Parsed(_batch_matrix(v, matrix, "inputs", named=False), batch=True, request_id=rid)


def dumps(obj: Any) -> bytes:
    return orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY)
