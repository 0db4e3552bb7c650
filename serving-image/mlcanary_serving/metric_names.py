"""The one place where the serving image's Prometheus metric and label names are defined.

The operator's PromQL and its contract test import these constants; the server builds its
collectors from them (``metrics.py``); ``docs/serving.md`` is written from ``METRIC_HELP``.
Stdlib only, so the operator can import it without the serving dependencies.

Every series carries ``model_name`` and ``model_version``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

# --- label names -------------------------------------------------------------------------------
LABEL_MODEL_NAME: Final = "model_name"
LABEL_MODEL_VERSION: Final = "model_version"
LABEL_OUTCOME: Final = "outcome"
LABEL_CLASS: Final = "class"
LABEL_FEATURE: Final = "feature"
LABEL_CORRECT: Final = "correct"
LABEL_FORMAT: Final = "format"
LABEL_REFERENCE_VERSION: Final = "reference_version"  # the shadow phase's stable model

MODEL_LABELS: Final = (LABEL_MODEL_NAME, LABEL_MODEL_VERSION)

# values of the ``outcome`` label
OUTCOME_SUCCESS: Final = "success"
OUTCOME_CLIENT_ERROR: Final = "client_error"  # 4xx: the caller sent something wrong
OUTCOME_SERVER_ERROR: Final = "server_error"  # 5xx: our fault (incl. not ready, injected faults)
OUTCOMES: Final = (OUTCOME_SUCCESS, OUTCOME_CLIENT_ERROR, OUTCOME_SERVER_ERROR)

# values of the ``correct`` label
CORRECT_TRUE: Final = "true"
CORRECT_FALSE: Final = "false"

# --- metric names (full exposition names; counters end in _total) ------------------------------
REQUESTS_TOTAL: Final = "mlcanary_requests_total"
REQUEST_DURATION_SECONDS: Final = "mlcanary_request_duration_seconds"
PREDICTIONS_TOTAL: Final = "mlcanary_predictions_total"
PREDICTION_SCORE: Final = "mlcanary_prediction_score"
PREDICTION_DRIFT_PSI: Final = "mlcanary_prediction_drift_psi"
INPUT_DRIFT_PSI: Final = "mlcanary_input_drift_psi"
INPUT_DRIFT_PSI_MAX: Final = "mlcanary_input_drift_psi_max"
INPUT_DRIFT_WINDOW_ROWS: Final = "mlcanary_input_drift_window_rows"
INPUT_OUT_OF_RANGE_TOTAL: Final = "mlcanary_input_out_of_range_total"
FEEDBACK_TOTAL: Final = "mlcanary_feedback_total"
MODEL_INFO: Final = "mlcanary_model_info"
SHADOW_COMPARED_TOTAL: Final = "mlcanary_shadow_compared_total"
SHADOW_AGREED_TOTAL: Final = "mlcanary_shadow_agreed_total"
SHADOW_SCORE_DIFFERENCE: Final = "mlcanary_shadow_score_difference"
SHADOW_LABELS: Final = (*MODEL_LABELS, LABEL_REFERENCE_VERSION)
SHADOW_METRICS: Final = (SHADOW_COMPARED_TOTAL, SHADOW_AGREED_TOTAL, SHADOW_SCORE_DIFFERENCE)
"""Exported only by a server given a reference model (the shadow phase)."""

# Fixed bucket edges of ``mlcanary_prediction_score`` for probability scores (classification):
# identical in every version, so two versions' histograms can be compared bucket by bucket.
PROBABILITY_SCORE_BUCKETS: Final = tuple(round(i * 0.05, 2) for i in range(21))  # 0.0, 0.05, ..., 1.0

# Request latency buckets: fine from 0.5 ms to 2 s (plus 5 s for outliers).
# |canary score - reference score| buckets: 0 (identical) then 1-2-5 decades, for probabilities and
# regression outputs alike.
SCORE_DIFFERENCE_BUCKETS: Final = (
    0.0, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0,
    100.0, 200.0, 500.0, 1000.0,
)  # fmt: skip

LATENCY_BUCKETS: Final = (
    0.0005, 0.001, 0.0015, 0.002, 0.003, 0.004, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05,
    0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 5.0,
)  # fmt: skip


@dataclass(frozen=True)
class MetricSpec:
    """Name, Prometheus type, label names (besides none) and help text of one metric."""

    name: str
    type: str  # "counter" | "gauge" | "histogram"
    labels: tuple[str, ...]
    help: str


_SPECS: Final = (
    MetricSpec(
        REQUESTS_TOTAL,
        "counter",
        (*MODEL_LABELS, LABEL_OUTCOME),
        "Prediction requests (/predict, /v2/.../infer) by outcome: success, client_error (4xx: bad "
        "input, unknown model, oversized body), server_error (5xx: model failure, injected error). "
        "Error rate = server_error / all. Requests refused before a model is loaded are not counted.",
    ),
    MetricSpec(
        REQUEST_DURATION_SECONDS,
        "histogram",
        MODEL_LABELS,
        "Server-side latency of prediction requests in seconds, from handler entry to response "
        "(includes queueing in the micro-batcher and injected latency).",
    ),
    MetricSpec(
        PREDICTIONS_TOTAL,
        "counter",
        (*MODEL_LABELS, LABEL_CLASS),
        "Rows predicted per class (classification). Compare class shares between versions.",
    ),
    MetricSpec(
        PREDICTION_SCORE,
        "histogram",
        MODEL_LABELS,
        "Distribution of the score per row: probability of the positive class (binary), of the "
        "predicted class (multiclass), or the regression output. Probability buckets are fixed "
        "(0.0, 0.05, ..., 1.0) in every version; regression buckets come from the bundle's "
        "reference prediction quantiles and may differ between versions.",
    ),
    MetricSpec(
        PREDICTION_DRIFT_PSI,
        "gauge",
        MODEL_LABELS,
        "PSI of the scores in the sliding window against the training prediction distribution "
        "recorded in the bundle. Absent until the window holds MLCANARY_DRIFT_MIN_ROWS rows.",
    ),
    MetricSpec(
        INPUT_DRIFT_PSI,
        "gauge",
        (*MODEL_LABELS, LABEL_FEATURE),
        "Population stability index of each input feature over the sliding window of recent rows "
        "against the bundle's reference quantile bins (<0.1 stable, 0.1-0.25 moderate, >0.25 "
        "large shift). Absent until the window holds MLCANARY_DRIFT_MIN_ROWS rows.",
    ),
    MetricSpec(
        INPUT_DRIFT_PSI_MAX,
        "gauge",
        MODEL_LABELS,
        "Largest per-feature input PSI (see mlcanary_input_drift_psi).",
    ),
    MetricSpec(
        INPUT_DRIFT_WINDOW_ROWS,
        "gauge",
        MODEL_LABELS,
        "Rows currently in the drift window (at most MLCANARY_DRIFT_WINDOW).",
    ),
    MetricSpec(
        INPUT_OUT_OF_RANGE_TOTAL,
        "counter",
        (*MODEL_LABELS, LABEL_FEATURE),
        "Rows whose feature value was outside the schema's allowed range (counted when "
        "MLCANARY_OUT_OF_RANGE=count; rejected with 422 and counted when =reject).",
    ),
    MetricSpec(
        FEEDBACK_TOTAL,
        "counter",
        (*MODEL_LABELS, LABEL_CORRECT),
        "Ground-truth labels received on POST /feedback, by whether the served prediction was "
        'correct ("true"/"false"). Accuracy = correct="true" / all.',
    ),
    MetricSpec(
        MODEL_INFO,
        "gauge",
        (*MODEL_LABELS, LABEL_FORMAT),
        "Always 1 once a model is loaded; format is onnx or joblib.",
    ),
    MetricSpec(
        SHADOW_COMPARED_TOTAL,
        "counter",
        SHADOW_LABELS,
        "Rows scored by both this model and the reference model (the stable's, loaded when "
        "MLCANARY_REFERENCE_BUNDLE_URI is set for the shadow phase); reference_version is its version.",
    ),
    MetricSpec(
        SHADOW_AGREED_TOTAL,
        "counter",
        SHADOW_LABELS,
        "Compared rows on which this model predicted the reference model's label (classifiers). "
        "Agreement = agreed / compared.",
    ),
    MetricSpec(
        SHADOW_SCORE_DIFFERENCE,
        "histogram",
        SHADOW_LABELS,
        "|score of this model - score of the reference model| per compared row (the score of "
        "mlcanary_prediction_score: positive-class probability, predicted-class probability, or "
        "the regression output).",
    ),
)

METRICS: Final[dict[str, MetricSpec]] = {s.name: s for s in _SPECS}
"""Every metric this server exports, by exposition name."""

METRIC_NAMES: Final[dict[str, str]] = {
    "requests_total": REQUESTS_TOTAL,
    "request_duration_seconds": REQUEST_DURATION_SECONDS,
    "predictions_total": PREDICTIONS_TOTAL,
    "prediction_score": PREDICTION_SCORE,
    "prediction_drift_psi": PREDICTION_DRIFT_PSI,
    "input_drift_psi": INPUT_DRIFT_PSI,
    "input_drift_psi_max": INPUT_DRIFT_PSI_MAX,
    "input_drift_window_rows": INPUT_DRIFT_WINDOW_ROWS,
    "input_out_of_range_total": INPUT_OUT_OF_RANGE_TOTAL,
    "feedback_total": FEEDBACK_TOTAL,
    "model_info": MODEL_INFO,
    "shadow_compared_total": SHADOW_COMPARED_TOTAL,
    "shadow_agreed_total": SHADOW_AGREED_TOTAL,
    "shadow_score_difference": SHADOW_SCORE_DIFFERENCE,
}
"""Short key -> exposition name (for code that prefers a mapping to constants)."""

METRIC_HELP: Final[dict[str, str]] = {s.name: s.help for s in _SPECS}


def exposition_series(name: str) -> tuple[str, ...]:
    """Series names that appear in the text exposition for ``name`` (histograms expand)."""
    spec = METRICS[name]
    if spec.type == "histogram":
        return (f"{name}_bucket", f"{name}_sum", f"{name}_count")
    return (name,)
