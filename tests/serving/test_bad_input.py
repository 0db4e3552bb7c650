"""Every class of bad input gets a clear 4xx naming the field; nothing breaks afterwards."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from mlcanary_serving.bundle import BuildResult
from mlcanary_serving.testing import demo_data

from .conftest import MODEL, ClientFactory

X, _, NAMES = demo_data()
ROW = X[0].tolist()
NAMED = dict(zip(NAMES, ROW, strict=True))


def with_value(i: int, v: Any) -> list[Any]:
    r: list[Any] = list(ROW)
    r[i] = v
    return r


CASES: list[tuple[str, Any, int, str, str]] = [
    # (id, json body, status, field, words in the message)
    ("too-few", {"features": ROW[:29]}, 422, "features", "expected 30 feature values, got 29"),
    ("too-many", {"features": [*ROW, 1.0]}, 422, "features", "got 31"),
    ("batch-row-short", {"features": [ROW, ROW[:3]]}, 422, "features[1]", "got 3"),
    ("unknown-name", {"features": {**NAMED, "colour": 1}}, 422, "features.colour", "unknown feature"),
    ("missing-name", {"features": {k: v for k, v in NAMED.items() if k != "mean area"}}, 422,
     "features.mean area", "required feature is missing"),
    ("string", {"features": with_value(2, "12.5")}, 422, "features[2]", "expected a number, got string"),
    ("bool", {"features": with_value(3, True)}, 422, "features[3]", "got boolean"),
    ("null", {"features": with_value(4, None)}, 422, "features[4]", "got null"),
    ("nested", {"features": with_value(5, [1])}, 422, "features[5]", "got array"),
    ("named-string", {"features": {**NAMED, "mean texture": "x"}}, 422, "features.mean texture", "got string"),
    ("features-string", {"features": "1,2,3"}, 422, "features", "expected an array or an object"),
    ("mixed-batch", {"features": [ROW, NAMED]}, 422, "features[1]", "expected an array like row 0"),
    ("empty", {"features": []}, 422, "features", "empty"),
    ("no-features", {}, 422, "features", "missing field"),
    ("unknown-field", {"rows": [ROW]}, 422, "rows", "unknown field"),
    ("extra-field", {"features": ROW, "return_all": True}, 422, "return_all", "unknown field"),
    ("both", {"features": ROW, "instances": [ROW]}, 422, "instances", "not both"),
    ("not-object", [ROW], 422, "body", "must be a JSON object"),
    ("huge-int", {"features": with_value(1, 10**400)}, 422, "features[1]", "not a finite number"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("body", "status", "field", "words"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_simple_protocol_rejects(client: TestClient, body: Any, status: int, field: str, words: str) -> None:
    r = client.post("/predict", json=body)
    assert r.status_code == status, r.text
    err = r.json()
    assert err["field"] == field
    assert words in err["error"]
    assert err["model_version"] == "1.0.0" and r.headers["x-model-version"] == "1.0.0"


@pytest.mark.parametrize(
    ("raw", "field", "words"),
    [
        (b'{"features": [NaN' + b", 1" * 29 + b"]}", "features[0]", "NaN and infinity are not allowed"),
        (b'{"features": [1' + b", 1" * 28 + b", Infinity]}", "features[29]", "(worst fractal dimension)"),
        (
            b'{"features": [[1' + b", 1" * 29 + b"], [1" + b", 1" * 28 + b", -1e999]]}",
            "features[1][29]",
            "not a finite",
        ),
    ],
)
def test_nan_and_infinity(client: TestClient, raw: bytes, field: str, words: str) -> None:
    r = client.post("/predict", content=raw, headers={"content-type": "application/json"})
    assert r.status_code == 422 and r.json()["field"] == field and words in r.json()["error"]


@pytest.mark.parametrize("raw", [b"", b"{", b'{"features": [1,]}', b"\xff\xfe", b"nul", b"[" * 100000])
def test_malformed_json(client: TestClient, raw: bytes) -> None:
    r = client.post("/predict", content=raw, headers={"content-type": "application/json"})
    assert r.status_code == 400, r.text
    assert r.json()["field"] == "body" and r.json()["code"] == "malformed_json"


def test_oversized_body_is_413(make_client: ClientFactory, bundles: dict[str, BuildResult]) -> None:
    c = make_client(bundles["onnx"].path, max_body_bytes=2048)
    r = c.post("/predict", json={"features": [ROW] * 20})
    assert r.status_code == 413 and r.json()["field"] == "body" and "2048" in r.json()["error"]

    def chunks() -> Any:  # no Content-Length: the limit applies while streaming
        for _ in range(10):
            yield b" " * 1000

    r = c.post("/predict", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413
    assert c.post("/predict", json={"features": ROW}).status_code == 200


def test_too_many_rows(make_client: ClientFactory, bundles: dict[str, BuildResult]) -> None:
    c = make_client(bundles["onnx"].path, max_rows=10)
    r = c.post("/predict", json={"features": [ROW] * 11})
    assert r.status_code == 422 and "exceed the limit of 10" in r.json()["error"]


def test_out_of_range_reject_mode(make_client: ClientFactory, bundles: dict[str, BuildResult]) -> None:
    c = make_client(bundles["onnx"].path, env={"MLCANARY_OUT_OF_RANGE": "reject"})
    r = c.post("/predict", json={"features": with_value(7, 1e6)})
    assert r.status_code == 422
    assert r.json()["field"] == "features[7]" and "(mean concave points)" in r.json()["error"]
    assert "outside the allowed range" in r.json()["error"]
    r = c.post("/predict", json={"features": {**NAMED, "mean area": -5.0}})
    assert r.status_code == 422 and r.json()["field"] == "features.mean area"
    r = c.post("/predict", json={"features": [ROW, with_value(0, -1.0)]})
    assert r.status_code == 422 and r.json()["field"] == "features[1][0]"
    assert c.post("/predict", json={"features": ROW}).status_code == 200
    metrics = c.get("/metrics").text
    assert (
        'mlcanary_input_out_of_range_total{feature="mean concave points",model_name="breast-cancer",model_version="1.0.0"} 1.0'
        in metrics
    )


def test_out_of_range_count_mode_answers(client: TestClient) -> None:
    r = client.post("/predict", json={"features": with_value(7, 1e6)})
    assert r.status_code == 200
    assert (
        'mlcanary_input_out_of_range_total{feature="mean concave points",model_name="breast-cancer",model_version="1.0.0"} 1.0'
        in client.get("/metrics").text
    )


V2_CASES: list[tuple[str, Any, str, str]] = [
    ("no-inputs", {}, "inputs", "non-empty array"),
    ("inputs-not-list", {"inputs": {"a": 1}}, "inputs", "non-empty array"),
    ("tensor-not-object", {"inputs": [5]}, "inputs[0]", "tensor object"),
    ("bad-datatype", {"inputs": [{"name": "input", "shape": [1, 30], "datatype": "BYTES", "data": ROW}]},
     "inputs[0].datatype", "not a numeric tensor type"),
    ("bad-shape", {"inputs": [{"name": "input", "shape": "1x30", "datatype": "FP64", "data": ROW}]},
     "inputs[0].shape", "non-negative integers"),
    ("wrong-cols", {"inputs": [{"name": "input", "shape": [1, 29], "datatype": "FP64", "data": ROW[:29]}]},
     "inputs[0].shape", "expected 30 features per row, got 29"),
    ("data-count", {"inputs": [{"name": "input", "shape": [2, 30], "datatype": "FP64", "data": ROW}]},
     "inputs[0].data", "needs 60 values, got 30"),
    ("empty", {"inputs": [{"name": "input", "shape": [0, 30], "datatype": "FP64", "data": []}]},
     "inputs[0].shape", "empty"),
    ("string-value", {"inputs": [{"name": "input", "shape": [1, 30], "datatype": "FP64", "data": with_value(0, "a")}]},
     "inputs[0].data[0]", "got string"),
    ("id-not-string", {"id": 5, "inputs": []}, "id", "expected a string"),
    ("3d", {"inputs": [{"name": "input", "shape": [1, 1, 30], "datatype": "FP64", "data": ROW}]},
     "inputs[0].shape", "expected [rows, 30]"),
    ("unknown-column", {"inputs": [{"name": "mean radius", "shape": [1], "datatype": "FP64", "data": [1.0]},
                                   {"name": "colour", "shape": [1], "datatype": "FP64", "data": [1.0]}]},
     "inputs[1].name", "unknown feature"),
    ("missing-column", {"inputs": [{"name": "mean radius", "shape": [1], "datatype": "FP64", "data": [1.0]},
                                   {"name": "mean area", "shape": [1], "datatype": "FP64", "data": [1.0]}]},
     "inputs.mean texture", "required feature"),
]  # fmt: skip


@pytest.mark.parametrize(("body", "field", "words"), [c[1:] for c in V2_CASES], ids=[c[0] for c in V2_CASES])
def test_v2_rejects(client: TestClient, body: Any, field: str, words: str) -> None:
    r = client.post(f"/v2/models/{MODEL}/infer", json=body)
    assert r.status_code == 422, r.text
    assert r.json()["field"] == field and words in r.json()["error"]
    assert "error" in r.json()  # OIP error shape: {"error": "<message>"}


def test_wrong_method_and_path(client: TestClient) -> None:
    r = client.get("/predict")
    assert r.status_code == 405 and r.json()["field"] == "path" and r.headers["x-model-version"] == "1.0.0"
    assert client.post("/nope", json={}).status_code == 404


def test_client_errors_are_counted_apart_from_server_errors(client: TestClient) -> None:
    for body in ({"features": []}, {"features": "x"}):
        client.post("/predict", json=body)
    client.post("/predict", content=b"{", headers={"content-type": "application/json"})
    text = client.get("/metrics").text
    assert (
        'mlcanary_requests_total{model_name="breast-cancer",model_version="1.0.0",outcome="client_error"} 3.0'
        in text
    )
    assert (
        'mlcanary_requests_total{model_name="breast-cancer",model_version="1.0.0",outcome="server_error"} 0.0'
        in text
    )


def test_integer_feature_type(make_client: ClientFactory, tmp_path: Any) -> None:
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    from mlcanary_serving.bundle import build_bundle

    Xi = np.array([[0, 1.5], [1, 2.5], [2, 0.5], [3, 1.0]] * 5)
    yi = np.array([0, 1, 0, 1] * 5)
    build_bundle(LogisticRegression().fit(Xi, yi), Xi, yi, tmp_path / "b", name="ints", version="1.0.0",
                 feature_names=["count", "ratio"], onnx=True)  # fmt: skip
    c = make_client(tmp_path / "b")
    assert c.post("/predict", json={"features": [2, 1.0]}).status_code == 200
    assert c.post("/predict", json={"features": [2.0, 1.0]}).status_code == 200
    r = c.post("/predict", json={"features": [2.5, 1.0]})
    assert (
        r.status_code == 422
        and r.json()["field"] == "features[0]"
        and "expected an integer" in r.json()["error"]
    )
