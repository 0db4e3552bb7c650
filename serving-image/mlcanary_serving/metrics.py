"""Prometheus collectors of the serving image, built on an injectable ``CollectorRegistry``.

Names and help texts come from ``metric_names`` (re-exported here, so ``from
mlcanary_serving.metrics import REQUESTS_TOTAL`` works too). Label children are bound once per
model, so the request path does a dictionary-free ``inc``/``observe``.
"""

from __future__ import annotations

import os
from collections import Counter as Tally
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from . import metric_names as mn
from .drift import WindowDrift, psi
from .metric_names import *  # noqa: F403  (the constants are part of this module's API)
from .metric_names import METRIC_HELP, METRIC_NAMES, METRICS

__all__ = [
    "METRICS",
    "METRIC_HELP",
    "METRIC_NAMES",
    "DriftCollector",
    "ServingMetrics",
    "ShadowMetrics",
    "exposition",
    "multiprocess_dir",
    "new_registry",
]

try:  # no *_created series: they double the series count and nothing here queries them
    from prometheus_client import disable_created_metrics

    disable_created_metrics()  # type: ignore[no-untyped-call,unused-ignore]
except ImportError:  # pragma: no cover - old prometheus_client
    pass


def new_registry() -> CollectorRegistry:
    return CollectorRegistry(auto_describe=True)


