"""The operator's own Prometheus metrics (served on MLCANARY_METRICS_PORT).

Collectors live on an injectable registry, so tests can read them without global state.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from mlcanary import engine
from mlcanary.models import Measurement, ModelDeploymentStatus, Phase

_OUTCOME_EVENTS = {"Promoted": "promoted", "RolledBack": "rolled_back", "Superseded": "superseded"}


class OperatorMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        labels = ["namespace", "name"]
        self.rollouts = Counter(
            "mlcanary_operator_rollouts_total",
            "Finished rollouts by outcome.",
            [*labels, "outcome"],
            registry=self.registry,
        )
        self.canary_weight = Gauge(
            "mlcanary_operator_canary_weight_percent",
            "Canary traffic weight.",
            labels,
            registry=self.registry,
        )
        self.phase = Gauge(
            "mlcanary_operator_phase",
            "1 for the current phase of each ModelDeployment.",
            [*labels, "phase"],
            registry=self.registry,
        )
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
        self.tick_seconds = Histogram(
            "mlcanary_operator_tick_duration_seconds",
            "Duration of one reconciliation tick.",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=self.registry,
        )
        self.status_conflicts = Counter(
            "mlcanary_operator_status_conflicts_total",
            "Status writes retried after HTTP 409.",
            registry=self.registry,
        )

    def record_round(self, namespace: str, name: str, measurements: list[Measurement]) -> None:
        for m in measurements:
            self.measurements.labels(namespace, name, m.metric, m.verdict.value).inc()
            if m.value is not None:
                self.measurement_value.labels(namespace, name, m.metric).set(m.value)
            if m.stable_value is not None:
                self.stable_value.labels(namespace, name, m.metric).set(m.stable_value)
            if m.sample_size is not None:
                self.sample_size.labels(namespace, name, m.metric).set(m.sample_size)

    def record_status(
        self, namespace: str, name: str, status: ModelDeploymentStatus, actions: list[engine.Action]
    ) -> None:
        self.canary_weight.labels(namespace, name).set(status.canary_weight)
        for phase in Phase:
            self.phase.labels(namespace, name, phase.value).set(1 if status.phase == phase else 0)
        for action in actions:
            if isinstance(action, engine.EmitEvent) and action.reason in _OUTCOME_EVENTS:
                self.rollouts.labels(namespace, name, _OUTCOME_EVENTS[action.reason]).inc()
