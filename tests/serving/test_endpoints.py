"""Every endpoint: shapes of requests and answers, identity headers, request ids, feedback."""

from __future__ import annotations

import numpy as np
import pytest
from fastapi.testclient import TestClient

from mlcanary_serving.bundle import BuildResult
from mlcanary_serving.testing import demo_data

from .conftest import MODEL, ClientFactory

X, Y, NAMES = demo_data()


def assert_identity(r: object, version: str = "1.0.0") -> None:
    resp = r  # httpx.Response
    body = resp.json()  # type: ignore[attr-defined]
    assert body["model_name"] == MODEL and body["model_version"] == version
    assert resp.headers["x-model-version"] == version and resp.headers["x-model-name"] == MODEL  # type: ignore[attr-defined]
    assert body["request_id"] == resp.headers["x-request-id"]  # type: ignore[attr-defined]


def test_predict_single_row(client: TestClient, row: list[float]) -> None:
    r = client.post("/predict", json={"features": row})
    assert r.status_code == 200
    assert_identity(r)
    body = r.json()
    assert body["prediction"] == 0 and len(body["probabilities"]) == 2
    assert body["score"] == pytest.approx(body["probabilities"][1])


def test_predict_named_and_batches(client: TestClient) -> None:
    named = dict(zip(NAMES, X[1].tolist(), strict=True))
    single = client.post("/predict", json={"features": named}).json()
    batch = client.post("/predict", json={"features": X[:5].tolist()}).json()
    named_batch = client.post(
        "/predict", json={"instances": [dict(zip(NAMES, x, strict=True)) for x in X[:5].tolist()]}
    )
    assert named_batch.status_code == 200
    assert batch["predictions"] == named_batch.json()["predictions"] == [0, 0, 0, 0, 0]
    assert single["prediction"] == batch["predictions"][1]
    assert len(batch["probabilities"]) == len(batch["scores"]) == 5


def test_predictions_match_the_pipeline(client: TestClient) -> None:
    from mlcanary_serving.testing import demo_pipeline

    body = client.post("/predict", json={"features": X.tolist()[:300]}).json()
    assert body["predictions"] == demo_pipeline().predict(X[:300]).tolist()


def test_request_id_is_echoed_or_generated(client: TestClient, row: list[float]) -> None:
    r = client.post("/predict", json={"features": row}, headers={"X-Request-ID": "abc-123"})
    assert r.headers["x-request-id"] == "abc-123" and r.json()["request_id"] == "abc-123"
    r = client.post("/predict", json={"features": row}, headers={"X-Request-ID": "bad id\twith tab"})
    assert r.headers["x-request-id"] != "bad id\twith tab" and len(r.headers["x-request-id"]) == 16
    ids = {client.post("/predict", json={"features": row}).headers["x-request-id"] for _ in range(20)}
    assert len(ids) == 20


def test_v2_infer_tensor_and_per_feature_inputs(client: TestClient) -> None:
    r = client.post(
        f"/v2/models/{MODEL}/infer",
        json={
            "id": "req-7",
            "inputs": [
                {"name": "input", "shape": [3, 30], "datatype": "FP64", "data": X[:3].ravel().tolist()}
            ],
        },
    )
    assert r.status_code == 200
    assert_identity(r)
    body = r.json()
    assert body["id"] == "req-7"
    out = {o["name"]: o for o in body["outputs"]}
    assert out["label"]["data"] == [0, 0, 0] and out["label"]["datatype"] == "INT64"
    assert out["probabilities"]["shape"] == [3, 2] and len(out["probabilities"]["data"]) == 6
    nested = client.post(
        f"/v2/models/{MODEL}/versions/1.0.0/infer",
        json={"inputs": [{"name": "x", "shape": [3, 30], "datatype": "FP32", "data": X[:3].tolist()}]},
    )
    assert nested.json()["outputs"][0]["data"] == [0, 0, 0]
    cols = [
        {"name": n, "shape": [3], "datatype": "FP64", "data": X[:3, i].tolist()} for i, n in enumerate(NAMES)
    ]
    per = client.post(f"/v2/models/{MODEL}/infer", json={"inputs": cols})
    assert per.status_code == 200 and per.json()["outputs"][1]["data"] == out["probabilities"]["data"]


