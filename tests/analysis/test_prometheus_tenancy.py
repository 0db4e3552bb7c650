"""Enforced namespace scoping against a real Prometheus holding two namespaces' series.

team-a and team-b serve the same model name and versions; team-b's canary fails half its requests and
team-b has a series of its own (``payments_total``). A scoped query from team-a must not see any of
team-b's series, whatever it asks for.
"""

from __future__ import annotations

import asyncio
import io
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
import yaml

from mlcanary.analysis import promql
from mlcanary.analysis.dryrun import run_analyze
from mlcanary.analysis.prometheus import PrometheusProvider
from mlcanary.analysis.provider import AnalysisContext
from mlcanary.models import BuiltinMetric, Measurement, Metric, Verdict
from mlcanary.settings import CustomQueryMode

from .promkit import RunningPrometheus
from .tenants import CANARY, MODEL, REQUESTS_IN_WINDOW, STABLE, T_END, TEAM_A, TEAM_B, WINDOW

pytestmark = pytest.mark.integration

WHEN = datetime.fromtimestamp(T_END, UTC)


def context(namespace: str) -> AnalysisContext:
    return AnalysisContext(
        name=MODEL,
        namespace=namespace,
        model_name=MODEL,
        version=CANARY,
        stable_version=STABLE,
        interval=WINDOW,
        canary_weight=5,
    )


def measure(
    server: RunningPrometheus,
    metric: Metric,
    namespace: str,
    *,
    label: str | None = "namespace",
    custom_queries: CustomQueryMode = "scoped",
) -> Measurement:
    provider = PrometheusProvider(server.url, at=WHEN, namespace_label=label, custom_queries=custom_queries)
    return asyncio.run(provider.measure(metric, context(namespace), WHEN))


COUNT = Metric(name="series", query="count(mlcanary_requests_total)", max=1000)


def test_unscoped_custom_query_counts_every_namespace(tenant_prometheus: RunningPrometheus) -> None:
    """The issue, reproduced: allowed only when the admin chose unscoped queries."""
    out = measure(tenant_prometheus, COUNT, TEAM_A, label=None, custom_queries="unscoped")
    assert out.value == 12  # 2 namespaces x 2 versions x 3 outcomes
    refused = measure(tenant_prometheus, COUNT, TEAM_A, label=None)  # the default policy
    assert refused.verdict == Verdict.ERROR and "custom queries are refused" in (refused.message or "")


def test_scoped_custom_query_sees_only_its_namespace(tenant_prometheus: RunningPrometheus) -> None:
    assert measure(tenant_prometheus, COUNT, TEAM_A).value == 6
    assert measure(tenant_prometheus, COUNT, TEAM_B).value == 6
    payments = Metric(name="payments", query=f"sum(increase(payments_total[{WINDOW}]))", max=1e9)
    from_a = measure(tenant_prometheus, payments, TEAM_A)
    assert from_a.verdict == Verdict.INCONCLUSIVE and from_a.value is None  # team-b's series is invisible
    assert measure(tenant_prometheus, payments, TEAM_B).value == pytest.approx(900)
    # Every way of naming the other namespace is refused before Prometheus is asked.
    for query in ('sum(payments_total{namespace="team-b"})', 'sum(payments_total{namespace=~"team-.*"})'):
        out = measure(tenant_prometheus, Metric(name="p", query=query, max=1), TEAM_A)
        assert out.verdict == Verdict.ERROR and "may only read their own namespace" in (out.message or "")


def test_builtin_queries_are_scoped_the_same_way(tenant_prometheus: RunningPrometheus) -> None:
    errors = Metric(name="errors", builtin=BuiltinMetric.ERROR_RATE, max=0.05)
    team_a = measure(tenant_prometheus, errors, TEAM_A)
    assert team_a.verdict == Verdict.SUCCESSFUL and team_a.value == pytest.approx(0.005)
    assert team_a.sample_size == pytest.approx(REQUESTS_IN_WINDOW)
    assert measure(tenant_prometheus, errors, TEAM_B).value == pytest.approx(0.5)
    # Without scoping, team-a would be judged on both namespaces' canaries (and rolled back).
    mixed = measure(tenant_prometheus, errors, TEAM_A, label=None)
    assert mixed.verdict == Verdict.FAILED and mixed.value == pytest.approx((0.005 + 0.5) / 2)


