"""Issue 11, item 10: wrong answers are worse than errors.

A request the server does not understand exactly is refused with a 4xx naming the field, instead
of being re-interpreted (ragged rows re-split, requested outputs ignored, a declared datatype
ignored, an option silently dropped); and what the metadata declares is what inference returns.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from mlcanary_serving.bundle import BuildResult, build_bundle
from mlcanary_serving.testing import demo_data, demo_pipeline

from .conftest import MODEL, ClientFactory

X, Y, NAMES = demo_data()
ROW = X[0].tolist()
INFER = f"/v2/models/{MODEL}/infer"


def tensor(**overrides: Any) -> dict[str, Any]:
    return {"name": "input", "shape": [1, 30], "datatype": "FP64", "data": ROW, **overrides}


def refused(r: Any, field: str, code: str, status: int = 422) -> dict[str, Any]:
    assert r.status_code == status, r.text
    body: dict[str, Any] = r.json()
    assert (body["field"], body["code"]) == (field, code), body
    return body


@pytest.fixture(scope="module")
def string_classes(tmp_path_factory: pytest.TempPathFactory) -> BuildResult:
    """breast_cancer with the classes as strings (what a real dataset often has)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    y = np.where(Y == 1, "benign", "malignant")
    pipe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000)).fit(X, y)
    return build_bundle(pipe, X, y, tmp_path_factory.mktemp("s") / "b", name=MODEL, version="1.0.0",
                        feature_names=NAMES, onnx=True)  # fmt: skip


# --------------------------------------------------------------------------------- ragged data
def test_ragged_rows_are_refused_not_resplit(client: TestClient) -> None:
    """Issue: shape [2, n] sent as rows of n-1 and n+1 values was re-split and answered 200."""
    body = {"inputs": [tensor(shape=[2, 30], data=[ROW[:29], [*ROW[29:], *ROW]])]}
    r = client.post(INFER, json=body)
    err = refused(r, "inputs[0].data[0]", "wrong_shape")
    assert "expected 30 values (shape [2, 30]), got 29" in err["error"]


def test_ragged_rows_later_in_the_tensor_name_their_row(client: TestClient) -> None:
    body = {"inputs": [tensor(shape=[3, 30], data=[ROW, ROW[:-1], [*ROW, 1.0]])]}
    refused(client.post(INFER, json=body), "inputs[0].data[1]", "wrong_shape")


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ([ROW, 5.0], "inputs[0].data[1]"),  # a number where a row should be
        ([ROW], "inputs[0].data"),  # one row for shape [2, 30]
        ([[ROW], [ROW]], "inputs[0].data[0]"),  # nested one level too deep
        ([*ROW, *ROW[:29], [1.0]], "inputs[0].data[59]"),  # flat, with an array at the end
    ],
)
def test_data_must_follow_the_shape_exactly(client: TestClient, data: list[Any], field: str) -> None:
    r = client.post(INFER, json={"inputs": [tensor(shape=[2, 30], data=data)]})
    assert r.status_code == 422 and r.json()["field"] == field, r.text


def test_nested_data_is_refused_for_a_one_dimensional_shape(client: TestClient) -> None:
    refused(
        client.post(INFER, json={"inputs": [tensor(shape=[30], data=[ROW])]}), "inputs[0].data", "wrong_shape"
    )


def test_per_feature_tensors_follow_their_shape(client: TestClient) -> None:
    cols = [
        {"name": n, "shape": [2, 1], "datatype": "FP64", "data": [[v], [v]]}
        for n, v in zip(NAMES, ROW, strict=True)
    ]
    assert client.post(INFER, json={"inputs": cols}).status_code == 200
    cols[4] = {**cols[4], "data": [[ROW[4]], [ROW[4], 1.0]]}
    refused(client.post(INFER, json={"inputs": cols}), "inputs[4].data[1]", "wrong_shape")
    cols[4] = {**cols[4], "name": NAMES[3], "data": [[1.0], [2.0]]}  # the same feature twice
    refused(client.post(INFER, json={"inputs": cols}), "inputs[4].name", "duplicate")


