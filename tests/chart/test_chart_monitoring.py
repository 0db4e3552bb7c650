"""Monitoring objects: alert rules through promtool (syntax and behaviour), the Grafana dashboard, and the
ServiceMonitor/PodMonitor wiring."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlcanary.operator_metrics import OperatorMetrics
from mlcanary_serving import metric_names

from .helpers import CHART, NAMESPACE, RELEASE, needs_helm, one, render

pytestmark = needs_helm

PROMTOOL = shutil.which("promtool")
DASHBOARD = CHART / "dashboards" / "mlcanary.json"

# The serving pods' metrics the dashboard must show (all defined in mlcanary_serving.metric_names).
SERVING_METRICS = {
    "mlcanary_requests_total",
    "mlcanary_request_duration_seconds",
    "mlcanary_predictions_total",
    "mlcanary_prediction_score",
    "mlcanary_prediction_drift_psi",
    "mlcanary_input_drift_psi",
    "mlcanary_input_drift_psi_max",
}


def promtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None, "promtool is installed by make setup (Debian package prometheus)"
    result = subprocess.run([PROMTOOL, *args], capture_output=True, text=True, timeout=120, cwd=cwd)
    assert result.returncode == 0, f"promtool {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def rule_groups() -> list[dict[str, Any]]:
    rule = one(render(sets=("monitoring.prometheusRule.enabled=true",)), "PrometheusRule")
    groups: list[dict[str, Any]] = rule["spec"]["groups"]
    return groups


def test_promtool_check_rules(rule_groups: list[dict[str, Any]], tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": rule_groups}))
    result = promtool("check", "rules", str(path))
    assert "SUCCESS: 4 rules found" in result.stdout


def test_promtool_check_rules_for_every_ci_values_file(
    rendered: dict[str, list[dict[str, Any]]], tmp_path: Path
) -> None:
    for stem, objects in rendered.items():
        for rule in [o for o in objects if o["kind"] == "PrometheusRule"]:
            path = tmp_path / f"{stem}.yaml"
            path.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
            promtool("check", "rules", str(path))


def test_alerts_cover_rollback_analysis_errors_and_stuck_rollouts(rule_groups: list[dict[str, Any]]) -> None:
    alerts = {r["alert"] for g in rule_groups for r in g["rules"]}
    assert {"MLCanaryRollback", "MLCanaryAnalysisErroring", "MLCanaryRolloutStuck"} <= alerts
    operator_names = _operator_metric_names()
    for group in rule_groups:
        for rule in group["rules"]:
            for name in re.findall(r"\bmlcanary_[a-z_]+", rule["expr"]):
                assert name in operator_names, f"{rule['alert']} uses unknown metric {name}"


def _expanded(annotation: str, labels: dict[str, str]) -> str:
    return re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: labels[m.group(1)], annotation)


def _alert(groups: list[dict[str, Any]], name: str, labels: dict[str, str]) -> dict[str, Any]:
    rule = next(r for g in groups for r in g["rules"] if r.get("alert") == name)
    all_labels = {**labels, **rule.get("labels", {})}
    return {
        "exp_labels": all_labels,
        "exp_annotations": {k: _expanded(v, all_labels) for k, v in rule.get("annotations", {}).items()},
    }


def test_alerts_fire_when_they_should_and_only_then(
    rule_groups: list[dict[str, Any]], tmp_path: Path
) -> None:
    """promtool test rules: each alert against synthetic operator series (1m resolution)."""
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": rule_groups}))
    md = {"namespace": "ml", "name": "fraud"}
    up = f'up{{job="{RELEASE}-mlcanary-metrics", namespace="{NAMESPACE}"}}'
    phase = 'mlcanary_operator_phase{{namespace="ml", name="fraud", phase="{}"}}'
    tests = [
        {  # a rollback: the phase gauge says RolledBack
            "interval": "1m",
            "input_series": [
                {"series": phase.format("RolledBack"), "values": "0 0 1 1 1"},
                {"series": up, "values": "1x20"},
            ],
            "alert_rule_test": [
                {"eval_time": "1m", "alertname": "MLCanaryRollback", "exp_alerts": []},
                {
                    "eval_time": "3m",
                    "alertname": "MLCanaryRollback",
                    "exp_alerts": [_alert(rule_groups, "MLCanaryRollback", md)],
                },
                {"eval_time": "3m", "alertname": "MLCanaryOperatorDown", "exp_alerts": []},
            ],
        },
        {  # analysis erroring on every round for 20 minutes
            "interval": "1m",
            "input_series": [
                {
                    "series": 'mlcanary_operator_analysis_measurements_total{namespace="ml", name="fraud", metric="error-rate", verdict="Error"}',
                    "values": "0+1x30",
                },
                {"series": up, "values": "1x30"},
            ],
            "alert_rule_test": [
                {"eval_time": "6m", "alertname": "MLCanaryAnalysisErroring", "exp_alerts": []},
                {
                    "eval_time": "20m",
                    "alertname": "MLCanaryAnalysisErroring",
                    "exp_alerts": [
                        _alert(rule_groups, "MLCanaryAnalysisErroring", {**md, "metric": "error-rate"})
                    ],
                },
            ],
        },
        {  # stuck at 25% for two hours, while another rollout keeps moving and a paused one waits
            "interval": "1m",
            "input_series": [
                {"series": phase.format("Progressing"), "values": "1x130"},
                {
                    "series": 'mlcanary_operator_canary_weight_percent{namespace="ml", name="fraud"}',
                    "values": "25x130",
                },
                {
                    "series": 'mlcanary_operator_phase{namespace="ml", name="moving", phase="Progressing"}',
                    "values": "1x130",
                },
                {
                    "series": 'mlcanary_operator_canary_weight_percent{namespace="ml", name="moving"}',
                    "values": "5+1x130",
                },
                {
                    "series": 'mlcanary_operator_phase{namespace="ml", name="held", phase="Paused"}',
                    "values": "1x130",
                },
                {
                    "series": 'mlcanary_operator_canary_weight_percent{namespace="ml", name="held"}',
                    "values": "20x130",
                },
                {"series": up, "values": "1x130"},
            ],
            "alert_rule_test": [
                # an hour has not passed yet: the series are too young to call anything stuck
                {"eval_time": "50m", "alertname": "MLCanaryRolloutStuck", "exp_alerts": []},
                {"eval_time": "63m", "alertname": "MLCanaryRolloutStuck", "exp_alerts": []},
                {
                    "eval_time": "2h",
                    "alertname": "MLCanaryRolloutStuck",
                    "exp_alerts": [_alert(rule_groups, "MLCanaryRolloutStuck", md)],
                },
            ],
        },
        {  # healthy for hours at weight 0, then a canary Preparing (still at weight 0) from 150m on
            "interval": "1m",
            "input_series": [
                {"series": phase.format("Healthy"), "values": "1x150 0x110"},
                {"series": phase.format("Preparing"), "values": "0x150 1x110"},
                {
                    "series": 'mlcanary_operator_canary_weight_percent{namespace="ml", name="fraud"}',
                    "values": "0x260",
                },
                {"series": up, "values": "1x260"},
            ],
            "alert_rule_test": [
                {"eval_time": "3h", "alertname": "MLCanaryRolloutStuck", "exp_alerts": []},
                {
                    "eval_time": "4h20m",
                    "alertname": "MLCanaryRolloutStuck",
                    "exp_alerts": [_alert(rule_groups, "MLCanaryRolloutStuck", md)],
                },
            ],
        },
        {  # the operator is not scraped at all
            "interval": "1m",
            "input_series": [{"series": 'unrelated{job="x"}', "values": "1x20"}],
            "alert_rule_test": [
                {"eval_time": "5m", "alertname": "MLCanaryOperatorDown", "exp_alerts": []},
                {
                    "eval_time": "15m",
                    "alertname": "MLCanaryOperatorDown",
                    "exp_alerts": [_alert(rule_groups, "MLCanaryOperatorDown", {})],
                },
            ],
        },
    ]
    (tmp_path / "tests.yaml").write_text(
        yaml.safe_dump({"rule_files": ["rules.yaml"], "evaluation_interval": "1m", "tests": tests})
    )
    promtool("test", "rules", "tests.yaml", cwd=tmp_path)


# ------------------------------------------------------------------------------------------ dashboard


def _operator_metric_names() -> set[str]:
    registry = OperatorMetrics().registry
    names: set[str] = set()
    for family in registry.collect():
        base = family.name + ("_total" if family.type == "counter" else "")
        names.add(base)
        if family.type == "histogram":
            names.update(base + suffix for suffix in ("_bucket", "_sum", "_count"))
    return names


def _dashboard() -> dict[str, Any]:
    dashboard: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return dashboard


def _panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in dashboard["panels"] if p["type"] != "row"]


def _exprs(dashboard: dict[str, Any]) -> list[str]:
    return [t["expr"] for p in _panels(dashboard) for t in p["targets"]]


def test_required_serving_metrics_exist() -> None:
    assert set(metric_names.METRICS) >= SERVING_METRICS


def test_dashboard_json_parses_and_is_importable() -> None:
    dashboard = _dashboard()
    assert dashboard["uid"] and dashboard["title"]
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert {"datasource", "namespace", "modeldeployment", "model"} <= variables
    for panel in _panels(dashboard):
        assert panel["targets"], panel["title"]
        assert panel["datasource"]["uid"] == "${datasource}"


def test_dashboard_shows_weights_verdicts_error_rate_latency_and_drift_per_version() -> None:
    dashboard = _dashboard()
    exprs = "\n".join(_exprs(dashboard))
    used = set(re.findall(r"\bmlcanary_[a-z_]+", exprs))
    histogram_parts = {n.removesuffix(s) for n in used for s in ("_bucket",) if n.endswith(s)}
    served = {series for name in metric_names.METRICS for series in metric_names.exposition_series(name)}
    known = _operator_metric_names() | served
    assert used <= known, f"unknown metrics: {used - known}"
    assert used | histogram_parts >= SERVING_METRICS
    for name in (
        "mlcanary_operator_canary_weight_percent",
        "mlcanary_operator_analysis_measurements_total",
        "mlcanary_operator_phase",
    ):
        assert name in used
    titles = {p["title"].lower() for p in _panels(dashboard)}
    for word in ("weight", "verdict", "error rate", "latency", "drift"):
        assert any(word in t for t in titles), word
    operator_metrics = _operator_metric_names()
    per_version = [
        e for e in _exprs(dashboard) if not set(re.findall(r"\bmlcanary_[a-z_]+", e)) & operator_metrics
    ]
    assert per_version and all("model_version" in e for e in per_version)


def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    """Every panel query, with Grafana's variables filled in, parses (as a recording rule for promtool)."""
    fills = {
        "$__rate_interval": "5m",
        "$__range": "3h",
        "$namespace": ".*",
        "$modeldeployment": ".*",
        "$model": ".*",
    }
    rules = []
    for i, expr in enumerate(_exprs(_dashboard())):
        for variable, value in sorted(fills.items(), key=lambda kv: -len(kv[0])):
            expr = expr.replace(variable, value)
        assert "$" not in expr, expr
        rules.append({"record": f"dashboard:query_{i}", "expr": expr})
    path = tmp_path / "dashboard-queries.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    promtool("check", "rules", str(path))


