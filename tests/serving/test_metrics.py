"""Metrics contract: the exposition uses exactly the names of metric_names; values are right."""

from __future__ import annotations

import re

import numpy as np
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from mlcanary_serving import metric_names as mn
from mlcanary_serving import metrics as metrics_module
from mlcanary_serving.bundle import BuildResult
from mlcanary_serving.testing import demo_data

from .conftest import MODEL, ClientFactory

X, Y, NAMES = demo_data()


def scrape(c: TestClient) -> dict[str, list[tuple[str, dict[str, str], float]]]:
    out: dict[str, list[tuple[str, dict[str, str], float]]] = {}
    for fam in text_string_to_metric_families(c.get("/metrics").text):
        for s in fam.samples:
            out.setdefault(fam.name, []).append((s.name, s.labels, s.value))
    return out


def value(samples: dict[str, list[tuple[str, dict[str, str], float]]], name: str, **labels: str) -> float:
    for sname, lab, v in [s for fam in samples.values() for s in fam]:
        if sname == name and all(lab.get(k) == val for k, val in labels.items()):
            return v
    raise KeyError((name, labels))


def exercise(c: TestClient, rows: int = 150) -> None:
    c.post("/predict", json={"features": X[:rows].tolist()})
    rid = c.post("/predict", json={"features": X[0].tolist()}).json()["request_id"]
    c.post("/feedback", json={"request_id": rid, "label": 1})
    c.post("/predict", json={"features": []})