def test_a_hostile_namespace_value_cannot_widen_the_query(tenant_prometheus: RunningPrometheus) -> None:
    hostile = 'team-a"} or vector(1) or x{a="'
    out = measure(tenant_prometheus, COUNT, hostile)
    assert out.verdict == Verdict.INCONCLUSIVE and out.value is None  # parsed by Prometheus, matched nothing


def query(server: RunningPrometheus, text: str) -> list[tuple[tuple[tuple[str, str], ...], str]]:
    answer = httpx.get(f"{server.url}/api/v1/query", params={"query": text, "time": str(T_END)}, timeout=10)
    assert answer.status_code == 200, (text, answer.text)
    data = answer.json()["data"]
    if data["resultType"] == "scalar":
        return [((), data["result"][1])]
    return sorted((tuple(sorted(r["metric"].items())), r["value"][1]) for r in data["result"])


PRINTED = [
    "count(mlcanary_requests_total)",
    'sum by (namespace, outcome) (increase(mlcanary_requests_total{outcome!~"client.*"}[5m]))',
    'sum by (namespace) (rate(mlcanary_requests_total{outcome="server_error"}[5m])) / on (namespace) '
    "group_left () sum by (namespace) (rate(mlcanary_requests_total[5m]))",
    "max_over_time((sum(rate(mlcanary_requests_total[1m])))[10m:1m] offset 5m)",
    "sum(increase(mlcanary_requests_total[5m] offset 10m)) > bool 100",
    "topk(2, sum by (namespace, model_version) (mlcanary_requests_total)) and on (namespace) payments_total",
    'count_values("v", payments_total) or vector(0)',
    "-sum(payments_total) ^ 2",
    "sum(payments_total @ 1735690500)",
    'label_replace(payments_total, "dst", "$1", "card", "(.*)-.*")',
    "holt_winters(payments_total[10m], 0.5, 0.5)",
    "scalar(sum(payments_total)) * 2 + time() - time()",
]


@pytest.mark.parametrize("text", PRINTED)
def test_prometheus_reads_the_printed_query_as_the_original(
    tenant_prometheus: RunningPrometheus, text: str
) -> None:
    """The printer is checked against the parser it came from (test_promql_scoping.py) and here
    against Prometheus itself: the printed text gives the same answer as the original."""
    printed = promql.to_promql(promql.parse(text))
    original = query(tenant_prometheus, text)
    assert original, "the corpus query should select something"
    assert query(tenant_prometheus, printed) == original
    # and the scoped text gives what a hand-written per-namespace query gives
    scoped_text = promql.scoped(promql.parse(text), promql.Scope("namespace", TEAM_B))
    by_hand = text.replace("mlcanary_requests_total", 'mlcanary_requests_total{namespace="team-b"}')
    by_hand = by_hand.replace("payments_total", 'payments_total{namespace="team-b"}')
    by_hand = by_hand.replace("}{outcome", ",outcome").replace('"}{', '",')
    scoped_answer = query(tenant_prometheus, scoped_text)
    assert scoped_answer == query(tenant_prometheus, by_hand)
    assert all(dict(labels).get("namespace", TEAM_B) == TEAM_B for labels, _ in scoped_answer)


def test_analyze_prints_the_scoped_query_it_runs(
    tenant_prometheus: RunningPrometheus, tmp_path: Path
) -> None:
    manifest = tmp_path / "fraud.yaml"
    manifest.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "mlcanary.io/v1alpha1",
                "kind": "ModelDeployment",
                "metadata": {"name": MODEL, "namespace": TEAM_A},
                "spec": {
                    "model": {"name": MODEL, "version": CANARY, "uri": "file:///models/fraud"},
                    "analysis": {"interval": WINDOW, "metrics": [COUNT.to_wire()]},
                },
            }
        )
    )
    out = io.StringIO()
    argv = ["-f", str(manifest), "--prometheus", tenant_prometheus.url, "--at", str(T_END)]
    code = run_analyze([*argv, "--namespace-label", "namespace"], out=out)
    text = out.getvalue()
    assert code == 0, text
    assert 'scope: every selector gets namespace="team-a"' in text
    assert 'count(mlcanary_requests_total{namespace="team-a"})\n    -> 6' in text
    out = io.StringIO()
    assert run_analyze([*argv, "--namespace-label", "", "--custom-queries", "unscoped"], out=out) == 0
    assert "count(mlcanary_requests_total)\n    -> 12" in out.getvalue()
    assert "scope: none: the queries read every namespace's series" in out.getvalue()
