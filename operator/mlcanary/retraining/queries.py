"""PromQL of the retraining triggers, batched: one query per metric kind (and accuracy window) for
every ModelDeployment at once, grouped by model name and version (and namespace, when the operator
scopes queries by a namespace label). Pure: no I/O.

Values are escaped (:mod:`mlcanary.analysis.promql`); the metric names are the serving image's
(``mlcanary_serving/metric_names.py``), checked by ``tests/analysis/test_metric_contract.py``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from mlcanary.analysis.promql import check_label_name, promql_string, regex_escape
from mlcanary.analysis.queries import (
    CORRECT_TRUE,
    FEEDBACK_TOTAL,
    INPUT_DRIFT_PSI,
    LABEL_CORRECT,
    LABEL_MODEL_NAME,
    LABEL_MODEL_VERSION,
    promql_duration,
)
from mlcanary.retraining.core import ACCURACY_DROP, INPUT_DRIFT, PREDICTION_DRIFT

PREDICTION_DRIFT_PSI: Final = "mlcanary_prediction_drift_psi"

RETRAINING_METRICS: Final[dict[str, tuple[str, tuple[str, ...]]]] = {
    # exposition family: (type, labels the queries read) — for the contract test
    INPUT_DRIFT_PSI: ("gauge", (LABEL_MODEL_NAME, LABEL_MODEL_VERSION)),
    PREDICTION_DRIFT_PSI: ("gauge", (LABEL_MODEL_NAME, LABEL_MODEL_VERSION)),
    FEEDBACK_TOTAL: ("counter", (LABEL_MODEL_NAME, LABEL_MODEL_VERSION, LABEL_CORRECT)),
}

SeriesKey = tuple[str, str, str]  # (namespace or "", model name, model version)


@dataclass(frozen=True)
class Subscription:
    """What one ModelDeployment's triggers need: its stable version's metrics."""

    namespace: str
    model_name: str
    version: str
    kinds: frozenset[str]
    window: str  # accuracy window

    def key(self, scoped: bool) -> SeriesKey:
        return (self.namespace if scoped else "", self.model_name, self.version)


@dataclass(frozen=True)
class BatchQuery:
    kind: str
    window: str | None
    promql: str


def _grouping(namespace_label: str | None) -> str:
    labels = [LABEL_MODEL_NAME, LABEL_MODEL_VERSION]
    if namespace_label:
        labels.insert(0, check_label_name(namespace_label))
    return ", ".join(labels)


def _selector(names: Iterable[str], extra: str = "") -> str:
    alternatives = "|".join(regex_escape(n) for n in sorted(set(names)))
    return "{" + f"{LABEL_MODEL_NAME}=~{promql_string(alternatives)}" + extra + "}"


def batch_queries(subscriptions: Iterable[Subscription], namespace_label: str | None) -> list[BatchQuery]:
    """One query per kind (accuracy: per distinct window) covering every subscription."""
    subs = list(subscriptions)
    by = _grouping(namespace_label)
    queries: list[BatchQuery] = []
    for kind, metric in ((INPUT_DRIFT, INPUT_DRIFT_PSI), (PREDICTION_DRIFT, PREDICTION_DRIFT_PSI)):
        names = [s.model_name for s in subs if kind in s.kinds]
        if names:
            queries.append(BatchQuery(kind, None, f"max by ({by}) ({metric}{_selector(names)})"))
    windows = sorted({s.window for s in subs if ACCURACY_DROP in s.kinds})
    for window in windows:
        names = [s.model_name for s in subs if ACCURACY_DROP in s.kinds and s.window == window]
        queries.append(
            BatchQuery(
                ACCURACY_DROP,
                window,
                f"sum by ({by}, {LABEL_CORRECT}) "
                f"(increase({FEEDBACK_TOTAL}{_selector(names)}[{promql_duration(window)}]))",
            )
        )
    return queries


@dataclass(frozen=True)
class Reading:
    value: float | None
    samples: float | None = None


def _number(raw: Any) -> float | None:
    try:
        value = float(raw)
    except (TypeError, ValueError):
        return None
    return value if value == value and abs(value) != float("inf") else None  # NaN, Inf: no data


def parse_result(
    query: BatchQuery, result: Iterable[Mapping[str, Any]], namespace_label: str | None
) -> dict[SeriesKey, Reading]:
    """Readings per (namespace, model, version) from a Prometheus vector result."""
    readings: dict[SeriesKey, Reading] = {}
    correct: dict[SeriesKey, list[float]] = {}
    for series in result:
        labels = series.get("metric") or {}
        value = series.get("value") or [None, None]
        key = (
            str(labels.get(namespace_label, "")) if namespace_label else "",
            str(labels.get(LABEL_MODEL_NAME, "")),
            str(labels.get(LABEL_MODEL_VERSION, "")),
        )
        number = _number(value[1] if len(value) > 1 else None)
        if number is None:
            continue
        if query.kind == ACCURACY_DROP:
            right_total = correct.setdefault(key, [0.0, 0.0])
            if labels.get(LABEL_CORRECT) == CORRECT_TRUE:
                right_total[0] += number
            right_total[1] += number
        else:
            readings[key] = Reading(number)
    for key, (right, total) in correct.items():
        readings[key] = Reading(right / total if total > 0 else None, samples=total)
    return readings


def describe_batch(queries: Iterable[BatchQuery]) -> str:
    return json.dumps([q.promql for q in queries])


def stale(at: datetime, now: datetime, interval_seconds: float) -> bool:
    """A reading older than three evaluations counts as no data."""
    return (now - at).total_seconds() > 3 * interval_seconds
