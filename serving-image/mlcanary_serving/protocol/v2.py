"""Open Inference Protocol v2 (``POST /v2/models/{name}/infer``): request -> matrix, rows -> outputs.

Inputs: one tensor of shape ``[rows, n]`` (or ``[n]``), or one tensor per feature, named after it,
of shape ``[rows]`` or ``[rows, 1]``. ``data`` is flat (row-major) or nested exactly as the shape
says; ragged rows are refused, never re-split. Integer and FP16/FP32 datatypes are checked
against their value range. ``outputs``, when given, selects (and orders) the outputs returned;
an unknown name is refused.

The binary tensor data extension (what ``tritonclient`` sends by default) is supported: the body is
the JSON request of ``Inference-Header-Content-Length`` bytes followed by the raw little-endian,
row-major bytes of every input whose ``parameters.binary_data_size`` is given, in input order; the
size must be exactly the tensor's (shape x item size). Outputs come back binary when the request
asks (``parameters.binary_data_output``, or ``binary_data`` on an output, which overrides it).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from .codec import check_fields, dumps, optional_parameters, type_name, want_object, want_string
from .errors import InputError
from .simple import Parsed, Row
from .validator import NUMBER_TYPES, Locator, Validator, float_array, is_number

REQUEST_FIELDS: Final = ("id", "parameters", "inputs", "outputs")
TENSOR_FIELDS: Final = ("name", "shape", "datatype", "parameters", "data")
OUTPUT_FIELDS: Final = ("name", "parameters")

# numeric datatypes and the values each can hold, [lo, hi) (None: any finite double). The upper
# bounds are exclusive powers of two: exact in float64, where 2**63 - 1 would round up to 2**63.
V2_NUMERIC: Final[dict[str, tuple[float, float] | None]] = {
    "FP16": (-65504.0, np.nextafter(65504.0, np.inf)),
    "FP32": (-float(np.finfo(np.float32).max), np.nextafter(float(np.finfo(np.float32).max), np.inf)),
    "FP64": None,
    "INT8": (-(2**7), 2**7),
    "INT16": (-(2**15), 2**15),
    "INT32": (-(2**31), 2**31),
    "INT64": (-(2**63), 2**63),
    "UINT8": (0, 2**8),
    "UINT16": (0, 2**16),
    "UINT32": (0, 2**32),
    "UINT64": (0, 2**64),
}
MAX_RANK: Final = 2
# little-endian item types of the numeric datatypes in the binary tensor extension
BINARY_DTYPES: Final[dict[str, np.dtype[Any]]] = {
    "FP16": np.dtype("<f2"), "FP32": np.dtype("<f4"), "FP64": np.dtype("<f8"),
    "INT8": np.dtype("i1"), "INT16": np.dtype("<i2"), "INT32": np.dtype("<i4"), "INT64": np.dtype("<i8"),
    "UINT8": np.dtype("u1"), "UINT16": np.dtype("<u2"), "UINT32": np.dtype("<u4"), "UINT64": np.dtype("<u8"),
}  # fmt: skip
HEADER_LENGTH: Final = "inference-header-content-length"


def split_body(body: bytes, header_length: bytes | None) -> tuple[bytes, memoryview | None]:
    """(the JSON request, the binary tensor data after it or None): ``Inference-Header-Content-Length``
    says where the JSON ends; without it the whole body is JSON."""
    if header_length is None:
        return body, None
    if not (header_length.isascii() and header_length.isdigit()) or int(header_length) > len(body):
        raise InputError(
            400,
            f"Inference-Header-Content-Length must be a byte count within the body's {len(body)} bytes",
            HEADER_LENGTH,
            "bad_header",
        )
    n = int(header_length)
    return body[:n], memoryview(body)[n:]


class _BinaryData:
    """The binary section of a request, handed out to the inputs in order."""

    def __init__(self, data: memoryview | None) -> None:
        self.data = data
        self.offset = 0

    def take(self, size: int, dtype: np.dtype[Any], field: str) -> npt.NDArray[Any]:
        if self.data is None:
            raise InputError(
                400,
                f"{field}: binary data needs the Inference-Header-Content-Length header (the length of "
                "the JSON part of the body)",
                HEADER_LENGTH,
                "bad_header",
            )
        left = len(self.data) - self.offset
        if size > left:
            raise InputError(
                422,
                f"{field}: {size} bytes, but only {left} bytes of binary data are left in the body",
                field,
                "wrong_shape",
            )
        out = np.frombuffer(self.data, dtype=dtype, count=size // dtype.itemsize, offset=self.offset)
        self.offset += size
        return out

    def finish(self) -> None:
        if self.data is not None and self.offset != len(self.data):
            raise InputError(
                422,
                f"body: {len(self.data) - self.offset} bytes of binary data after the last binary input",
                "body",
                "wrong_shape",
            )


@dataclass(frozen=True)
class OutputSpec:
    """One output tensor of this model: what metadata declares and inference returns."""

    name: str
    datatype: str
    per_row: int | None  # values per row: None for a [rows] tensor, k for [rows, k]
    column: int  # where a Row keeps its values: 0 label/prediction, 1 score, 2 probabilities

    def metadata(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "datatype": self.datatype,
            "shape": [-1] if self.per_row is None else [-1, self.per_row],
        }


def label_datatype(classes: Sequence[Any]) -> str:
    """The OIP datatype of the class values (as JSON carries them)."""
    if classes and all(type(c) is bool for c in classes):
        return "BOOL"
    if all(type(c) is int for c in classes):
        return "INT64"
    if all(type(c) is int or type(c) is float for c in classes):
        return "FP64"
    return "BYTES"


def output_specs(task: str, classes: Sequence[Any], has_probabilities: bool) -> tuple[OutputSpec, ...]:
    if task != "classification":
        return (OutputSpec("prediction", "FP64", None, 0),)
    specs = [OutputSpec("label", label_datatype(classes), None, 0)]
    if has_probabilities:
        specs.append(OutputSpec("probabilities", "FP64", len(classes), 2))
    specs.append(OutputSpec("score", "FP64", None, 1))
    return tuple(specs)


@dataclass(frozen=True)
class Tensor:
    field: str  # "inputs[i]"
    name: str
    shape: list[int]
    datatype: str
    data: list[Any] | npt.NDArray[Any]  # JSON values, or the decoded binary data (flat)

    @property
    def data_field(self) -> str:
        """Where the values were: ``inputs[i].data`` or the binary data of ``inputs[i]``."""
        return f"{self.field}.data" if isinstance(self.data, list) else f"{self.field}.binary_data"


def _tensor(obj: Any, field: str, binary: _BinaryData) -> Tensor:
    t = want_object(obj, field, "a tensor object")
    check_fields(t, TENSOR_FIELDS, f"{field}.")
    params = optional_parameters(t, f"{field}.parameters")
    binary_size = params.get("binary_data_size")
    for key in ("name", "shape", "datatype", "data"):
        if key == "data" and binary_size is not None:
            continue
        if key not in t:
            raise InputError(
                422, f"{field}.{key}: required field is missing", f"{field}.{key}", "missing_field"
            )
    name = want_string(t["name"], f"{field}.name")
    dt = t["datatype"]
    if type(dt) is not str or dt not in V2_NUMERIC:
        shown = repr(dt) if type(dt) is str else type_name(dt)
        raise InputError(
            422,
            f"{field}.datatype: {shown} is not a numeric tensor type ({', '.join(sorted(V2_NUMERIC))})",
            f"{field}.datatype",
            "wrong_type",
        )
    shape = t["shape"]
    if (
        type(shape) is not list
        or not shape
        or len(shape) > 8
        or not all(type(d) is int and d >= 0 for d in shape)
    ):
        raise InputError(
            422, f"{field}.shape: expected a list of non-negative integers", f"{field}.shape", "wrong_shape"
        )
    if binary_size is not None:
        f = f"{field}.parameters.binary_data_size"
        if type(binary_size) is not int or binary_size < 0:
            raise InputError(422, f"{f}: expected a non-negative integer", f, "wrong_type")
        if "data" in t:
            raise InputError(
                422, f"{field}: send the values either in data or as binary data, not both", f, "ambiguous"
            )
        dtype = BINARY_DTYPES[dt]
        want = math.prod(shape) * dtype.itemsize  # Python ints: no overflow
        if binary_size != want:
            raise InputError(
                422,
                f"{f}: {binary_size} bytes, but shape {shape} of {dt} takes {want} bytes",
                f,
                "wrong_shape",
            )
        return Tensor(field, name, shape, dt, binary.take(binary_size, dtype, f))
    data = t["data"]
    if type(data) is not list:
        raise InputError(
            422, f"{field}.data: expected an array, got {type_name(data)}", f"{field}.data", "wrong_type"
        )
    return Tensor(field, name, shape, dt, data)


def _values(t: Tensor, rows: int, cols: int) -> tuple[list[Any] | npt.NDArray[Any], bool]:
    """The tensor's rows*cols values, flat and type-checked.

    Returns (values, nested): ``data`` is either flat (rows*cols numbers, row-major) or, for a 2-D
    shape, a list of ``rows`` lists of ``cols`` numbers. Anything else names the first offending
    position: ragged rows are refused, never re-split.
    """
    data, f = t.data, t.data_field
    if not isinstance(data, list):  # binary: flat, its size already checked against the shape
        return data, False
    if len(t.shape) < MAX_RANK or not data or type(data[0]) is not list:  # flat
        want = rows * cols
        if len(data) != want:
            raise InputError(
                422, f"{f}: shape {t.shape} needs {want} values, got {len(data)}", f, "wrong_shape"
            )
        if NUMBER_TYPES.issuperset(map(type, data)):  # the usual case, in C
            return data, False
        for i, x in enumerate(data):
            if not is_number(x):
                raise InputError(
                    422, f"{f}[{i}]: expected a number, got {type_name(x)}", f"{f}[{i}]", "wrong_type"
                )
        return data, False
    if len(data) != rows:
        raise InputError(422, f"{f}: shape {t.shape} needs {rows} rows, got {len(data)}", f, "wrong_shape")
    flat: list[Any] = []
    for r, row in enumerate(data):
        if type(row) is not list:
            raise InputError(
                422,
                f"{f}[{r}]: expected an array of {cols} numbers (shape {t.shape}), got {type_name(row)}",
                f"{f}[{r}]",
                "wrong_shape",
            )
        if len(row) != cols:
            raise InputError(
                422,
                f"{f}[{r}]: expected {cols} values (shape {t.shape}), got {len(row)}; rows may not be ragged",
                f"{f}[{r}]",
                "wrong_shape",
            )
        if NUMBER_TYPES.issuperset(map(type, row)):
            flat.extend(row)
            continue
        for c, x in enumerate(row):
            if not is_number(x):
                raise InputError(
                    422,
                    f"{f}[{r}][{c}]: expected a number, got {type_name(x)}",
                    f"{f}[{r}][{c}]",
                    "wrong_type",
                )
        flat.extend(row)
    return flat, True


def _check_datatype(values: npt.NDArray[np.float64], t: Tensor, locate: Locator) -> None:
    """Values must fit the declared datatype: integral for INT/UINT, in its range (no silent casts)."""
    bounds = V2_NUMERIC[t.datatype]
    if bounds is None:
        return
    if t.datatype.startswith(("INT", "UINT")):
        frac = values != np.floor(values)
        if frac.any():
            r, c = (int(i) for i in np.argwhere(frac)[0])
            raise InputError(
                422,
                f"{locate(r, c)}: {values[r, c]} is not an {t.datatype} value",
                locate(r, c),
                "wrong_type",
            )
    lo, hi = bounds
    bad = (values < lo) | (values >= hi)
    if bad.any():
        r, c = (int(i) for i in np.argwhere(bad)[0])
        raise InputError(
            422,
            f"{locate(r, c)}: {values[r, c]:g} is outside the {t.datatype} range [{lo:g}, {hi:g})",
            locate(r, c),
            "wrong_type",
        )


def _binary_flag(params: dict[str, Any], key: str, field: str) -> bool | None:
    """A binary-data switch: absent (None) or a boolean."""
    if key not in params:
        return None
    value = params[key]
    if type(value) is not bool:
        f = f"{field}.{key}" if field else key
        raise InputError(422, f"{f}: expected a boolean, got {type_name(value)}", f, "wrong_type")
    return value


def _requested_outputs(
    raw: Any, available: Sequence[str], binary_default: bool
) -> tuple[tuple[str, ...] | None, tuple[str, ...]]:
    """(the outputs asked for, in order, or None for all; those of them to send as binary data)."""
    if type(raw) is not list:
        raise InputError(
            422,
            f"outputs: expected an array of output objects, got {type_name(raw)}",
            "outputs",
            "wrong_type",
        )
    names: list[str] = []
    binary: list[str] = []
    for i, o in enumerate(raw):
        field = f"outputs[{i}]"
        obj = want_object(o, field, "an output object")
        check_fields(obj, OUTPUT_FIELDS, f"{field}.")
        if "name" not in obj:
            raise InputError(
                422, f"{field}.name: required field is missing", f"{field}.name", "missing_field"
            )
        name = want_string(obj["name"], f"{field}.name")
        if name not in available:
            raise InputError(
                422,
                f"{field}.name: unknown output {name!r}; this model has {', '.join(available)}",
                f"{field}.name",
                "unknown_output",
            )
        if name in names:
            raise InputError(
                422, f"{field}.name: output {name!r} requested twice", f"{field}.name", "duplicate"
            )
        flag = _binary_flag(
            optional_parameters(obj, f"{field}.parameters"), "binary_data", f"{field}.parameters"
        )
        names.append(name)
        if flag or (flag is None and binary_default):
            binary.append(name)
    if not names:
        return None, tuple(available) if binary_default else ()
    return tuple(names), tuple(binary)


FAST_TENSOR_KEYS: Final = frozenset(("name", "shape", "datatype", "data"))


def _fast_single_tensor(body: dict[str, Any], v: Validator) -> Parsed | None:
    """The request nearly every client sends — ``{"inputs": [one FP64/FP32 tensor of shape [rows, n]
    or [n], data flat]}`` (and maybe an ``id``) — checked in a few C-level steps. Anything else, or
    anything wrong, returns None: the general path then parses it and names what is wrong, so errors
    are the same whichever path a request takes."""
    if len(body) != 1 and not (len(body) == 2 and type(body.get("id")) is str):
        return None
    inputs = body.get("inputs")
    if type(inputs) is not list or len(inputs) != 1:
        return None
    t = inputs[0]
    if type(t) is not dict or t.keys() != FAST_TENSOR_KEYS:
        return None
    dt, shape, data, name = t["datatype"], t["shape"], t["data"], t["name"]
    if (dt != "FP64" and dt != "FP32") or type(name) is not str or name in v.index or type(data) is not list:
        return None
    if type(shape) is not list or not 1 <= len(shape) <= MAX_RANK or not all(type(d) is int for d in shape):
        return None
    rows, cols = (1, shape[0]) if len(shape) == 1 else shape
    if cols != v.n or not 0 < rows <= v.max_rows or len(data) != rows * cols:
        return None
    if not NUMBER_TYPES.issuperset(map(type, data)):
        return None
    X = v.to_matrix(data, lambda r, c: f"inputs[0].data[{r * cols + c}]", shape=(rows, cols))
    if dt == "FP32":
        _check_datatype(
            X, Tensor("inputs[0]", name, shape, dt, data), lambda r, c: f"inputs[0].data[{r * cols + c}]"
        )
    return Parsed(X, batch=True, request_id=body.get("id"), field="inputs")


def parse_v2(obj: Any, v: Validator, outputs: Sequence[str], binary_data: memoryview | None = None) -> Parsed:
    """``binary_data``: what follows the JSON request in the body (binary tensor extension)."""
    if binary_data is None and type(obj) is dict:
        fast = _fast_single_tensor(obj, v)
        if fast is not None:
            return fast
    return parse_v2_general(obj, v, outputs, binary_data)


def parse_v2_general(
    obj: Any, v: Validator, outputs: Sequence[str], binary_data: memoryview | None = None
) -> Parsed:
    """Every request the protocol allows, each problem named (``parse_v2`` without its fast path)."""
    body = want_object(obj, "body")
    check_fields(body, REQUEST_FIELDS)
    rid = want_string(body["id"], "id") if "id" in body else None
    binary_default = bool(
        _binary_flag(optional_parameters(body, "parameters"), "binary_data_output", "parameters")
    )
    if "outputs" in body:
        requested, binary_outputs = _requested_outputs(body["outputs"], outputs, binary_default)
    else:
        requested, binary_outputs = None, tuple(outputs) if binary_default else ()
    inputs = body.get("inputs")
    if type(inputs) is not list or not inputs:
        raise InputError(422, "inputs: expected a non-empty array of tensors", "inputs", "missing_field")
    if len(inputs) > v.n:
        raise InputError(
            422,
            f"inputs: {len(inputs)} tensors, but the model has {v.n} features (send one tensor of shape "
            f"[rows, {v.n}] or one per feature)",
            "inputs",
            "too_many_inputs",
        )
    binary = _BinaryData(binary_data)
    tensors = [_tensor(t, f"inputs[{i}]", binary) for i, t in enumerate(inputs)]
    binary.finish()
    if len(tensors) == 1 and tensors[0].name not in v.index:
        X = _one_tensor(tensors[0], v)
    else:
        X = _per_feature(tensors, v)
    return Parsed(
        X, batch=True, request_id=rid, outputs=requested, field="inputs", binary_outputs=binary_outputs
    )


def _one_tensor(t: Tensor, v: Validator) -> npt.NDArray[np.float64]:
    shape = [1, t.shape[0]] if len(t.shape) == 1 else t.shape
    if len(shape) != MAX_RANK:
        raise InputError(
            422, f"{t.field}.shape: expected [rows, {v.n}], got {t.shape}", f"{t.field}.shape", "wrong_shape"
        )
    rows, cols = shape
    if cols != v.n:
        raise InputError(
            422,
            f"{t.field}.shape: expected {v.n} features per row, got {cols}",
            f"{t.field}.shape",
            "wrong_feature_count",
        )
    v.check_rows(rows, f"{t.field}.shape")
    values, nested = _values(t, rows, cols)
    f = t.data_field

    def locate(r: int, c: int) -> str:
        return f"{f}[{r}][{c}]" if nested else f"{f}[{r * cols + c}]"

    X = v.to_matrix(values, locate, shape=(rows, cols))
    _check_datatype(X, t, locate)
    return X


def _per_feature(tensors: list[Tensor], v: Validator) -> npt.NDArray[np.float64]:
    columns: dict[int, tuple[list[Any] | npt.NDArray[Any], Tensor, bool]] = {}
    nrows: int | None = None
    for t in tensors:
        col = v.index.get(t.name)
        if col is None:
            raise InputError(
                422, f"{t.field}.name: unknown feature {t.name!r}", f"{t.field}.name", "unknown_feature"
            )
        if col in columns:
            raise InputError(
                422, f"{t.field}.name: feature {t.name!r} sent twice", f"{t.field}.name", "duplicate"
            )
        if len(t.shape) > MAX_RANK or (len(t.shape) == MAX_RANK and t.shape[1] != 1):
            raise InputError(
                422,
                f"{t.field}.shape: expected [rows] or [rows, 1], got {t.shape}",
                f"{t.field}.shape",
                "wrong_shape",
            )
        rows = t.shape[0]
        values, nested = _values(t, rows, 1)
        if nrows is None:
            nrows = rows
        elif rows != nrows:
            raise InputError(
                422,
                f"{t.field}.shape: {rows} rows, other inputs have {nrows}",
                f"{t.field}.shape",
                "wrong_shape",
            )
        columns[col] = (values, t, nested)
    assert nrows is not None  # tensors is never empty
    v.check_rows(nrows, "inputs")
    X = np.empty((nrows, v.n), dtype=np.float64)
    for c, name in enumerate(v.names):
        if c in columns:
            continue
        if v.required[c]:
            raise InputError(
                422, f"inputs: required feature {name!r} is missing", f"inputs.{name}", "missing_feature"
            )
        X[:, c] = v.defaults[c]
    locators: dict[int, Locator] = {}
    for c, (values, t, nested) in columns.items():
        locators[c] = _column_locator(t.data_field, nested)
        X[:, c] = float_array(values)

    def locate(r: int, c: int) -> str:
        return locators[c](r, c) if c in locators else f"inputs.{v.names[c]}"

    v.check_matrix(X, locate)
    for c, (_, t, _) in columns.items():
        _check_datatype(X[:, c : c + 1], t, _at_column(locate, c))
    return X


def _at_column(locate: Locator, c: int) -> Locator:
    return lambda r, _: locate(r, c)


def _column_locator(f: str, nested: bool) -> Locator:
    if nested:
        return lambda r, _: f"{f}[{r}][0]"
    return lambda r, _: f"{f}[{r}]"


def _tensor_data(spec: OutputSpec, rows: list[Row]) -> list[Any]:
    col = spec.column
    if col == 2:  # probabilities: [rows, classes], flat
        return (rows[0][2] or []) if len(rows) == 1 else [p for r in rows for p in (r[2] or [])]
    return [rows[0][col]] if len(rows) == 1 else [r[col] for r in rows]


def render_v2(
    parsed: Parsed, rows: list[Row], specs: Sequence[OutputSpec], identity: dict[str, str]
) -> dict[str, Any]:
    """The answer: every output in the model's order, or those asked for in the order asked (one
    small dict per output, built directly: this runs once per request)."""
    n = len(rows)
    wanted = parsed.outputs
    chosen = specs if wanted is None else [s for name in wanted for s in specs if s.name == name]
    return {
        "model_name": identity["model_name"],
        "model_version": identity["model_version"],
        "id": parsed.request_id or identity["request_id"],
        "request_id": identity["request_id"],
        "outputs": [
            {
                "name": s.name,
                "shape": [n] if s.per_row is None else [n, s.per_row],
                "datatype": s.datatype,
                "data": _tensor_data(s, rows),
            }
            for s in chosen
        ],
    }


def binary_answer(payload: dict[str, Any], binary_outputs: Sequence[str]) -> tuple[bytes, bytes]:
    """Move the data of ``binary_outputs`` out of a rendered answer: (the JSON answer, the binary data
    that follows it), each such output with ``parameters.binary_data_size`` instead of ``data``."""
    chunks: list[bytes] = []
    for out in payload["outputs"]:
        if out["name"] not in binary_outputs:
            continue
        data = out.pop("data")
        dt = out["datatype"]
        if dt == "BYTES":  # each element: its length as a little-endian uint32, then its UTF-8 bytes
            raw = b"".join(struct.pack("<I", len(b)) + b for b in (str(x).encode() for x in data))
        elif dt == "BOOL":
            raw = np.asarray(data, dtype=np.uint8).tobytes()
        else:
            raw = np.asarray(data, dtype=BINARY_DTYPES[dt]).tobytes()
        out["parameters"] = {"binary_data_size": len(raw)}
        chunks.append(raw)
    return dumps(payload), b"".join(chunks)