def test_more_tensors_than_features_are_refused(client: TestClient) -> None:
    refused(client.post(INFER, json={"inputs": [tensor()] * 31}), "inputs", "too_many_inputs")


# ------------------------------------------------------------------------------------ outputs
def test_requested_outputs_are_returned_in_the_order_asked(client: TestClient) -> None:
    full = client.post(INFER, json={"inputs": [tensor()]}).json()["outputs"]
    assert [o["name"] for o in full] == ["label", "probabilities", "score"]
    r = client.post(INFER, json={"inputs": [tensor()], "outputs": [{"name": "score"}, {"name": "label"}]})
    assert r.status_code == 200
    assert r.json()["outputs"] == [full[2], full[0]]


@pytest.mark.parametrize(
    ("outputs", "field", "code"),
    [
        ([{"name": "colour"}], "outputs[0].name", "unknown_output"),
        ([{"name": "label"}, {"name": "prediction"}], "outputs[1].name", "unknown_output"),
        ([{"name": "label"}, {"name": "label"}], "outputs[1].name", "duplicate"),
        ([{"name": "label", "parameters": {"binary_data": "yes"}}], "outputs[0].parameters.binary_data", "wrong_type"),
        ([{"name": "label", "classification": 2}], "outputs[0].classification", "unknown_field"),
        ([{}], "outputs[0].name", "missing_field"),
        ({"name": "label"}, "outputs", "wrong_type"),
    ],
)  # fmt: skip
def test_outputs_that_cannot_be_honoured_are_refused(
    client: TestClient, outputs: Any, field: str, code: str
) -> None:
    refused(client.post(INFER, json={"inputs": [tensor()], "outputs": outputs}), field, code)


def test_binary_output_switch_must_be_a_boolean(client: TestClient) -> None:
    body = {"inputs": [tensor()], "parameters": {"binary_data_output": 1}}
    refused(client.post(INFER, json=body), "parameters.binary_data_output", "wrong_type")


# ------------------------------------------------------------------- metadata == inference
@pytest.mark.parametrize("kind", ["onnx", "joblib", "degenerate", "string-classes", "regression"])
def test_metadata_declares_exactly_what_inference_returns(
    make_client: ClientFactory,
    bundles: dict[str, BuildResult],
    string_classes: BuildResult,
    tmp_path: Path,
    kind: str,
) -> None:
    if kind == "string-classes":
        path = string_classes.path
    elif kind == "regression":
        from sklearn.linear_model import Ridge

        path = build_bundle(Ridge().fit(X, X[:, 1]), X, X[:, 1], tmp_path / "r", name=MODEL, version="1.0.0",
                            feature_names=NAMES, onnx=True).path  # fmt: skip
    else:
        path = bundles[kind].path
    c = make_client(path)
    meta = c.get(f"/v2/models/{MODEL}").json()
    r = c.post(INFER, json={"inputs": [tensor(shape=[2, 30], data=[ROW, X[1].tolist()])]})
    assert r.status_code == 200, r.text
    got = r.json()["outputs"]
    assert [o["name"] for o in got] == [o["name"] for o in meta["outputs"]]
    json_type = {"INT64": int, "FP64": float, "BYTES": str, "BOOL": bool}
    for declared, out in zip(meta["outputs"], got, strict=True):
        assert out["datatype"] == declared["datatype"], (declared, out)
        assert len(out["shape"]) == len(declared["shape"]) and out["shape"][1:] == declared["shape"][1:]
        assert all(type(v) is json_type[declared["datatype"]] for v in out["data"]), out
    classes = meta["parameters"]["classes"]
    if classes:
        assert set(got[0]["data"]) <= set(classes)
        assert c.post("/predict", json={"features": ROW}).json()["prediction"] in classes


def test_string_classes_are_bytes_in_metadata_and_inference(
    make_client: ClientFactory, string_classes: BuildResult
) -> None:
    """Issue: the metadata said INT64 while inference answered BYTES."""
    c = make_client(string_classes.path)
    label = c.get(f"/v2/models/{MODEL}").json()["outputs"][0]
    assert label == {"name": "label", "datatype": "BYTES", "shape": [-1]}
    out = c.post(INFER, json={"inputs": [tensor()], "outputs": [{"name": "label"}]}).json()["outputs"]
    assert out == [{"name": "label", "shape": [1], "datatype": "BYTES", "data": ["malignant"]}]


