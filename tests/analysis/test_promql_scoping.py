"""Namespace scoping: every selector of every query gets the ModelDeployment's namespace matcher.

Issue 11 item 6: a custom query from one namespace read other namespaces' series
(``count(mlcanary_requests_total)`` counted everyone's). With ``MLCANARY_PROMETHEUS_NAMESPACE_LABEL``
set, queries are parsed and ``<label>="<namespace>"`` is injected into every vector selector, built-in
and custom alike; a selector that matches the label itself in any other way is refused. Without a
label, custom queries are refused unless the admin allows unscoped ones. These tests are pure; the
real-Prometheus ones are in ``test_prometheus_tenancy.py``.
"""

from __future__ import annotations

import promql_parser as pp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlcanary.analysis import promql
from mlcanary.analysis import queries as q
from mlcanary.models import BuiltinMetric, Metric, ModelDeploymentSpec
from mlcanary.reconcile import InvalidQueryError, check_query_templates
from mlcanary.settings import Settings

SCOPED = Settings(prometheus_namespace_label="namespace")
CTX = q.QueryContext(
    name="fraud",
    namespace="team-a",
    model_name="fraud",
    version="2.0.0",
    stable_version="1.0.0",
    interval="1m",
    namespace_label="namespace",
)

# Queries of every shape the printer must reproduce (selectors in aggregations, binary operations
# with every modifier, function arguments, subqueries, offsets and @).
CORPUS = [
    "count(mlcanary_requests_total)",
    'sum by (outcome) (increase(mlcanary_requests_total{model_name="fraud",outcome!~"client.*"}[5m]))',
    "histogram_quantile(0.9, sum by (le) (rate(latency_bucket[5m])))",
    "sum without (pod, instance) (rate(x[5m]))",
    "a / on (x) group_left (y) b",
    "a * ignoring (z) group_right () b",
    "a > bool 0.5",
    "a and b or c unless d",
    "a atan2 b",
    'count_values("value", x)',
    "topk(3, x)",
    "quantile by (job) (0.5, x)",
    "-x ^ 2",
    "2 ^ 3 ^ 2",
    "(a + b) * c",
    "a - (b - c)",
    "x offset 5m",
    "x @ 1735693200",
    "rate(x[5m] offset 1h)",
    "max_over_time(rate(x[1m])[30m:1m] offset 5m)",
    "max_over_time((sum(rate(x[1m])))[10m:1m])",
    "x @ start()",
    'label_replace(x, "dst", "$1", "src", "(.*)")',
    'absent(x{job="a"})',
    "vector(1)",
    "scalar(x) * 2",
    "time() - x",
    'x{a="quote\\"back\\\\slash\\nnewline\\u00e9"}',
    "x{a='single'}",
    'x{a=~"a|b",b!~"c"}',
    "NaN",
    "-Inf",
    "1e-09 + 0.1",
    "sum(rate(recording:rule:rate5m[5m]))",
    'x{"a.b"="utf-8 label name"}',
    "holt_winters(x[10m], 0.5, 0.5)",
    "max_over_time(x[5m:1500ms])",
]


def scoped(query: str, namespace: str = "team-a") -> str:
    return promql.scoped(promql.parse(query), promql.Scope("namespace", namespace))


def matchers(selector: pp.VectorSelector, label: str) -> list[tuple[str, str]]:
    return [(str(m.op), m.value) for m in selector.matchers.matchers if m.name == label]


@pytest.mark.parametrize("query", CORPUS)
def test_every_selector_gets_the_namespace_once(query: str) -> None:
    text = scoped(query)
    tree = promql.parse(text)
    found = promql.selectors(tree)
    assert len(found) == len(promql.selectors(promql.parse(query)))
    assert all(matchers(s, "namespace") == [("MatchOp.Equal", "team-a")] for s in found), text
    # ... and nothing else changed: the scoped text is the original tree plus the matchers
    assert promql.canonical(tree) == promql.canonical(
        promql.parse(query), promql.Scope("namespace", "team-a")
    )


@pytest.mark.parametrize("query", CORPUS)
def test_printing_is_faithful_where_the_library_is_not(query: str) -> None:
    tree = promql.parse(query)
    assert promql.canonical(promql.parse(promql.to_promql(tree))) == promql.canonical(tree)


def test_the_library_printer_would_break_escaping_and_durations() -> None:
    """Why mlcanary prints the tree itself: promql-parser's str() is not a safe printer."""
    tree = promql.parse('x{a="v\\"} or vector(1) or x{a=\\""}')
    assert 'x{a="v"} or vector(1) or x{a=""}' in str(tree)  # the literal's quotes come out raw
    assert promql.to_promql(tree) == 'x{a="v\\"} or vector(1) or x{a=\\""}'
    assert "[5m:0s]" in str(promql.parse("max_over_time(x[5m:1ms])"))  # 1ms lost
    assert promql.to_promql(promql.parse("max_over_time(x[5m:1ms])")) == "max_over_time(x[300s:1ms])"


def test_the_issue_query_is_scoped() -> None:
    assert scoped("count(mlcanary_requests_total)") == 'count(mlcanary_requests_total{namespace="team-a"})'


def test_a_matcher_on_the_own_namespace_is_kept_once() -> None:
    assert scoped('sum(x{namespace="team-a",job="j"})') == 'sum(x{namespace="team-a",job="j"})'
    metric = Metric(name="c", query='sum(x{namespace="{{namespace}}"})', max=1)
    assert q.metric_queries(metric, CTX)[0].promql == 'sum(x{namespace="team-a"})'


