"""The operator's own metrics reflect status and measurements (on an injected registry)."""

from __future__ import annotations

from datetime import UTC, datetime

from mlcanary.engine import EmitEvent
from mlcanary.models import Measurement, ModelDeploymentStatus, Phase, Verdict
from mlcanary.operator_metrics import OperatorMetrics

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def value(metrics: OperatorMetrics, metric_name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(metric_name, labels)


def test_round_records_value_stable_value_sample_size_and_verdict_counts() -> None:
    metrics = OperatorMetrics()
    measured = Measurement(
        metric="error-rate", verdict=Verdict.FAILED, value=0.2, stable_value=0.01, sample_size=600, time=NOW
    )
    metrics.record_round("ml", "fraud", [measured])
    metrics.record_round("ml", "fraud", [measured])
    labels = {"namespace": "ml", "name": "fraud", "metric": "error-rate"}
    assert value(metrics, "mlcanary_operator_analysis_value", **labels) == 0.2
    assert value(metrics, "mlcanary_operator_analysis_stable_value", **labels) == 0.01
    assert value(metrics, "mlcanary_operator_analysis_sample_size", **labels) == 600
    assert value(metrics, "mlcanary_operator_analysis_measurements_total", **labels, verdict="Failed") == 2


def test_status_sets_weight_phase_and_counts_outcomes() -> None:
    metrics = OperatorMetrics()
    status = ModelDeploymentStatus(phase=Phase.ROLLED_BACK, canary_weight=0)
    metrics.record_status("ml", "fraud", status, [EmitEvent("Warning", "RolledBack", "bad")])
    assert value(metrics, "mlcanary_operator_phase", namespace="ml", name="fraud", phase="RolledBack") == 1
    assert value(metrics, "mlcanary_operator_phase", namespace="ml", name="fraud", phase="Healthy") == 0
    assert (
        value(
            metrics, "mlcanary_operator_rollouts_total", namespace="ml", name="fraud", outcome="rolled_back"
        )
        == 1
    )
