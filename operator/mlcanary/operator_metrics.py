"""The operator's own Prometheus metrics (served on MLCANARY_METRICS_PORT).

Collectors live on an injectable registry, so tests can read them without global state. Series
labelled by a ModelDeployment are removed when it is deleted (:meth:`OperatorMetrics.forget`): an
alert on a rollout stuck at some phase must never fire for an object that no longer exists.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from mlcanary import engine
from mlcanary.models import Measurement, ModelDeploymentStatus, Phase

RECONCILE_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.075, 0.1, 0.125, 0.15, 0.2, 0.25, 0.5, 1, 2.5, 5, 10, 30
)  # fmt: skip
_OUTCOME_EVENTS = {"Promoted": "promoted", "RolledBack": "rolled_back", "Superseded": "superseded"}


class ObjectStates(Collector):
    """Phase and weights of every ModelDeployment, rendered at scrape time from one small record per
    object (a labelled Gauge child per phase would cost about a kilobyte each: 8,000 of them for
    1,000 objects). Every phase is exported, the current one as 1 and the others as 0, so alerts
    over time windows see a phase end."""

    def __init__(self) -> None:
        self.states: dict[tuple[str, str], tuple[Phase | None, int, float]] = {}

    def collect(self) -> Iterator[GaugeMetricFamily]:
        labels = ["namespace", "name"]
        phase = GaugeMetricFamily(
            "mlcanary_operator_phase",
            "1 for the current phase of each ModelDeployment.",
            labels=[*labels, "phase"],
        )
        weight = GaugeMetricFamily(
            "mlcanary_operator_canary_weight_percent", "Canary traffic weight.", labels=labels
        )
        served = GaugeMetricFamily(
            "mlcanary_operator_canary_served_percent",
            "Share of traffic the canary actually receives, as the router reads it back.",
            labels=labels,
        )
        for (namespace, name), (current, canary_weight, served_weight) in sorted(self.states.items()):
            for each in Phase:
                phase.add_metric([namespace, name, each.value], 1 if current == each else 0)
            weight.add_metric([namespace, name], canary_weight)
            served.add_metric([namespace, name], served_weight)
        yield phase
        yield weight
        yield served


class OperatorMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        # (namespace, name) -> the labelled series set for it, so deletion can remove every one.
        self._series: dict[tuple[str, str], set[tuple[Any, tuple[str, ...]]]] = {}
        labels = ["namespace", "name"]
        self.rollouts = Counter(
            "mlcanary_operator_rollouts_total",
            "Finished rollouts by outcome.",
            [*labels, "outcome"],
            registry=self.registry,
        )
        self.states = ObjectStates()
        self.registry.register(self.states)
        self.measurements = Counter(
            "mlcanary_operator_analysis_measurements_total",
            "Metric checks by verdict.",
            [*labels, "metric", "verdict"],
            registry=self.registry,
        )
        self.measurement_value = Gauge(
            "mlcanary_operator_analysis_value",
            "Last measured canary value of each metric.",
            [*labels, "metric"],
            registry=self.registry,
        )
        self.stable_value = Gauge(
            "mlcanary_operator_analysis_stable_value",
            "Last measured stable value of each compared metric.",
            [*labels, "metric"],
            registry=self.registry,
        )
        self.sample_size = Gauge(
            "mlcanary_operator_analysis_sample_size",
            "Canary requests behind the last measurement of each metric.",
            [*labels, "metric"],
            registry=self.registry,
        )
        # Observed once per tick: observe, decide, status write and apply. Analysis rounds run
        # beside the tick, so no Prometheus wait is in it. Fine buckets up to 100 ms, the target.
        self.reconcile_seconds = Histogram(
            "mlcanary_reconcile_duration_seconds",
            "Duration of one reconciliation tick (without waiting on Prometheus: rounds run beside).",
            buckets=RECONCILE_BUCKETS,
            registry=self.registry,
        )
        self.tick_failures = Counter(
            "mlcanary_operator_tick_failures_total",
            "Ticks that failed (an API error, a bug); each is retried after the tick interval.",
            registry=self.registry,
        )
        self.status_conflicts = Counter(
            "mlcanary_operator_status_conflicts_total",
            "Status writes retried after HTTP 409.",
            registry=self.registry,
        )
        self.api_requests = Counter(
            "mlcanary_operator_api_requests_total",
            "Requests to the Kubernetes API by verb and HTTP status (0: no answer); WATCH counts streams.",
            ["verb", "code"],
            registry=self.registry,
        )
        self.notifications = Counter(
            "mlcanary_notifications_total",
            "Notification deliveries by provider and result: sent, failed (after every retry) or "
            "dropped (the queue was full).",
            ["provider", "result"],
            registry=self.registry,
        )

    def count_notification(self, provider: str, result: str) -> None:
        self.notifications.labels(provider, result).inc()

    def count_request(self, verb: str, path: str, status: int) -> None:
        self.api_requests.labels(verb, str(status)).inc()

    def _child(self, metric: Any, namespace: str, name: str, *extra: str) -> Any:
        values = (namespace, name, *extra)
        self._series.setdefault((namespace, name), set()).add((metric, values))
        return metric.labels(*values)

    def forget(self, namespace: str, name: str) -> None:
        """Remove every series of the ModelDeployment ``namespace/name``."""
        self.states.states.pop((namespace, name), None)
        for metric, values in self._series.pop((namespace, name), set()):
            with contextlib.suppress(KeyError):
                metric.remove(*values)

    def record_round(self, namespace: str, name: str, measurements: list[Measurement]) -> None:
        for m in measurements:
            self._child(self.measurements, namespace, name, m.metric, m.verdict.value).inc()
            if m.value is not None:
                self._child(self.measurement_value, namespace, name, m.metric).set(m.value)
            if m.stable_value is not None:
                self._child(self.stable_value, namespace, name, m.metric).set(m.stable_value)
            if m.sample_size is not None:
                self._child(self.sample_size, namespace, name, m.metric).set(m.sample_size)

    def record_status(
        self, namespace: str, name: str, status: ModelDeploymentStatus, actions: list[engine.Action]
    ) -> None:
        self.states.states[(namespace, name)] = (
            status.phase,
            status.canary_weight,
            status.served_weight or 0.0,
        )
        for action in actions:
            if isinstance(action, engine.EmitEvent) and action.reason in _OUTCOME_EVENTS:
                self._child(self.rollouts, namespace, name, _OUTCOME_EVENTS[action.reason]).inc()