def test_v2_metadata_and_health(client: TestClient, bundles: dict[str, BuildResult]) -> None:
    meta = client.get(f"/v2/models/{MODEL}")
    assert meta.status_code == 200
    assert_identity(meta)
    m = meta.json()
    assert m["name"] == MODEL and m["versions"] == ["1.0.0"] and m["platform"] == "onnxruntime"
    assert m["inputs"][0]["shape"] == [-1, 30] and m["parameters"]["feature_names"] == NAMES
    assert m["parameters"]["bundle_sha256"] == bundles["onnx"].manifest_sha256
    assert client.get(f"/v2/models/{MODEL}/versions/1.0.0").status_code == 200
    assert client.get(f"/v2/models/{MODEL}/ready").json()["ready"] is True
    assert client.get(f"/v2/models/{MODEL}/versions/1.0.0/ready").status_code == 200
    assert client.get("/v2/health/live").json()["live"] is True
    assert client.get("/v2/health/ready").json()["ready"] is True
    assert client.get("/v2").json()["name"] == "mlcanary-serving"
    for path in ("/healthz", "/readyz"):
        r = client.get(path)
        assert r.status_code == 200
        assert_identity(r)


@pytest.mark.parametrize(
    "path",
    [
        "/v2/models/other/infer",
        "/v2/models/other",
        "/v2/models/other/ready",
        f"/v2/models/{MODEL}/versions/9.9.9/infer",
        f"/v2/models/{MODEL}/versions/9.9.9",
    ],
)
def test_unknown_model_or_version_is_404(client: TestClient, path: str) -> None:
    r = client.post(path, json={"inputs": []}) if path.endswith("infer") else client.get(path)
    assert r.status_code == 404
    assert r.json()["field"] in ("model_name", "model_version")
    assert_identity(r)


def test_model_card(client: TestClient) -> None:
    r = client.get("/model-card")
    assert r.status_code == 200
    assert_identity(r)
    body = r.json()
    assert "intended_use" in body["card"] and "subgroups" in body["card"]
    assert body["manifest"]["format"] == "onnx" and body["schema"]["n_features"] == 30


def test_metrics_endpoint(client: TestClient) -> None:
    r = client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    assert r.headers["x-model-version"] == "1.0.0"
    assert 'mlcanary_model_info{format="onnx",model_name="breast-cancer",model_version="1.0.0"} 1.0' in r.text


def test_feedback_by_request_id(client: TestClient) -> None:
    p = client.post("/predict", json={"features": X[0].tolist()}).json()
    r = client.post("/feedback", json={"request_id": p["request_id"], "label": int(Y[0])})
    assert r.status_code == 200
    assert_identity(r)
    assert r.json()["correct"] is True and r.json()["for_request_id"] == p["request_id"]
    again = client.post("/feedback", json={"request_id": p["request_id"], "label": 1})
    assert again.status_code == 404 and again.json()["field"] == "request_id"
    pb = client.post("/predict", json={"features": X[:3].tolist()}).json()
    r = client.post("/feedback", json={"request_id": pb["request_id"], "labels": [0, 1, 0]})
    assert r.json()["correct"] == [True, False, True]


def test_feedback_with_features(client: TestClient) -> None:
    r = client.post("/feedback", json={"features": X[0].tolist(), "label": 1})
    assert r.status_code == 200 and r.json()["correct"] is False
    r = client.post("/feedback", json={"features": X[:2].tolist(), "labels": [0, 0]})
    assert r.json()["correct"] == [True, True]


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"label": 1}, 422, "request_id"),
        ({"request_id": "nope", "label": 1}, 404, "request_id"),
        ({"request_id": 5, "label": 1}, 422, "request_id"),
        ({"request_id": "x"}, 422, "label"),
        ({"request_id": "x", "label": [1]}, 422, "label"),
        ({"request_id": "x", "labels": []}, 422, "labels"),
        ({"features": [1.0] * 30, "label": 7}, 422, "label"),
        ({"features": [1.0] * 29, "label": 1}, 422, "features"),
        ([1, 2], 422, "body"),
    ],
)
def test_feedback_bad_input(client: TestClient, body: object, status: int, field: str) -> None:
    r = client.post("/feedback", json=body)
    assert r.status_code == status, r.text
    assert r.json()["field"] == field


