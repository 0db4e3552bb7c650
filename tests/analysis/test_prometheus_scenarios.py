"""The provider against a real Prometheus over deterministic backfilled histories.

Every built-in metric and every verdict class, each from a scenario in ``scenarios.py``: a good
canary, a canary answering HTTP 200 with degenerate predictions, drifted inputs, a latency
regression, worse accuracy, no labels, an error spike at 5% traffic (Inconclusive on the thin
phase, Failed once enough requests arrive), hostile version strings; and custom queries returning
every response shape Prometheus has.
"""

from __future__ import annotations

import asyncio
import math
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlcanary.analysis import queries as q
from mlcanary.analysis.prometheus import MetricResult, PrometheusProvider
from mlcanary.analysis.provider import AnalysisContext, run_round
from mlcanary.models import Analysis, BuiltinMetric, Metric, Verdict

from .promkit import RunningPrometheus
from .scenarios import (
    HOSTILE_CANARY,
    HOSTILE_STABLE,
    P99_FAST,
    P99_SLOW,
    PSI_DRIFTED,
    T_FULL,
    T_THIN,
    WINDOW,
)

pytestmark = pytest.mark.integration

S, F, INC, ERR = Verdict.SUCCESSFUL, Verdict.FAILED, Verdict.INCONCLUSIVE, Verdict.ERROR


def at(ts: int) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def context(model: str, version: str = "v2", stable: str = "v1") -> AnalysisContext:
    return AnalysisContext(
        name=model,
        namespace="default",
        model_name=model,
        version=version,
        stable_version=stable,
        interval=WINDOW,
        canary_weight=5,
    )


def measure(
    prom: RunningPrometheus,
    model: str,
    metric: Metric,
    when: int = T_FULL,
    version: str = "v2",
    stable: str = "v1",
) -> MetricResult:
    # The scenario history has no namespace label: custom queries run unscoped here (scoping is
    # tested on two namespaces' series in test_prometheus_tenancy.py).
    provider = PrometheusProvider(prom.url, at=at(when), timeout_seconds=10, custom_queries="unscoped")
    return asyncio.run(provider.measure_detailed(metric, context(model, version, stable), at(when)))


def m(**kw: Any) -> Metric:
    kw.setdefault("name", "m")
    return Metric(**kw)


ERROR_RATE = m(builtin=BuiltinMetric.ERROR_RATE, compare_to="stable", max=0.05)
LATENCY = m(builtin=BuiltinMetric.LATENCY_P99, max=1.0, compare_to="stable", relative_tolerance=0.25)
INPUT_DRIFT = m(builtin=BuiltinMetric.INPUT_DRIFT, max=0.25)
PREDICTION_DRIFT = m(builtin=BuiltinMetric.PREDICTION_DRIFT, max=0.2)
ACCURACY = m(builtin=BuiltinMetric.ACCURACY, min=0.8, compare_to="stable")


@pytest.mark.parametrize(
    ("model", "metric", "when", "verdict", "value", "sample"),
    [
        # errorRate: two-proportion test on request counts
        ("good", ERROR_RATE, T_FULL, S, 0.01, 600),
        ("spike", ERROR_RATE, T_THIN, INC, 0.2, 6),  # 6 canary requests at 5% traffic
        ("spike", ERROR_RATE, T_FULL, F, 0.1, 600),  # the same spike once 600 requests arrived
        ("ghost", ERROR_RATE, T_FULL, INC, None, 0),  # no series at all
        # latencyP99
        ("good", LATENCY, T_FULL, S, P99_FAST, 600),
        ("slow", LATENCY, T_FULL, F, P99_SLOW, 600),
        ("spike", LATENCY, T_THIN, INC, None, 6),
        # inputDrift: max per-feature PSI against the training reference
        ("good", INPUT_DRIFT, T_FULL, S, 0.04, 1000),
        ("drifted", INPUT_DRIFT, T_FULL, F, max(PSI_DRIFTED.values()), 1000),
        ("ghost", INPUT_DRIFT, T_FULL, INC, None, 0),
        # predictionDrift: HTTP 200 but degenerate predictions
        ("good", PREDICTION_DRIFT, T_FULL, S, 0.0, 600),
        ("degenerate", PREDICTION_DRIFT, T_FULL, F, None, 600),
        ("spike", PREDICTION_DRIFT, T_THIN, INC, None, 6),
        # accuracy from feedback
        ("good", ACCURACY, T_FULL, S, 0.9, 150),
        ("badacc", ACCURACY, T_FULL, F, 0.7, 150),
        ("nolabels", ACCURACY, T_FULL, INC, None, 0),
    ],
)
def test_builtin_metric_verdicts(
    scenario_prometheus: RunningPrometheus,
    model: str,
    metric: Metric,
    when: int,
    verdict: Verdict,
    value: float | None,
    sample: int,
) -> None:
    result = measure(scenario_prometheus, model, metric, when)
    out = result.measurement
    assert out.verdict == verdict, (out.message, [r.describe() for r in result.results])
    if value is not None:
        assert out.value == pytest.approx(value, abs=1e-6)
    assert out.sample_size == sample
    assert all(r.error is None for r in result.results)


def test_degenerate_predictions_are_caught_while_every_service_metric_looks_fine(
    scenario_prometheus: RunningPrometheus,
) -> None:
    for healthy in (ERROR_RATE, LATENCY, INPUT_DRIFT):
        assert measure(scenario_prometheus, "degenerate", healthy).measurement.verdict == S
    drift = measure(scenario_prometheus, "degenerate", PREDICTION_DRIFT).measurement
    assert drift.verdict == F and drift.value is not None and drift.value > 1
    assert "score histogram PSI" in (drift.message or "") and "class shares PSI" in (drift.message or "")