def multiprocess_dir() -> str | None:
    """Where worker processes keep their metric values (several workers), else None (one process)."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def exposition(registry: CollectorRegistry, drift: Collector | None) -> bytes:
    """The text a scrape gets: this process's registry, or with several workers the pod's totals
    (every worker's counters and histograms summed by prometheus_client's multiprocess collector,
    and the drift gauges computed from every worker's window)."""
    if multiprocess_dir() is None:
        return generate_latest(registry)
    pod = CollectorRegistry()
    MultiProcessCollector(pod)  # type: ignore[no-untyped-call,unused-ignore]
    if drift is not None:
        pod.register(drift)
    return generate_latest(pod)


def _base(name: str) -> str:
    return name.removesuffix("_total")


class DriftCollector(Collector):
    """Computes PSI gauges at scrape time from the sliding windows."""

    def __init__(
        self,
        labels: tuple[str, str],
        features: Sequence[str],
        inputs: WindowDrift,
        scores: WindowDrift | None,
        min_rows: int,
    ) -> None:
        self.labels = labels
        self.features = list(features)
        self.inputs = inputs
        self.scores = scores
        self.min_rows = min_rows

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterable[Metric]:
        lv = list(self.labels)
        rows = GaugeMetricFamily(
            mn.INPUT_DRIFT_WINDOW_ROWS, METRIC_HELP[mn.INPUT_DRIFT_WINDOW_ROWS], labels=list(mn.MODEL_LABELS)
        )
        rows.add_metric(lv, float(self.inputs.rows))
        yield rows
        if self.inputs.rows < self.min_rows:
            return
        values = self.inputs.psi()
        per = GaugeMetricFamily(
            mn.INPUT_DRIFT_PSI, METRIC_HELP[mn.INPUT_DRIFT_PSI], labels=[*mn.MODEL_LABELS, mn.LABEL_FEATURE]
        )
        for f, v in zip(self.features, values, strict=True):
            per.add_metric([*lv, f], float(v))
        yield per
        mx = GaugeMetricFamily(
            mn.INPUT_DRIFT_PSI_MAX, METRIC_HELP[mn.INPUT_DRIFT_PSI_MAX], labels=list(mn.MODEL_LABELS)
        )
        mx.add_metric(lv, float(values.max()) if len(values) else 0.0)
        yield mx
        if self.scores is not None and self.scores.rows >= self.min_rows:
            sp = GaugeMetricFamily(
                mn.PREDICTION_DRIFT_PSI, METRIC_HELP[mn.PREDICTION_DRIFT_PSI], labels=list(mn.MODEL_LABELS)
            )
            sp.add_metric(lv, float(self.scores.psi()[0]))
            yield sp


class ServingMetrics:
    """All series of one served model version."""

    def __init__(
        self,
        registry: CollectorRegistry,
        model_name: str,
        model_version: str,
        *,
        fmt: str | None = None,
        classes: Sequence[Any] = (),
        features: Sequence[str] = (),
        score_buckets: Sequence[float] = mn.PROBABILITY_SCORE_BUCKETS,
    ) -> None:
        self.registry = registry
        labels = (model_name, model_version)
        self.labels = labels
        requests = Counter(
            _base(mn.REQUESTS_TOTAL),
            METRIC_HELP[mn.REQUESTS_TOTAL],
            [*mn.MODEL_LABELS, mn.LABEL_OUTCOME],
            registry=registry,
        )
        self.req = {o: requests.labels(*labels, o) for o in mn.OUTCOMES}
        self.duration = Histogram(
            mn.REQUEST_DURATION_SECONDS,
            METRIC_HELP[mn.REQUEST_DURATION_SECONDS],
            list(mn.MODEL_LABELS),
            buckets=mn.LATENCY_BUCKETS,
            registry=registry,
        ).labels(*labels)
        self._predictions = Counter(
            _base(mn.PREDICTIONS_TOTAL),
            METRIC_HELP[mn.PREDICTIONS_TOTAL],
            [*mn.MODEL_LABELS, mn.LABEL_CLASS],
            registry=registry,
        )
        self.per_class = {c: self._predictions.labels(*labels, str(c)) for c in classes}
        self._by_str = {str(c): ch for c, ch in self.per_class.items()}
        buckets = sorted({float(b) for b in score_buckets})
        self.score = Histogram(
            mn.PREDICTION_SCORE,
            METRIC_HELP[mn.PREDICTION_SCORE],
            list(mn.MODEL_LABELS),
            buckets=buckets,
            registry=registry,
        ).labels(*labels)
        oor = Counter(
            _base(mn.INPUT_OUT_OF_RANGE_TOTAL),
            METRIC_HELP[mn.INPUT_OUT_OF_RANGE_TOTAL],
            [*mn.MODEL_LABELS, mn.LABEL_FEATURE],
            registry=registry,
        )
        self.out_of_range = [oor.labels(*labels, f) for f in features]
        fb = Counter(
            _base(mn.FEEDBACK_TOTAL),
            METRIC_HELP[mn.FEEDBACK_TOTAL],
            [*mn.MODEL_LABELS, mn.LABEL_CORRECT],
            registry=registry,
        )
        self.feedback = {
            True: fb.labels(*labels, mn.CORRECT_TRUE),
            False: fb.labels(*labels, mn.CORRECT_FALSE),
        }
        info = Gauge(
            mn.MODEL_INFO,
            METRIC_HELP[mn.MODEL_INFO],
            [*mn.MODEL_LABELS, mn.LABEL_FORMAT],
            registry=registry,
            multiprocess_mode="max",  # with several workers: one series, 1 (each worker sets 1)
        )
        if fmt is not None:
            info.labels(*labels, fmt).set(1)

    def request(self, outcome: str, seconds: float) -> None:
        self.req[outcome].inc()
        self.duration.observe(seconds)

    def predictions(self, labels: Sequence[Any], scores: npt.NDArray[np.float64] | Sequence[float]) -> None:
        if self.per_class:
            if len(labels) == 1:
                child = self.per_class.get(labels[0])
                (child or self._predictions.labels(*self.labels, str(labels[0]))).inc()
            else:  # a micro-batch: one inc per class, classes told apart by their label text
                for v, n in Tally(map(str, labels)).items():
                    (self._by_str.get(v) or self._predictions.labels(*self.labels, v)).inc(n)
        observe = self.score.observe
        for s in scores.tolist() if isinstance(scores, np.ndarray) else scores:
            observe(s)

    def out_of_range_counts(self, counts: npt.NDArray[np.int64]) -> None:
        for i in np.flatnonzero(counts):
            self.out_of_range[i].inc(int(counts[i]))


class ShadowMetrics:
    """Agreement of the served model with a reference model (the stable's) on the same rows."""

    def __init__(
        self,
        registry: CollectorRegistry,
        model_name: str,
        model_version: str,
        reference_version: str,
        *,
        classifier: bool,
    ) -> None:
        labels = (model_name, model_version, reference_version)
        self.compared = Counter(
            _base(mn.SHADOW_COMPARED_TOTAL),
            METRIC_HELP[mn.SHADOW_COMPARED_TOTAL],
            list(mn.SHADOW_LABELS),
            registry=registry,
        ).labels(*labels)
        # Only a classifier has labels to agree on: a regressor exports no agreed series at all, so
        # the agreement builtin says so instead of reading 0 agreement.
        self.agreed = (
            Counter(
                _base(mn.SHADOW_AGREED_TOTAL),
                METRIC_HELP[mn.SHADOW_AGREED_TOTAL],
                list(mn.SHADOW_LABELS),
                registry=registry,
            ).labels(*labels)
            if classifier
            else None
        )
        self.difference = Histogram(
            mn.SHADOW_SCORE_DIFFERENCE,
            METRIC_HELP[mn.SHADOW_SCORE_DIFFERENCE],
            list(mn.SHADOW_LABELS),
            buckets=mn.SCORE_DIFFERENCE_BUCKETS,
            registry=registry,
        ).labels(*labels)

    def compare(self, agreed: int, differences: Iterable[float]) -> None:
        observe = self.difference.observe
        rows = 0
        for d in differences:
            observe(d)
            rows += 1
        self.compared.inc(rows)
        if self.agreed is not None:
            self.agreed.inc(agreed)


__all__ += ["psi"]
