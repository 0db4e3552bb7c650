"""Open Inference Protocol v2 (``POST /v2/models/{name}/infer``): request -> matrix, rows -> outputs.

One tensor of shape [rows, n] (or [n]), data flat or nested; or one tensor per feature, named after
it, of shape [rows] or [rows, 1].
"""

from __future__ import annotations

from typing import Any

from .codec import type_name
from .errors import InputError
from .simple import Parsed, Row
from .validator import Validator

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
            422, f"{field}.data: expected an array, got {type_name(data)}", f"{field}.data", "wrong_type"
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
                f"{field}.data[{i}]: expected a number, got {type_name(x)}",
                f"{field}.data[{i}]",
                "wrong_type",
            )


def parse_v2(obj: Any, v: Validator) -> Parsed:
    if type(obj) is not dict:
        raise InputError(
            422, f"request body must be a JSON object, got {type_name(obj)}", "body", "wrong_type"
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
        v.check_rows(rows, f"{field}.shape")
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
        X = v.to_matrix(matrix, lambda r, c: f"{field}.data[{r}][{c}]")
        return Parsed(X, batch=True, request_id=rid)
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
    v.check_rows(nrows, "inputs")
    for i, name in enumerate(v.names):
        if i not in columns:
            if v.required[i]:
                raise InputError(
                    422, f"inputs: required feature {name!r} is missing", f"inputs.{name}", "missing_feature"
                )
            columns[i] = [v.defaults[i]] * nrows
    matrix = [[columns[c][r] for c in range(v.n)] for r in range(nrows)]
    return Parsed(v.to_matrix(matrix, lambda r, c: f"inputs[{r}][{c}]"), batch=True, request_id=rid)


def render_v2(parsed: Parsed, rows: list[Row], task: str, identity: dict[str, str]) -> dict[str, Any]:
    n = len(rows)
    labels = [r[0] for r in rows]
    outputs: list[dict[str, Any]] = []
    if task == "classification":
        dt = "BYTES" if labels and isinstance(labels[0], str) else "INT64"
        if labels and isinstance(labels[0], float):
            dt = "FP64"
        outputs.append({"name": "label", "shape": [n], "datatype": dt, "data": labels})
        if rows and rows[0][2] is not None:
            k = len(rows[0][2] or [])
            flat = [p for r in rows for p in (r[2] or [])]
            outputs.append({"name": "probabilities", "shape": [n, k], "datatype": "FP64", "data": flat})
        outputs.append({"name": "score", "shape": [n], "datatype": "FP64", "data": [r[1] for r in rows]})
    else:
        outputs.append({"name": "prediction", "shape": [n], "datatype": "FP64", "data": labels})
    return {
        "model_name": identity["model_name"],
        "model_version": identity["model_version"],
        "id": parsed.request_id or identity["request_id"],
        "request_id": identity["request_id"],
        "outputs": outputs,
    }
