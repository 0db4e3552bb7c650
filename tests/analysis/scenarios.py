"""The deterministic history every real-Prometheus test reads: one model name per scenario.

Each model has a stable ``v1`` and a canary ``v2`` (the ``hostile`` model uses hostile version
strings). Traffic is split 95/5 (the first canary step). Rates are per second and constant, except
for ``spike``, whose traffic is 100x lower before ``PHASE_B``; queries use a 5-minute window at
``T_FULL`` (or ``T_THIN`` for the low-traffic phase), so a count in a window is ``rate * 300``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from mlcanary.analysis import queries as q

from .promkit import History, Rate

T0 = 1_735_689_600  # 2025-01-01T00:00:00Z
PHASE_B = T0 + 3600
T_THIN = T0 + 1800
T_FULL = T0 + 5400
WINDOW = "5m"

HOSTILE_STABLE = 'v1" or vector(1) or "'
HOSTILE_CANARY = 'a"b\\c\nd}{,x=~".*"'

LATENCY_FAST = {
    0.005: 0.1, 0.01: 0.3, 0.025: 0.6, 0.05: 0.85, 0.1: 0.95, 0.25: 0.995,
    0.5: 1.0, 1.0: 1.0, 2.5: 1.0, 5.0: 1.0,
}  # fmt: skip
LATENCY_SLOW = {
    0.005: 0.0, 0.01: 0.0, 0.025: 0.02, 0.05: 0.05, 0.1: 0.1, 0.25: 0.3,
    0.5: 0.5, 1.0: 0.7, 2.5: 0.95, 5.0: 0.995,
}  # fmt: skip
P99_FAST = 0.1 + 0.15 * (0.99 - 0.95) / (0.995 - 0.95)
P99_SLOW = 2.5 + 2.5 * (0.99 - 0.95) / (0.995 - 0.95)

SCORE_EDGES = [round(i * 0.05, 2) for i in range(21)]


def _cdf_from_masses(masses: Mapping[float, float]) -> dict[float, float]:
    """masses: upper bucket edge -> share of observations in (previous edge, edge]."""
    cdf, total = {}, 0.0
    for edge in SCORE_EDGES:
        total += masses.get(edge, 0.0)
        cdf[edge] = min(total, 1.0)
    return cdf


SCORES_GOOD = _cdf_from_masses(
    {0.05: 0.25, 0.1: 0.08, **{round(0.15 + i * 0.05, 2): 0.02 for i in range(16)}, 0.95: 0.1, 1.0: 0.25}
)
SCORES_DEGENERATE = _cdf_from_masses({1.0: 1.0})
CLASSES_GOOD = {"0": 0.37, "1": 0.63}
CLASSES_DEGENERATE = {"1": 1.0}
PSI_GOOD = {"mean radius": 0.02, "mean texture": 0.04}
PSI_DRIFTED = {"mean radius": 0.03, "mean texture": 0.62}

TOTAL_RPS = 40.0
CANARY_SHARE = 0.05


def _mul(*factors: Rate) -> Callable[[float], float]:
    def fn(t: float) -> float:
        value = 1.0
        for f in factors:
            value *= f(t) if callable(f) else f
        return value

    return fn


def _complement(share: Rate) -> Callable[[float], float]:
    return lambda t: 1.0 - (share(t) if callable(share) else share)


def serve(
    h: History,
    model: str,
    version: str,
    *,
    rps: Rate,
    error_share: Rate = 0.01,
    latency: Mapping[float, float] = LATENCY_FAST,
    scores: Mapping[float, float] = SCORES_GOOD,
    classes: Mapping[str, float] = CLASSES_GOOD,
    psi: Mapping[str, float] | None = PSI_GOOD,
    feedback_share: float | None = 0.25,
    accuracy: float = 0.9,
) -> None:
    """One revision's series, as the serving image exports them."""
    labels = {q.LABEL_MODEL_NAME: model, q.LABEL_MODEL_VERSION: version}
    h.counter(q.REQUESTS_TOTAL, {**labels, q.LABEL_OUTCOME: "success"}, _mul(rps, _complement(error_share)))
    h.counter(q.REQUESTS_TOTAL, {**labels, q.LABEL_OUTCOME: "client_error"}, 0.0)
    h.counter(q.REQUESTS_TOTAL, {**labels, q.LABEL_OUTCOME: "server_error"}, _mul(rps, error_share))
    h.histogram(q.REQUEST_DURATION_SECONDS, labels, rps, latency, mean=0.05)
    h.histogram(q.PREDICTION_SCORE, labels, rps, scores, mean=0.6)
    for cls, share in classes.items():
        h.counter(q.PREDICTIONS_TOTAL, {**labels, q.LABEL_CLASS: cls}, _mul(rps, share))
    if psi is not None:
        for feature, value in psi.items():
            h.gauge(q.INPUT_DRIFT_PSI, {**labels, q.LABEL_FEATURE: feature}, value)
        h.gauge(q.INPUT_DRIFT_WINDOW_ROWS, labels, 1000.0)
    if feedback_share is not None:
        h.counter(q.FEEDBACK_TOTAL, {**labels, q.LABEL_CORRECT: "true"}, _mul(rps, feedback_share * accuracy))
        h.counter(
            q.FEEDBACK_TOTAL, {**labels, q.LABEL_CORRECT: "false"}, _mul(rps, feedback_share * (1 - accuracy))
        )


def pair(h: History, model: str, canary: Mapping[str, Any] | None = None, **common: Any) -> None:
    """Stable v1 at 95% and canary v2 at 5% of TOTAL_RPS; ``canary`` overrides the canary's settings."""
    serve(h, model, "v1", rps=TOTAL_RPS * (1 - CANARY_SHARE), **common)
    serve(h, model, "v2", rps=TOTAL_RPS * CANARY_SHARE, **{**common, **(canary or {})})


def spike_rps(share: float) -> Callable[[float], float]:
    def fn(t: float) -> float:
        return TOTAL_RPS * share * (0.01 if t < PHASE_B else 1.0)

    return fn


def spike_errors(t: float) -> float:
    return 0.2 if t < PHASE_B else 0.1


def build_history() -> History:
    h = History(spans=[(T0, T0 + 60), (T_THIN - 600, T_THIN + 60), (T_FULL - 600, T_FULL + 60)])
    pair(h, "good")
    pair(
        h, "degenerate", canary={"scores": SCORES_DEGENERATE, "classes": CLASSES_DEGENERATE, "accuracy": 0.63}
    )
    pair(h, "drifted", canary={"psi": PSI_DRIFTED})
    pair(h, "slow", canary={"latency": LATENCY_SLOW})
    pair(h, "badacc", canary={"accuracy": 0.7})
    pair(h, "nolabels", feedback_share=None)
    serve(h, "spike", "v1", rps=spike_rps(1 - CANARY_SHARE))
    serve(h, "spike", "v2", rps=spike_rps(CANARY_SHARE), error_share=spike_errors)
    serve(h, "hostile", HOSTILE_STABLE, rps=TOTAL_RPS * (1 - CANARY_SHARE), error_share=0.01)
    serve(h, "hostile", HOSTILE_CANARY, rps=TOTAL_RPS * CANARY_SHARE, error_share=0.05)
    return h
