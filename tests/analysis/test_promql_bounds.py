"""Custom queries that cannot be bounded are refused when the spec is read, naming the field.

Issue 11 item 5: ``count(count_over_time({__name__=~".+"}[30m:1ms]))`` took a shared Prometheus from
86 MiB to 2.5 GiB in 20 s. The operator now parses every custom query (``promql-parser``) and refuses
selectors that do not name their metric, windows over the range cap, subquery resolutions under the
floor (and implicit ones), and nested subqueries that evaluate too many points, with limits an admin
sets (``MLCANARY_QUERY_*``). No network call is involved: these tests run without Prometheus.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from mlcanary.analysis import promql
from mlcanary.analysis import queries as q
from mlcanary.models import ModelDeploymentSpec
from mlcanary.reconcile import InvalidQueryError, check_query_templates
from mlcanary.settings import Settings

ISSUE_QUERY = 'count(count_over_time({__name__=~".+"}[30m:1ms]))'
LIMITS = promql.QueryLimits()  # 1h, 10s
UNSCOPED = Settings(custom_queries="unscoped")


def problems(query: str, limits: promql.QueryLimits = LIMITS) -> list[str]:
    return promql.bound_problems(promql.parse(query), limits)


def refused(query: str, interval: str = "1m", settings: Settings = UNSCOPED) -> str:
    with pytest.raises(q.QueryTemplateError) as caught:
        q.check_custom_query(
            query,
            interval,
            namespace_label=settings.prometheus_namespace_label,
            custom_queries=settings.custom_queries,
            limits=q.limits_of(settings),
        )
    return str(caught.value)


def accepted(query: str, interval: str = "1m", settings: Settings = UNSCOPED) -> None:
    q.check_custom_query(
        query,
        interval,
        namespace_label=settings.prometheus_namespace_label,
        custom_queries=settings.custom_queries,
        limits=q.limits_of(settings),
    )


def test_the_issue_query_is_refused_for_each_reason() -> None:
    found = problems(ISSUE_QUERY)
    assert len(found) == 2, found
    assert any("resolution 1ms" in p and "finer than the floor 10s" in p for p in found)
    assert any('{__name__=~".+"} does not name its metric' in p for p in found)


@pytest.mark.parametrize(
    "query",
    [
        '{__name__=~".+"}',
        '{job="api"}',  # every metric of a job
        'sum(rate({__name__=~"http_.*", job="api"}[5m]))',
        'count({__name__!=""})',
    ],
)
def test_selectors_must_name_their_metric(query: str) -> None:
    assert any("does not name its metric" in p for p in problems(query))


@pytest.mark.parametrize(
    "query",
    [
        "http_requests_total",
        '{__name__="http_requests_total", job="api"}',
        "sum(rate(recording:rule:rate5m[5m]))",
        'vector(1) + scalar(up{job="x"})',
        "time()",
    ],
)
def test_named_selectors_and_selectorless_queries_pass(query: str) -> None:
    assert problems(query) == []


def test_range_windows_are_capped() -> None:
    assert problems("rate(x[1h])") == []
    (found,) = problems("rate(x[61m])")
    assert "range [61m] of x[3660s] is longer than the limit 1h" in found
    assert "MLCANARY_QUERY_MAX_RANGE_SECONDS" in found
    (found,) = problems("max_over_time(rate(x[1m])[2h:1m])")
    assert "subquery window [2h]" in found
    assert problems("rate(x[2h])", promql.QueryLimits(max_range=timedelta(hours=3))) == []


def test_subquery_resolution_has_a_floor_and_must_be_given() -> None:
    assert problems("max_over_time(rate(x[1m])[30m:10s])") == []
    (found,) = problems("max_over_time(rate(x[1m])[30m:9s])")
    assert "resolution 9s" in found and "finer than the floor 10s" in found
    assert "MLCANARY_QUERY_MIN_SUBQUERY_STEP_SECONDS" in found
    (found,) = problems("max_over_time(rate(x[1m])[30m:])")
    assert "has no resolution: give it explicitly" in found
    assert (
        problems("max_over_time(x[30m:1s])", promql.QueryLimits(min_subquery_step=timedelta(seconds=1))) == []
    )


def test_nested_subqueries_cannot_multiply_the_work() -> None:
    # The inner subquery is evaluated over the outer window too: (1h + 1h) / 10s = 720 points.
    (found,) = problems("max_over_time((max_over_time(rate(x[1m])[1h:10s]))[1h:1m])")
    assert "evaluated at 720 points" in found and "at most 360" in found
    assert problems("max_over_time((max_over_time(rate(x[1m])[5m:1m]))[30m:5m])") == []


def test_functions_that_read_unnamed_series_are_refused() -> None:
    assert any("info() reads series" in p for p in problems("info(up)"))


def test_length_and_depth_are_capped_before_the_parser_can_crash() -> None:
    # The Rust parser recurses without a limit: ~20,000 nested parentheses crash the process.
    with pytest.raises(q.QueryTemplateError, match="characters long"):
        promql.parse("(" * 20_000 + "1" + ")" * 20_000)
    with pytest.raises(q.QueryTemplateError, match="nested more than 64 levels"):
        promql.parse("-" * 100 + "x")
    with pytest.raises(q.QueryTemplateError, match="not valid PromQL"):
        promql.parse("sum(rate(x[5m])")


def test_the_interval_placeholder_counts_as_the_spec_interval() -> None:
    template = 'sum(rate(x{v="{{version}}"}[{{interval}}]))'
    accepted(template, "1h")
    message = refused(template, "2h")
    assert "range [2h]" in message and "longer than the limit 1h" in message


def test_limits_come_from_the_operator_settings() -> None:
    settings = Settings.from_env(
        {
            "MLCANARY_CUSTOM_QUERIES": "unscoped",
            "MLCANARY_QUERY_MAX_RANGE_SECONDS": "86400",
            "MLCANARY_QUERY_MIN_SUBQUERY_STEP_SECONDS": "60",
        }
    )
    assert q.limits_of(settings) == promql.QueryLimits(timedelta(days=1), timedelta(minutes=1))
    accepted("rate(x[1d])", settings=settings)
    assert "floor 1m" in refused("max_over_time(x[1h:30s])", settings=settings)
    assert q.limits_of(Settings.from_env({})) == LIMITS
    for bad in (
        {"MLCANARY_QUERY_MAX_RANGE_SECONDS": "0"},
        {"MLCANARY_QUERY_MIN_SUBQUERY_STEP_SECONDS": "inf"},
    ):
        with pytest.raises(ValueError, match="positive number of seconds"):
            Settings.from_env(bad)
    with pytest.raises(ValueError, match="MLCANARY_CUSTOM_QUERIES"):
        Settings.from_env({"MLCANARY_CUSTOM_QUERIES": "yes"})
    with pytest.raises(ValueError, match="not a Prometheus label name"):
        Settings.from_env({"MLCANARY_PROMETHEUS_NAMESPACE_LABEL": 'namespace"}'})


def spec_with(*queries: str, interval: str = "1m") -> ModelDeploymentSpec:
    return ModelDeploymentSpec.model_validate(
        {
            "model": {"name": "m", "version": "1.0.0", "uri": "file:///m"},
            "analysis": {
                "interval": interval,
                "metrics": [
                    {"name": "errors", "builtin": "errorRate", "max": 0.05},
                    *({"name": f"q{i}", "query": query, "max": 1} for i, query in enumerate(queries)),
                ],
            },
        }
    )


def test_spec_check_names_the_field_of_the_unbounded_query() -> None:
    spec = spec_with('sum(rate(x{v="{{version}}"}[{{interval}}]))', ISSUE_QUERY)
    with pytest.raises(InvalidQueryError) as caught:
        check_query_templates(spec, UNSCOPED)
    message = str(caught.value)
    assert message.startswith("spec.analysis.metrics[2].query: ")
    assert "finer than the floor 10s" in message and "does not name its metric" in message
    check_query_templates(spec_with('sum(rate(x{v="{{version}}"}[{{interval}}]))'), UNSCOPED)


def test_spec_check_reads_the_operator_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = spec_with("rate(x[2h])")
    monkeypatch.setenv("MLCANARY_CUSTOM_QUERIES", "unscoped")
    with pytest.raises(InvalidQueryError, match=r"metrics\[1\]\.query: range \[2h\]"):
        check_query_templates(spec)
    monkeypatch.setenv("MLCANARY_QUERY_MAX_RANGE_SECONDS", "7200")
    check_query_templates(spec)