def test_dashboard_configmap_carries_the_file_for_the_grafana_sidecar(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    configmap = one(rendered["monitoring-values"], "ConfigMap")
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert configmap["metadata"]["namespace"] == "monitoring"
    (content,) = configmap["data"].values()
    assert json.loads(content) == _dashboard()


# ---------------------------------------------------------------------------------- scrape objects


def test_service_monitor_scrapes_the_metrics_service_and_keeps_operator_labels(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    objects = rendered["monitoring-values"]
    monitor = one(objects, "ServiceMonitor")
    service = next(
        o for o in objects if o["kind"] == "Service" and o["metadata"]["name"].endswith("-metrics")
    )
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] == service["spec"]["ports"][0]["name"]
    assert endpoint["honorLabels"] is True
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"


def test_operator_down_alert_matches_the_scrape_job(rule_groups: list[dict[str, Any]]) -> None:
    down = next(r for g in rule_groups for r in g["rules"] if r["alert"] == "MLCanaryOperatorDown")
    # prometheus-operator names a ServiceMonitor's job after the Service.
    assert f'job="{RELEASE}-mlcanary-metrics"' in down["expr"]


def test_monitoring_objects_are_off_by_default(rendered: dict[str, list[dict[str, Any]]]) -> None:
    kinds = {o["kind"] for o in rendered["default-values"]}
    assert not kinds & {"ServiceMonitor", "PodMonitor", "PrometheusRule", "ConfigMap"}