# --------------------------------------------------------- declared datatypes are honoured
@pytest.mark.parametrize(
    ("datatype", "value", "ok"),
    [
        ("INT64", 1.5, False),
        ("INT64", 14.0, True),
        ("INT32", 14, True),
        ("UINT8", -1, False),
        ("INT8", 300, False),
        ("UINT64", 2**64, False),
        ("FP16", 70000.0, False),
        ("FP32", 1e39, False),
        ("FP64", 1e39, True),
    ],
)
def test_values_must_fit_the_declared_datatype(
    client: TestClient, datatype: str, value: Any, ok: bool
) -> None:
    # the other 29 values fit every datatype, so only the value under test can be refused
    r = client.post(INFER, json={"inputs": [tensor(datatype=datatype, data=[value, *[1] * 29])]})
    if ok:
        assert r.status_code == 200, r.text
    else:
        refused(r, "inputs[0].data[0]", "wrong_type")


def test_a_float32_model_refuses_values_beyond_float32(make_client: ClientFactory, tmp_path: Path) -> None:
    """A float32 model would compute with infinity: refuse the value instead of answering nonsense."""
    res = build_bundle(demo_pipeline(), X, Y, tmp_path / "f32", name=MODEL, version="1.0.0", feature_names=NAMES,
                       onnx=True, onnx_precision="float32")  # fmt: skip
    assert res.manifest["input"]["dtype"] == "float32"
    c = make_client(res.path)
    row = list(ROW)
    row[3] = 1e39
    err = refused(c.post("/predict", json={"features": row}), "features[3]", "not_finite")
    assert "float32" in err["error"]
    assert c.post("/predict", json={"features": ROW}).status_code == 200


# ---------------------------------------------------------- the simple protocol, same classes
@pytest.mark.parametrize(
    ("url", "body", "field", "code"),
    [
        ("/predict", {"features": ROW, "threshold": 0.9}, "threshold", "unknown_field"),
        ("/predict", {"feature": ROW}, "feature", "unknown_field"),
        (INFER, {"inputs": [tensor()], "output": [{"name": "label"}]}, "output", "unknown_field"),
        (INFER, {"inputs": [tensor(dtype="FP64")]}, "inputs[0].dtype", "unknown_field"),
        ("/feedback", {"request_id": "abc", "features": ROW, "label": 0}, "request_id", "ambiguous"),
        ("/feedback", {"features": ROW, "label": 0, "weight": 2}, "weight", "unknown_field"),
    ],
)
def test_options_the_server_does_not_have_are_refused_not_ignored(
    client: TestClient, url: str, body: dict[str, Any], field: str, code: str
) -> None:
    refused(client.post(url, json=body), field, code)


# ------------------------------------------------------------- inputs the model cannot compute
@pytest.mark.parametrize(
    ("url", "body", "field", "computed"),
    [
        ("/predict", {"features": [1.7e308] * 30}, "features", 0),
        ("/predict", {"features": [ROW, [1.7e308] * 30]}, "features[1]", 1),  # row 0 was computed
        (INFER, {"inputs": [tensor(data=[1.7e308] * 30)]}, "inputs", 0),
        ("/feedback", {"features": [1.7e308] * 30, "label": 0}, "features", 0),
    ],
)
def test_finite_inputs_the_model_overflows_on_are_refused_and_never_counted(
    client: TestClient, url: str, body: dict[str, Any], field: str, computed: int
) -> None:
    """Found by schemathesis: 1.7e308 overflows the logistic model's scaler; the answer was 200 with
    null scores, and the score histogram's _sum became NaN for good."""
    refused(client.post(url, json=body), field, "not_finite")
    assert client.post("/predict", json={"features": ROW}).status_code == 200
    text = client.get("/metrics").text
    assert "NaN" not in text
    count = f'mlcanary_prediction_score_count{{model_name="{MODEL}",model_version="1.0.0"}} {1.0 + computed}'
    assert count in text
