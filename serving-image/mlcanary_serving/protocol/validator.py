"""Rows -> a validated float matrix, against the bundle's feature schema.

Per-value type checks are plain ``type(x) is ...`` loops (a row is a few dozen values); everything
numeric (finite, integral, range, the runtime's input precision) is one vectorised numpy pass over
the whole matrix. A ``Locator`` maps a matrix cell back to where the client wrote it, so every error
names the exact position in the request (``features[1][0]``, ``features.mean area``,
``inputs[0].data[37]``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from ..bundle.format import Schema
from .codec import type_name
from .errors import InputError, OutOfRange

MAX_SAFE_INTEGER = 2**53 - 1
"""Largest integer every larger one differs from as a double (so an `int` feature's bound is exact)."""

Locator = Callable[[int, int], str]
"""(row, column) of the matrix -> the request field holding that value."""

FLOAT32_MAX = float(np.finfo(np.float32).max)
NUMBER_TYPES = frozenset((float, int))  # JSON numbers; not bool: type(True) is bool


def is_number(v: Any) -> bool:
    return type(v) is float or type(v) is int  # not bool: type(True) is bool


class Validator:
    """Checks rows against the bundle's feature schema."""

    def __init__(
        self,
        schema: Schema,
        max_rows: int = 1000,
        reject_out_of_range: bool = False,
        input_dtype: type[np.floating[Any]] = np.float64,
    ) -> None:
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
        # a float32 model would turn values beyond float32's range into infinity: refuse them
        self.max_abs = FLOAT32_MAX if input_dtype == np.float32 else None

    @property
    def n(self) -> int:
        return len(self.names)

    def positional(self, row: list[Any], field: str) -> list[Any]:
        if len(row) != self.n:
            raise InputError(
                422,
                f"{field}: expected {self.n} feature values, got {len(row)}",
                field,
                "wrong_feature_count",
            )
        if NUMBER_TYPES.issuperset(map(type, row)):  # the usual case, in C; else find the culprit
            return row
        for i, v in enumerate(row):
            if type(v) is not float and type(v) is not int:  # is_number, inline
                raise InputError(
                    422,
                    f"{field}[{i}] ({self.names[i]}): expected a number, got {type_name(v)}",
                    f"{field}[{i}]",
                    "wrong_type",
                )
        return row

    def named(self, row: dict[str, Any], field: str) -> list[Any]:
        out: list[Any] = list(self.defaults)
        for key, v in row.items():
            i = self.index.get(key)
            if i is None:
                raise InputError(
                    422, f"{field}.{key}: unknown feature name", f"{field}.{key}", "unknown_feature"
                )
            if not is_number(v):
                raise InputError(
                    422,
                    f"{field}.{key}: expected a number, got {type_name(v)}",
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

    def check_rows(self, rows: int, field: str) -> None:
        if rows == 0:
            raise InputError(422, f"{field}: empty; send at least one row", field, "empty_batch")
        if rows > self.max_rows:
            raise InputError(
                422, f"{field}: {rows} rows exceed the limit of {self.max_rows}", field, "too_many_rows"
            )

    def to_matrix(
        self,
        values: Sequence[Any] | npt.NDArray[Any],
        locate: Locator,
        named: bool = False,
        shape: tuple[int, int] | None = None,
    ) -> npt.NDArray[np.float64]:
        """A list of rows (or flat values with ``shape``) of numbers -> a checked (rows, n) matrix."""
        if shape is not None:
            X = float_array(values).reshape(shape)
        else:
            try:
                X = np.array(values, dtype=np.float64)
            except OverflowError:  # a JSON integer beyond a double: becomes infinity, refused below
                X = np.array([[_to_float(v) for v in r] for r in values], dtype=np.float64)
        return self.check_matrix(X, locate, named)

    def check_matrix(
        self, X: npt.NDArray[np.float64], locate: Locator, named: bool = False
    ) -> npt.NDArray[np.float64]:
        def where(r: int, c: int) -> str:
            f = locate(r, c)
            return f if named else f"{f} ({self.names[c]})"

        # a finite sum proves every value finite (NaN or infinity would carry into it): one cheap
        # reduction; only when it is not does the exact check run (it may be finite values' overflow)
        if not math.isfinite(X.sum()) and not np.isfinite(X).all():
            r, c = (int(i) for i in np.argwhere(~np.isfinite(X))[0])
            raise InputError(
                422,
                f"{where(r, c)}: value {X[r, c]} is not a finite number (NaN and infinity are not allowed, "
                "nor numbers beyond a double's range)",
                locate(r, c),
                "not_finite",
            )
        if self.max_abs is not None:
            big = np.abs(X) > self.max_abs
            if big.any():
                r, c = (int(i) for i in np.argwhere(big)[0])
                raise InputError(
                    422,
                    f"{where(r, c)}: value {X[r, c]:g} is beyond the model's float32 input range",
                    locate(r, c),
                    "not_finite",
                )
        if self.int_idx.size:
            sub = X[:, self.int_idx]
            bad = (sub != np.round(sub)) | (np.abs(sub) > MAX_SAFE_INTEGER)
            if bad.any():
                r, k = (int(i) for i in np.argwhere(bad)[0])
                c = int(self.int_idx[k])
                raise InputError(
                    422,
                    f"{where(r, c)}: expected an integer (at most {MAX_SAFE_INTEGER} in magnitude), got {X[r, c]}",
                    locate(r, c),
                    "wrong_type",
                )
        if self.reject_out_of_range:
            bad = (self.lo > X) | (self.hi < X)
            if bad.any():
                r, c = (int(i) for i in np.argwhere(bad)[0])
                raise OutOfRange(
                    f"{where(r, c)}: value {X[r, c]} is outside the allowed range "
                    f"[{self.lo[c]:g}, {self.hi[c]:g}]",
                    locate(r, c),
                    bad.sum(axis=0),
                )
        return X

    def out_of_range_counts(self, X: npt.NDArray[np.float64]) -> npt.NDArray[np.int64] | None:
        """Rows out of range per feature, or None when every value is in range (the usual case)."""
        bad = (self.lo > X) | (self.hi < X)
        if not np.count_nonzero(bad):  # cheaper than bad.any() on a small matrix
            return None
        return np.asarray(bad.sum(axis=0), dtype=np.int64)


def float_array(values: Sequence[Any] | npt.NDArray[Any]) -> npt.NDArray[np.float64]:
    """Flat numbers -> float64; a JSON integer beyond a double becomes infinity (refused later)."""
    try:
        return np.array(values, dtype=np.float64)
    except OverflowError:
        return np.array([_to_float(v) for v in values], dtype=np.float64)


def _to_float(v: Any) -> float:
    try:
        return float(v)
    except OverflowError:
        return math.inf if v > 0 else -math.inf