def test_exposition_names_equal_the_constants(client: TestClient) -> None:
    exercise(client)
    text = client.get("/metrics").text
    series = {m.group(1) for m in re.finditer(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)[{ ]", text, re.M)}
    expected = {s for name in mn.METRICS if name not in mn.SHADOW_METRICS for s in mn.exposition_series(name)}
    assert series == expected
    # label names per metric
    for fam in text_string_to_metric_families(text):
        name = fam.name + "_total" if fam.type == "counter" else fam.name
        spec = mn.METRICS[name]
        assert fam.type == spec.type
        for s in fam.samples:
            assert set(s.labels) - {"le"} == set(spec.labels), (name, s.labels)
            assert s.labels["model_name"] == MODEL and s.labels["model_version"] == "1.0.0"


def test_with_a_reference_model_the_shadow_series_are_exported_with_their_labels(
    make_client: ClientFactory, bundles: dict[str, BuildResult]
) -> None:
    client = make_client(bundles["onnx"].path, reference_uri=str(bundles["hgb"].path))
    exercise(client)
    text = client.get("/metrics").text
    series = {m.group(1) for m in re.finditer(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)[{ ]", text, re.M)}
    assert series == {s for name in mn.METRICS for s in mn.exposition_series(name)}
    s = scrape(client)
    lab = {"model_name": MODEL, "model_version": "1.0.0", "reference_version": "2.0.0"}
    assert value(s, mn.SHADOW_COMPARED_TOTAL, **lab) == 151  # every predicted row, none of the 422
    assert 0 < value(s, mn.SHADOW_AGREED_TOTAL, **lab) <= 151
    assert value(s, mn.SHADOW_SCORE_DIFFERENCE + "_count", **lab) == 151


def test_metric_names_module_is_consistent() -> None:
    assert set(mn.METRIC_NAMES.values()) == set(mn.METRICS) == set(mn.METRIC_HELP)
    for name in mn.METRICS:
        assert re.fullmatch(r"mlcanary_[a-z_]+", name)
        assert (mn.METRICS[name].type == "counter") == name.endswith("_total")
    assert mn.REQUESTS_TOTAL == "mlcanary_requests_total"
    assert mn.OUTCOMES == ("success", "client_error", "server_error")
    assert metrics_module.REQUESTS_TOTAL == mn.REQUESTS_TOTAL  # re-exported
    assert mn.PROBABILITY_SCORE_BUCKETS[:3] == (0.0, 0.05, 0.1) and mn.PROBABILITY_SCORE_BUCKETS[-1] == 1.0


def test_values_after_traffic(client: TestClient) -> None:
    exercise(client)
    s = scrape(client)
    lab = {"model_name": MODEL, "model_version": "1.0.0"}
    assert value(s, mn.REQUESTS_TOTAL, **lab, outcome="success") == 2
    assert value(s, mn.REQUESTS_TOTAL, **lab, outcome="client_error") == 1
    assert value(s, mn.REQUESTS_TOTAL, **lab, outcome="server_error") == 0
    assert value(s, mn.REQUEST_DURATION_SECONDS + "_count", **lab) == 3
    pred = client.post("/predict", json={"features": X[:150].tolist()}).json()["predictions"]
    s = scrape(client)
    n0 = value(s, mn.PREDICTIONS_TOTAL, **lab, **{"class": "0"})
    n1 = value(s, mn.PREDICTIONS_TOTAL, **lab, **{"class": "1"})
    assert n0 + n1 == 301 and n1 == 2 * pred.count(1)  # 150 rows twice + row 0 (class 0)
    assert value(s, mn.PREDICTION_SCORE + "_count", **lab) == 301
    assert value(s, mn.PREDICTION_SCORE + "_bucket", **lab, le="0.05") >= 2 * pred.count(0) * 0.5
    assert value(s, mn.FEEDBACK_TOTAL, **lab, correct="false") == 1
    assert value(s, mn.FEEDBACK_TOTAL, **lab, correct="true") == 0
    assert value(s, mn.MODEL_INFO, **lab, format="onnx") == 1
    assert value(s, mn.INPUT_DRIFT_WINDOW_ROWS, **lab) == 301


def test_score_buckets_are_fixed_for_probabilities(client: TestClient) -> None:
    client.post("/predict", json={"features": X[0].tolist()})
    s = scrape(client)
    les = sorted({float(lab["le"]) for name, lab, _ in s[mn.PREDICTION_SCORE] if "le" in lab})
    assert les[:-1] == list(mn.PROBABILITY_SCORE_BUCKETS)


def test_drift_psi_is_low_on_training_data_and_high_on_shifted_data(
    make_client: ClientFactory, bundles: dict[str, BuildResult]
) -> None:
    c = make_client(
        bundles["onnx"].path, env={"MLCANARY_DRIFT_WINDOW": "300", "MLCANARY_DRIFT_MIN_ROWS": "100"}
    )
    c.post("/predict", json={"features": X[:50].tolist()})
    s = scrape(c)
    assert mn.INPUT_DRIFT_PSI not in s  # below MLCANARY_DRIFT_MIN_ROWS: no data, no gauge
    rng = np.random.default_rng(0)
    c.post("/predict", json={"features": X[rng.choice(len(X), 300)].tolist()})
    s = scrape(c)
    lab = {"model_name": MODEL, "model_version": "1.0.0"}
    assert value(s, mn.INPUT_DRIFT_WINDOW_ROWS, **lab) == 300
    assert value(s, mn.INPUT_DRIFT_PSI_MAX, **lab) < 0.15
    assert value(s, mn.PREDICTION_DRIFT_PSI, **lab) < 0.25  # 20 fixed buckets: noisier than inputs
    shifted = X[rng.choice(len(X), 300)].copy()
    shifted[:, 0] *= 1.5  # "mean radius" drifts
    c.post("/predict", json={"features": shifted.tolist()})
    s = scrape(c)
    assert value(s, mn.INPUT_DRIFT_PSI, **lab, feature="mean radius") > 0.5
    assert value(s, mn.INPUT_DRIFT_PSI, **lab, feature="mean texture") < 0.2
    assert value(s, mn.INPUT_DRIFT_PSI_MAX, **lab) == pytest.approx(
        value(s, mn.INPUT_DRIFT_PSI, **lab, feature="mean radius")
    )


def test_registries_are_per_app(make_client: ClientFactory, bundles: dict[str, BuildResult]) -> None:
    a = make_client(bundles["onnx"].path)
    b = make_client(bundles["joblib"].path)
    a.post("/predict", json={"features": X[0].tolist()})
    assert 'model_version="1.1.0"' not in a.get("/metrics").text
    sb = scrape(b)
    assert value(sb, mn.REQUESTS_TOTAL, model_version="1.1.0", outcome="success") == 0