@pytest.mark.parametrize(
    "query",
    [
        'sum(x{namespace="team-b"})',
        'sum(x{namespace=~"team-.*"})',
        'sum(x{namespace!="team-a"})',
        'sum(x{namespace!~"nothing"})',
        'sum(x{namespace=""})',
        'sum(x) / sum(y{namespace=~"team-a"})',
    ],
)
def test_any_other_matcher_on_the_namespace_label_is_refused(query: str) -> None:
    with pytest.raises(q.QueryTemplateError, match="may only read their own namespace"):
        scoped(query)


def spec(*queries: str) -> ModelDeploymentSpec:
    return ModelDeploymentSpec.model_validate(
        {
            "model": {"name": "m", "version": "1.0.0", "uri": "file:///m"},
            "analysis": {"metrics": [{"name": f"q{i}", "query": t, "max": 1} for i, t in enumerate(queries)]},
        }
    )


def test_spec_check_refuses_a_conflicting_matcher_naming_the_field() -> None:
    ok = 'sum(rate(x{namespace="{{namespace}}",v="{{version}}"}[{{interval}}]))'
    check_query_templates(spec(ok, "count(mlcanary_requests_total)"), SCOPED)
    for bad in (
        'count(x{namespace="team-b"})',
        'count(x{namespace=~"{{namespace}}"})',
        'count(x{namespace="team-a"})',
    ):
        with pytest.raises(InvalidQueryError) as caught:
            check_query_templates(spec(ok, bad), SCOPED)
        assert str(caught.value).startswith("spec.analysis.metrics[1].query: selector x{namespace=")
        assert 'write namespace="{{namespace}}" or leave namespace out' in str(caught.value)


def test_without_a_label_custom_queries_are_refused_unless_the_admin_allows_them() -> None:
    with pytest.raises(InvalidQueryError) as caught:
        check_query_templates(spec("count(x)"), Settings())
    assert str(caught.value).startswith("spec.analysis.metrics[0].query: custom queries are refused")
    assert "MLCANARY_PROMETHEUS_NAMESPACE_LABEL" in str(caught.value)
    check_query_templates(spec("count(x)"), Settings(custom_queries="unscoped"))
    for settings_ in (
        Settings(custom_queries="disabled"),
        Settings(custom_queries="disabled", prometheus_namespace_label="ns"),
    ):
        with pytest.raises(InvalidQueryError, match="custom queries are disabled"):
            check_query_templates(spec("count(x)"), settings_)
    # Built-in metrics run under every policy.
    builtin = ModelDeploymentSpec.model_validate(
        {
            "model": {"name": "m", "version": "1.0.0", "uri": "file:///m"},
            "analysis": {"metrics": [{"name": "e", "builtin": "errorRate", "max": 0.1}]},
        }
    )
    check_query_templates(builtin, Settings(custom_queries="disabled"))


def test_the_provider_refuses_what_the_spec_check_refuses() -> None:
    metric = Metric(name="c", query="count(x)", max=1)
    unscoped_ctx = q.QueryContext(**{**CTX.__dict__, "namespace_label": None})
    with pytest.raises(q.QueryTemplateError, match="custom queries are refused"):
        q.metric_queries(metric, unscoped_ctx)
    allowed = q.QueryContext(**{**unscoped_ctx.__dict__, "custom_queries": "unscoped"})
    assert q.metric_queries(metric, allowed)[0].promql == "count(x)"


@pytest.mark.parametrize("kind", list(BuiltinMetric))
def test_builtin_queries_are_scoped_by_the_same_injection(kind: BuiltinMetric) -> None:
    metric = Metric(
        name="b", builtin=kind, max=1, compare_to=None if kind == BuiltinMetric.PREDICTION_DRIFT else "stable"
    )
    plain = q.metric_queries(metric, q.QueryContext(**{**CTX.__dict__, "namespace_label": None}))
    scoped_specs = q.metric_queries(metric, CTX)
    assert len(plain) == len(scoped_specs)
    for before, after in zip(plain, scoped_specs, strict=True):
        tree = promql.parse(after.promql)
        assert all(matchers(s, "namespace") == [("MatchOp.Equal", "team-a")] for s in promql.selectors(tree))
        # the built-in's own text, with the matcher appended to each selector
        assert after.promql == before.promql.replace('"}', '",namespace="team-a"}')


def test_the_request_count_of_a_custom_metric_is_scoped_too() -> None:
    metric = Metric(name="c", query="sum(x)", max=1, min_requests=10)
    assert all('namespace="team-a"' in s.promql for s in q.metric_queries(metric, CTX))


hostile = st.text(
    alphabet=st.one_of(st.sampled_from(list("\"'`\\{}[](),=~!#\n\r\t .*+|$^")), st.characters(codec="utf-8")),
    max_size=40,
)


@settings(max_examples=300, deadline=None)
@given(namespace=hostile, value=hostile)
def test_hostile_values_stay_inside_their_literals(namespace: str, value: str) -> None:
    """Whatever the namespace (and whatever label values the query holds), the scoped query has the
    same structure, and the injected matcher decodes back to exactly the namespace."""
    query = f"sum(rate(x{{a={promql.promql_string(value)}}}[5m])) / count(y)"
    text = scoped(query, namespace)
    tree = promql.parse(text)
    assert [matchers(s, "namespace") for s in promql.selectors(tree)] == [[("MatchOp.Equal", namespace)]] * 2
    assert matchers(promql.selectors(tree)[0], "a") == [("MatchOp.Equal", value)]
    assert promql.canonical(tree) == promql.canonical(
        promql.parse(query), promql.Scope("namespace", namespace)
    )
