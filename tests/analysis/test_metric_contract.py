"""Contract: every metric, label and label value the analysis queries read is what the serving image
exports. The operator keeps its own copy of the names (it must not import the serving package at
runtime); this test fails when the two drift apart."""

from __future__ import annotations

import importlib.util

import pytest

from mlcanary.analysis import queries as q

if importlib.util.find_spec("mlcanary_serving.metrics") is None:  # pragma: no cover - serving not installed
    pytest.skip(
        "mlcanary_serving.metrics is not importable (install the package with the serving extra)",
        allow_module_level=True,
    )

np = pytest.importorskip("numpy", reason="the serving metrics module needs numpy (the serving extra)")

from prometheus_client import generate_latest  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from mlcanary.retraining.queries import RETRAINING_METRICS  # noqa: E402
from mlcanary_serving import metrics as serving  # noqa: E402
from mlcanary_serving.drift import WindowDrift  # noqa: E402


@pytest.mark.parametrize("family", sorted(q.USED_METRICS))
def test_every_queried_metric_is_defined_with_its_labels(family: str) -> None:
    kind, _suffix, labels = q.USED_METRICS[family]
    assert family in serving.METRICS, f"{family} is not exported by the serving image"
    spec = serving.METRICS[family]
    assert spec.type == kind
    assert set(labels) <= set(spec.labels), f"{family} lacks labels {set(labels) - set(spec.labels)}"


def test_label_values_and_names() -> None:
    assert q.OUTCOME_SERVER_ERROR in serving.OUTCOMES
    assert (q.CORRECT_TRUE, q.CORRECT_FALSE) == (serving.CORRECT_TRUE, serving.CORRECT_FALSE)
    for ours, theirs in [
        (q.LABEL_MODEL_NAME, serving.LABEL_MODEL_NAME),
        (q.LABEL_MODEL_VERSION, serving.LABEL_MODEL_VERSION),
        (q.LABEL_OUTCOME, serving.LABEL_OUTCOME),
        (q.LABEL_CLASS, serving.LABEL_CLASS),
        (q.LABEL_FEATURE, serving.LABEL_FEATURE),
        (q.LABEL_CORRECT, serving.LABEL_CORRECT),
        (q.LABEL_REFERENCE_VERSION, serving.LABEL_REFERENCE_VERSION),
    ]:
        assert ours == theirs


def test_probability_score_buckets_are_fixed() -> None:
    """predictionDrift compares the two versions' score histograms bucket by bucket."""
    assert tuple(round(i * 0.05, 2) for i in range(21)) == serving.PROBABILITY_SCORE_BUCKETS


def test_the_exposition_carries_every_series_the_queries_select() -> None:
    """Build the real collectors, record one of everything, and read the text exposition back."""
    registry = serving.new_registry()
    m = serving.ServingMetrics(registry, "fraud", "2.0.0", fmt="onnx", classes=["0", "1"], features=["age"])
    m.request(serving.OUTCOME_SUCCESS, 0.01)
    m.request(serving.OUTCOME_SERVER_ERROR, 0.02)
    m.predictions(["1"], np.array([0.93]))
    m.feedback[True].inc()
    m.feedback[False].inc()
    shadow = serving.ShadowMetrics(registry, "fraud", "2.0.0", "1.0.0", classifier=True)
    shadow.compare(1, [0.0, 0.3])
    window = WindowDrift(edges=[[0.5]], proportions=[[0.5, 0.5]], window=10)
    window.update(np.array([[0.1], [0.9], [0.7]]))
    registry.register(serving.DriftCollector(("fraud", "2.0.0"), ["age"], window, None, min_rows=1))

    seen: dict[str, list[dict[str, str]]] = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for sample in family.samples:
            seen.setdefault(sample.name, []).append(dict(sample.labels))

    for family, (_kind, suffix, labels) in q.USED_METRICS.items():
        name = family + suffix
        assert name in seen, f"{name} not in the exposition"
        wanted = set(labels) | ({q.LABEL_LE} if suffix == "_bucket" else set())
        assert any(wanted <= set(s) for s in seen[name]), f"{name} lacks labels {wanted}"
        assert all(
            s[q.LABEL_MODEL_NAME] == "fraud" and s[q.LABEL_MODEL_VERSION] == "2.0.0" for s in seen[name]
        )
    for extra in ("_count",):
        assert q.REQUEST_DURATION_SECONDS + extra in seen
    outcomes = {s[q.LABEL_OUTCOME] for s in seen[q.REQUESTS_TOTAL]}
    assert q.OUTCOME_SERVER_ERROR in outcomes
    assert {s[q.LABEL_CORRECT] for s in seen[q.FEEDBACK_TOTAL]} == {q.CORRECT_TRUE, q.CORRECT_FALSE}
    score_edges = {float(s[q.LABEL_LE]) for s in seen[q.PREDICTION_SCORE + "_bucket"]}
    assert score_edges == {*map(float, serving.PROBABILITY_SCORE_BUCKETS), float("inf")}


@pytest.mark.parametrize("family", sorted(RETRAINING_METRICS))
def test_every_retraining_metric_is_defined_with_its_labels(family: str) -> None:
    """spec.retraining's batched trigger queries read these from the stable version's pods."""
    kind, labels = RETRAINING_METRICS[family]
    assert family in serving.METRICS, f"{family} is not exported by the serving image"
    spec = serving.METRICS[family]
    assert spec.type == kind
    assert set(labels) <= set(spec.labels), f"{family} lacks labels {set(labels) - set(spec.labels)}"
