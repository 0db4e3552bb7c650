"""The OIP v2 fast path (``protocol.v2._fast_single_tensor``) must answer exactly as the general parser.

Requests are generated around the shape the fast path takes (one tensor, FP64/FP32, flat data) with
every field perturbed: wrong counts, shapes, types, non-finite and out-of-range values, extra keys,
feature-named tensors. For each, ``parse_v2`` (fast path first) and ``parse_v2_general`` must return
the same matrix and flags, or raise the same error (status, message, field, code)."""

from __future__ import annotations

import math
from typing import Any

import hypothesis.strategies as st
import numpy as np
from hypothesis import HealthCheck, given, settings

from mlcanary_serving.bundle.format import FeatureSpec, Schema
from mlcanary_serving.protocol.errors import InputError
from mlcanary_serving.protocol.v2 import _fast_single_tensor, parse_v2, parse_v2_general
from mlcanary_serving.protocol.validator import Validator

N = 3
SCHEMA = Schema(
    (
        FeatureSpec("a"),
        FeatureSpec("b", type="int", min=0, max=10),
        FeatureSpec("c", min=-1.0, max=1.0),
    )
)
VALIDATORS = [Validator(SCHEMA, max_rows=4), Validator(SCHEMA, max_rows=4, input_dtype=np.float32)]
OUTPUTS = ["label", "probabilities", "score"]

good_number = st.one_of(st.floats(min_value=-5, max_value=5), st.integers(min_value=0, max_value=10))
odd_number = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([1e39, -3.5e38, 65504.0, 2.5, True, None, "1", [1.0]]),
)


@st.composite
def requests(draw: st.DrawFn) -> Any:
    """A valid request, then (most of the time) one thing made wrong or unusual."""
    rows = draw(st.integers(min_value=1, max_value=4))
    data: Any = draw(st.lists(good_number, min_size=rows * N, max_size=rows * N))
    shape: Any = [rows, N] if rows > 1 or draw(st.booleans()) else [N]
    tensor: dict[str, Any] = {"name": "input", "shape": shape, "datatype": "FP64", "data": data}
    body: dict[str, Any] = {"inputs": [tensor]}
    change = draw(st.sampled_from([
        None, "value", "value", "value", "datatype", "rows", "count", "shape", "nested", "name",
        "parameters", "missing", "two-inputs", "no-inputs", "id", "id-int", "outputs", "bogus",
    ]))  # fmt: skip
    if change == "value":
        data[draw(st.integers(0, len(data) - 1))] = draw(odd_number)
    elif change == "datatype":
        tensor["datatype"] = draw(st.sampled_from(["FP32", "FP16", "INT64", "UINT8", "BYTES", 1]))
    elif change == "rows":  # beyond max_rows (4), or none
        more = draw(st.sampled_from([0, 5, 6]))
        tensor["shape"] = [more, N]
        tensor["data"] = draw(st.lists(good_number, min_size=more * N, max_size=more * N))
    elif change == "count":
        tensor["data"] = data[: -draw(st.integers(1, N))] if draw(st.booleans()) else [*data, 1.0]
    elif change == "shape":
        tensor["shape"] = draw(
            st.sampled_from([[rows, N, 1], [], [rows, -N], [True, N], [rows, N - 1], [rows, N + 1], "x"])
        )
    elif change == "nested":
        tensor["data"] = [data[i : i + N] for i in range(0, len(data), N)]
    elif change == "name":
        tensor["name"] = draw(st.sampled_from(["a", "b", 7, "other"]))
    elif change == "parameters":
        tensor["parameters"] = {}
    elif change == "missing":
        del tensor[draw(st.sampled_from(sorted(tensor)))]
    elif change == "two-inputs":
        body["inputs"] = [tensor, tensor]
    elif change == "no-inputs":
        body["inputs"] = draw(st.sampled_from([[], None, {}]))
    elif change == "id":
        body["id"] = "r-1"
    elif change == "id-int":
        body["id"] = 1
    elif change is not None:
        body[change] = []
    return body


def outcome(parse: Any, body: Any, v: Validator) -> Any:
    try:
        p = parse(body, v, OUTPUTS)
    except InputError as e:
        return ("error", e.status, str(e), e.field, e.code)
    X = p.X.tolist()
    key = [[("nan" if math.isnan(x) else x) for x in row] for row in X]
    return ("ok", key, p.batch, p.request_id, p.outputs, p.field, p.indexed_rows, p.binary_outputs)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=requests(), which=st.integers(0, 1))
def test_fast_path_answers_exactly_as_the_general_parser(body: Any, which: int) -> None:
    v = VALIDATORS[which]
    assert outcome(parse_v2, body, v) == outcome(parse_v2_general, body, v)


def test_fast_path_takes_the_usual_request() -> None:
    """Guards the property above against a fast path that never fires (it would pass vacuously)."""
    body = {
        "id": "r",
        "inputs": [{"name": "input", "shape": [2, N], "datatype": "FP64", "data": [0.5, 1, 0.1] * 2}],
    }
    parsed = _fast_single_tensor(body, VALIDATORS[0])
    assert parsed is not None
    assert parsed.X.shape == (2, N) and parsed.request_id == "r"
    body["inputs"][0]["datatype"] = "INT64"  # the general path checks integer types
    assert _fast_single_tensor(body, VALIDATORS[0]) is None
