"""Fuzzing: whatever arrives at a prediction endpoint, the answer is never a 5xx."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

import hypothesis.strategies as st
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings

from mlcanary_serving.bundle import BuildResult
from mlcanary_serving.testing import demo_data

from .conftest import MODEL

X, _, NAMES = demo_data()

numbers = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.sampled_from([0, -0.0, 1e308, -1e308, 5e-324, 10**400]),
)
scalars = st.one_of(numbers, st.booleans(), st.none(), st.text(max_size=5))
json_values = st.recursive(
    scalars, lambda kids: st.one_of(st.lists(kids, max_size=4), st.dictionaries(st.text(max_size=5), kids, max_size=4)),
    max_leaves=12,
)  # fmt: skip
rows = st.one_of(
    st.lists(numbers, min_size=28, max_size=32),
    st.lists(scalars, min_size=30, max_size=30),
    st.fixed_dictionaries({}, optional={n: st.one_of(numbers, scalars) for n in NAMES[:8]}),
    st.dictionaries(st.sampled_from([*NAMES, "x"]), numbers, max_size=31),
)
simple_bodies = st.one_of(
    json_values,
    st.fixed_dictionaries({"features": st.one_of(rows, st.lists(rows, max_size=3), json_values)}),
    st.fixed_dictionaries({"instances": st.lists(rows, max_size=3)}),
)
tensor = st.fixed_dictionaries(
    {
        "name": st.one_of(st.just("input"), st.sampled_from(NAMES), st.text(max_size=4)),
        "shape": st.one_of(st.lists(st.integers(-2, 40), max_size=3), json_values),
        "datatype": st.sampled_from(["FP64", "FP32", "INT64", "BYTES", "BOOL", "xx"]),
        "data": st.one_of(
            st.lists(numbers, max_size=64), st.lists(st.lists(numbers, max_size=31), max_size=3), json_values
        ),
    }
)
v2_bodies = st.one_of(
    json_values,
    st.fixed_dictionaries({"inputs": st.lists(tensor, max_size=3)}, optional={"id": json_values}),
)
feedback_bodies = st.one_of(
    json_values,
    st.fixed_dictionaries(
        {},
        optional={"request_id": json_values, "label": json_values, "labels": json_values, "features": rows},
    ),
)


def encode(body: Any) -> bytes:
    return json.dumps(body, allow_nan=True).encode()


@pytest.fixture(scope="module")
def fuzz_client(bundles: dict[str, BuildResult]) -> Any:
    from mlcanary_serving.app import create_app
    from mlcanary_serving.settings import Settings

    app = create_app(Settings(bundle_uri=str(bundles["onnx"].path)), load_in_background=False)
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


SETTINGS = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@SETTINGS
@given(body=simple_bodies)
def test_predict_never_5xx(fuzz_client: TestClient, body: Any) -> None:
    r = fuzz_client.post("/predict", content=encode(body), headers={"content-type": "application/json"})
    assert r.status_code < 500, (body, r.text)
    assert r.status_code in (200, 400, 413, 422)
    assert r.headers["x-model-version"] == "1.0.0"


@SETTINGS
@given(body=v2_bodies, name=st.one_of(st.just(MODEL), st.text(min_size=1, max_size=6)))
def test_v2_infer_never_5xx(fuzz_client: TestClient, body: Any, name: str) -> None:
    r = fuzz_client.post(
        f"/v2/models/{quote(name, safe='')}/infer",
        content=encode(body),
        headers={"content-type": "application/json"},
    )
    assert r.status_code < 500, (body, r.text)


@SETTINGS
@given(body=feedback_bodies)
def test_feedback_never_5xx(fuzz_client: TestClient, body: Any) -> None:
    r = fuzz_client.post("/feedback", content=encode(body), headers={"content-type": "application/json"})
    assert r.status_code < 500, (body, r.text)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    raw=st.binary(max_size=300), path=st.sampled_from(["/predict", f"/v2/models/{MODEL}/infer", "/feedback"])
)
def test_raw_bytes_never_5xx(fuzz_client: TestClient, raw: bytes, path: str) -> None:
    r = fuzz_client.post(path, content=raw, headers={"content-type": "application/octet-stream"})
    assert r.status_code < 500, (raw, r.text)


def test_server_still_answers_after_fuzzing(fuzz_client: TestClient) -> None:
    r = fuzz_client.post("/predict", json={"features": X[0].tolist()})
    assert r.status_code == 200
    text = fuzz_client.get("/metrics").text
    assert 'outcome="server_error"} 0.0' in text