def test_thin_spike_stays_inconclusive_even_with_a_low_min_requests(
    scenario_prometheus: RunningPrometheus,
) -> None:
    metric = m(builtin=BuiltinMetric.ERROR_RATE, compare_to="stable", min_requests=5)
    out = measure(scenario_prometheus, "spike", metric, T_THIN).measurement
    assert out.verdict == INC and "too few events" in (out.message or "")
    out = measure(scenario_prometheus, "spike", metric, T_FULL).measurement
    assert out.verdict == F and "z=" in (out.message or "")


def test_hostile_versions_select_exactly_their_own_series(scenario_prometheus: RunningPrometheus) -> None:
    out = measure(
        scenario_prometheus, "hostile", ERROR_RATE, version=HOSTILE_CANARY, stable=HOSTILE_STABLE
    ).measurement
    assert out.value == pytest.approx(0.05) and out.stable_value == pytest.approx(0.01)
    assert out.sample_size == 600


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=st.text(st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=30))
def test_prometheus_parses_every_escaped_value_back_to_itself(
    scenario_prometheus: RunningPrometheus, value: str
) -> None:
    """absent() copies the equality matchers of its selector into its result's labels, so Prometheus
    itself shows which string it read from each rendered literal."""
    selector = q.selector(
        q.QueryContext(
            name="n", namespace="ns", model_name=value, version=value, stable_version="s", interval="1m"
        ),
        "canary",
    )
    response = httpx.get(
        f"{scenario_prometheus.url}/api/v1/query",
        params={"query": f"absent(nonexistent_metric{selector})", "time": str(T_FULL)},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    [series] = response.json()["data"]["result"]
    assert series["metric"] == {"model_name": value, "model_version": value}


# --------------------------------------------------------------------------- custom queries

RATIO = (
    'sum(increase(mlcanary_requests_total{model_name="{{name}}",model_version="{{version}}",'
    'outcome="server_error"}[{{interval}}])) / sum(increase(mlcanary_requests_total{model_name="{{name}}",'
    'model_version="{{version}}"}[{{interval}}]))'
)


@pytest.mark.parametrize(
    ("query", "model", "kw", "verdict", "text"),
    [
        (RATIO, "good", {"max": 0.05, "compare_to": "stable", "tolerance": 0.005}, S, "vs stable 0.01"),
        (RATIO, "spike", {"max": 0.05, "compare_to": "stable", "tolerance": 0.005}, F, "above max"),
        (RATIO, "good", {"max": 0.05, "min_requests": 1000}, INC, "minRequests 1000"),
        ("scalar(vector(0.5))", "good", {"max": 1}, S, "within bounds"),
        ("vector(0) / vector(0)", "good", {"max": 1}, INC, "NaN"),
        ("vector(1) / vector(0)", "good", {"max": 1}, INC, "+Inf"),
        ("vector(-1) / vector(0)", "good", {"max": 1}, INC, "-Inf"),
        ('sum(mlcanary_requests_total{model_name="nobody"})', "good", {"max": 1}, INC, "empty"),
        (
            'increase(mlcanary_requests_total{model_name="{{name}}",model_version="{{version}}"}[{{interval}}])',
            "good",
            {"max": 1},
            ERR,
            "3 series",
        ),
        ('mlcanary_requests_total{model_name="{{name}}"}[{{interval}}]', "good", {"max": 1}, ERR, "matrix"),
        # refused by the operator's own parser, before Prometheus is asked
        ("sum(rate(mlcanary_requests_total[5m]", "good", {"max": 1}, ERR, "not valid PromQL"),
        ('sum(rate(x{a="{{version}}"}[5m])) @ "now"', "good", {"max": 1}, ERR, "not valid PromQL"),
        # PromQL that the parser knows (Prometheus 3) but this Prometheus (2.42) refuses
        (
            'sum(limitk(1, mlcanary_requests_total{model_name="{{name}}"}))',
            "good",
            {"max": 1},
            ERR,
            "HTTP Status Code 400: bad_data",
        ),
    ],
)
def test_custom_query_response_shapes(
    scenario_prometheus: RunningPrometheus,
    query: str,
    model: str,
    kw: dict[str, Any],
    verdict: Verdict,
    text: str,
) -> None:
    result = measure(scenario_prometheus, model, m(query=query, **kw))
    assert result.measurement.verdict == verdict, result.measurement.message
    assert text in (result.measurement.message or "")


def test_custom_query_renders_stable_with_the_stable_version(scenario_prometheus: RunningPrometheus) -> None:
    result = measure(scenario_prometheus, "good", m(query=RATIO, max=0.05, compare_to="stable"))
    stable = next(r for r in result.results if r.spec.role == "stable")
    assert 'model_version="v1"' in stable.spec.promql
    assert result.measurement.stable_value == pytest.approx(0.01)


def test_a_round_records_dry_run_metrics_without_acting_on_them(
    scenario_prometheus: RunningPrometheus,
) -> None:
    analysis = Analysis(
        metrics=[
            m(name="errors", builtin=BuiltinMetric.ERROR_RATE, max=0.05),
            m(name="predictions", builtin=BuiltinMetric.PREDICTION_DRIFT, max=0.2, dry_run=True),
        ]
    )
    provider = PrometheusProvider(scenario_prometheus.url, at=at(T_FULL))
    round_ = asyncio.run(run_round(provider, analysis, context("degenerate"), at(T_FULL)))
    by_name = {x.metric: x for x in round_.measurements}
    assert by_name["predictions"].verdict == F and by_name["predictions"].dry_run is True
    assert round_.verdict == S
    assert all(x.time == at(T_FULL) for x in round_.measurements)
    assert not math.isnan(by_name["errors"].value or 0.0)
