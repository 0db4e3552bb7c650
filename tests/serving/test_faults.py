"""Fault injection: only through environment variables, off by default, visible in metrics."""

from __future__ import annotations

import time

import pytest

from mlcanary_serving import metric_names as mn
from mlcanary_serving.bundle import BuildResult
from mlcanary_serving.faults import FaultConfigError, Faults
from mlcanary_serving.settings import Settings
from mlcanary_serving.testing import demo_data

from .conftest import MODEL, ClientFactory

X, _, _ = demo_data()
V2 = {"inputs": [{"name": "input", "shape": [1, 30], "datatype": "FP64", "data": X[0].tolist()}]}


def test_off_by_default() -> None:
    assert not Settings.from_env({}).faults.active
    assert Settings.from_env({"MLCANARY_FAULT_ERROR_RATE": "0"}).faults.active is False


@pytest.mark.parametrize(
    "env",
    [
        {"MLCANARY_FAULT_ERROR_RATE": "1.5"},
        {"MLCANARY_FAULT_ERROR_RATE": "lots"},
        {"MLCANARY_FAULT_LATENCY_MS": "-1"},
    ],
)
def test_invalid_values_are_rejected(env: dict[str, str]) -> None:
    with pytest.raises(FaultConfigError):
        Faults.from_env(env)


def test_error_rate_one(make_client: ClientFactory, bundles: dict[str, BuildResult]) -> None:
    c = make_client(bundles["onnx"].path, env={"MLCANARY_FAULT_ERROR_RATE": "1"})
    for _ in range(5):
        r = c.post("/predict", json={"features": X[0].tolist()})
        assert r.status_code == 500 and r.json()["code"] == "injected_fault"
        assert r.headers["x-model-version"] == "1.0.0"
    assert c.post(f"/v2/models/{MODEL}/infer", json=V2).status_code == 500
    assert c.get("/readyz").status_code == 200  # the pod stays ready: the model "fails", not the pod
    text = c.get("/metrics").text
    assert (
        f'{mn.REQUESTS_TOTAL}{{model_name="{MODEL}",model_version="1.0.0",outcome="server_error"}} 6.0'
        in text
    )


def test_error_rate_fraction_is_seeded(make_client: ClientFactory, bundles: dict[str, BuildResult]) -> None:
    env = {"MLCANARY_FAULT_ERROR_RATE": "0.3", "MLCANARY_FAULT_SEED": "7"}
    c = make_client(bundles["onnx"].path, env=env)
    codes = [c.post("/predict", json={"features": X[0].tolist()}).status_code for _ in range(200)]
    assert set(codes) == {200, 500}
    assert 35 <= codes.count(500) <= 85
    c2 = make_client(bundles["onnx"].path, env=env)
    assert [c2.post("/predict", json={"features": X[0].tolist()}).status_code for _ in range(200)] == codes


def test_added_latency(make_client: ClientFactory, bundles: dict[str, BuildResult]) -> None:
    c = make_client(bundles["onnx"].path, env={"MLCANARY_FAULT_LATENCY_MS": "120"})
    t0 = time.perf_counter()
    assert c.post("/predict", json={"features": X[0].tolist()}).status_code == 200
    assert time.perf_counter() - t0 >= 0.12
    text = c.get("/metrics").text
    assert (
        f'{mn.REQUEST_DURATION_SECONDS}_bucket{{le="0.1",model_name="{MODEL}",model_version="1.0.0"}} 0.0'
        in text
    )
    assert (
        f'{mn.REQUEST_DURATION_SECONDS}_bucket{{le="0.15",model_name="{MODEL}",model_version="1.0.0"}} 1.0'
        in text
    )
    t0 = time.perf_counter()
    assert c.get("/healthz").status_code == 200  # only prediction endpoints are slowed
    assert time.perf_counter() - t0 < 0.1


def test_degenerate_predictions(make_client: ClientFactory, bundles: dict[str, BuildResult]) -> None:
    c = make_client(bundles["onnx"].path, env={"MLCANARY_FAULT_DEGENERATE": "true"})
    body = c.post("/predict", json={"features": X[:40].tolist()}).json()
    assert body["predictions"] == [0] * 40 and body["scores"] == [0.0] * 40
    assert c.post(f"/v2/models/{MODEL}/infer", json=V2).json()["outputs"][0]["data"] == [0]
    text = c.get("/metrics").text
    assert f'{mn.PREDICTIONS_TOTAL}{{class="0",model_name="{MODEL}",model_version="1.0.0"}} 41.0' in text
    assert f'{mn.PREDICTIONS_TOTAL}{{class="1",model_name="{MODEL}",model_version="1.0.0"}} 0.0' in text
    c1 = make_client(
        bundles["onnx"].path, env={"MLCANARY_FAULT_DEGENERATE": "1", "MLCANARY_FAULT_DEGENERATE_VALUE": "1"}
    )
    body = c1.post("/predict", json={"features": X[0].tolist()}).json()
    assert body["prediction"] == 1 and body["score"] == 1.0 and body["probabilities"] == [0.0, 1.0]


def test_a_healthy_server_really_predicts_both_classes(
    make_client: ClientFactory, bundles: dict[str, BuildResult]
) -> None:
    """Control for the degenerate test: without the knob the answers vary."""
    c = make_client(bundles["onnx"].path)
    assert set(c.post("/predict", json={"features": X[:40].tolist()}).json()["predictions"]) == {0, 1}