def test_joblib_bundle_serves_the_same(make_client: ClientFactory, bundles: dict[str, BuildResult]) -> None:
    c = make_client(bundles["joblib"].path)
    body = c.post("/predict", json={"features": X[:50].tolist()}).json()
    assert body["model_version"] == "1.1.0"
    assert c.get(f"/v2/models/{MODEL}").json()["platform"] == "sklearn"
    from mlcanary_serving.testing import demo_pipeline

    assert body["predictions"] == demo_pipeline().predict(X[:50]).tolist()
    assert np.allclose(body["scores"], demo_pipeline().predict_proba(X[:50])[:, 1], atol=1e-9)


def test_model_name_override(
    make_client: ClientFactory, bundles: dict[str, BuildResult], row: list[float]
) -> None:
    c = make_client(bundles["onnx"].path, model_name="canary-demo")
    r = c.post("/predict", json={"features": row})
    assert r.json()["model_name"] == "canary-demo" and r.headers["x-model-name"] == "canary-demo"
    assert c.post("/v2/models/canary-demo/infer", json={"inputs": [{"name": "input", "shape": [30],
                  "datatype": "FP64", "data": row}]}).status_code == 200  # fmt: skip


def test_unready_server_refuses_predictions(
    make_client: ClientFactory, tmp_path: object, row: list[float]
) -> None:
    c = make_client("/nonexistent/bundle", model_version="1.0.0")
    assert c.get("/healthz").status_code == 200
    for path in ("/readyz", "/v2/health/ready"):
        r = c.get(path)
        assert r.status_code == 503 and "bundle not found" in r.json()["reason"]
    r = c.post("/predict", json={"features": row})
    assert r.status_code == 503 and r.json()["code"] == "not_ready"
    assert r.headers["x-model-version"] == "1.0.0"
    assert c.post(f"/v2/models/{MODEL}/infer", json={}).status_code == 503
    assert c.get("/model-card").status_code == 503
    assert c.post("/feedback", json={"request_id": "x", "label": 1}).status_code == 503
    assert c.get("/metrics").status_code == 200


def test_version_mismatch_keeps_server_unready(
    make_client: ClientFactory, bundles: dict[str, BuildResult]
) -> None:
    c = make_client(bundles["onnx"].path, model_version="2.0.0")
    r = c.get("/readyz")
    assert r.status_code == 503 and "does not match MLCANARY_MODEL_VERSION=2.0.0" in r.json()["reason"]


def test_openapi_lists_every_endpoint(client: TestClient) -> None:
    paths = set(client.get("/openapi.json").json()["paths"])
    assert {
        "/predict", "/feedback", "/healthz", "/readyz", "/metrics", "/model-card", "/v2", "/v2/health/live",
        "/v2/health/ready", "/v2/models/{name}", "/v2/models/{name}/ready", "/v2/models/{name}/infer",
    } <= paths  # fmt: skip


def test_regression_bundle(make_client: ClientFactory, tmp_path: object) -> None:
    from pathlib import Path

    from sklearn.linear_model import Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from mlcanary_serving.bundle import build_bundle

    target = X[:, 1] * 2.0 + X[:, 2]
    pipe = make_pipeline(StandardScaler(), Ridge()).fit(X, target)
    res = build_bundle(pipe, X, target, Path(str(tmp_path)) / "reg", name="reg", version="0.1.0",
                       feature_names=NAMES, onnx=True)  # fmt: skip
    assert res.manifest["task"] == "regression" and res.manifest["format"] == "onnx"
    c = make_client(res.path)
    body = c.post("/predict", json={"features": X[:3].tolist()}).json()
    assert np.allclose(body["predictions"], pipe.predict(X[:3]), rtol=1e-6)
    assert "probabilities" not in body
    v2 = c.post("/v2/models/reg/infer", json={"inputs": [{"name": "input", "shape": [1, 30], "datatype": "FP64",
                "data": X[0].tolist()}]}).json()  # fmt: skip
    assert v2["outputs"][0]["name"] == "prediction"
    assert (
        c.post("/feedback", json={"request_id": body["request_id"], "labels": [1, 2, 3]}).status_code == 422
    )
    assert "mlcanary_prediction_score_bucket" in c.get("/metrics").text
