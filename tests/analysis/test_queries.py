"""Query rendering: the exact PromQL of each built-in, and escaping that hostile values cannot escape."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlcanary.analysis import queries as q
from mlcanary.models import BuiltinMetric, Metric

from .promql_lexer import shape, strings, tokenize

CTX = q.QueryContext(
    name="fraud",
    namespace="risk",
    model_name="fraud-model",
    version="2.0.0",
    stable_version="1.0.0",
    interval="1m",
)
SEL_C = '{model_name="fraud-model",model_version="2.0.0"}'
SEL_S = '{model_name="fraud-model",model_version="1.0.0"}'


def builtin(kind: BuiltinMetric, **kw: object) -> Metric:
    kw.setdefault("max", 1.0)
    return Metric(name=str(kind), builtin=kind, **kw)  # type: ignore[arg-type]


def rendered(metric: Metric, ctx: q.QueryContext = CTX) -> list[tuple[str, str, str]]:
    return [(s.key, s.role, s.promql) for s in q.metric_queries(metric, ctx)]


# ------------------------------------------------------------------------------ built-in PromQL


def test_error_rate_queries() -> None:
    assert rendered(builtin(BuiltinMetric.ERROR_RATE)) == [
        ("requests", "canary", f"sum by (outcome) (increase(mlcanary_requests_total{SEL_C}[60s]))")
    ]
    assert rendered(builtin(BuiltinMetric.ERROR_RATE, compare_to="stable"))[1] == (
        "requests",
        "stable",
        f"sum by (outcome) (increase(mlcanary_requests_total{SEL_S}[60s]))",
    )


def test_latency_queries_use_the_quantile() -> None:
    assert rendered(builtin(BuiltinMetric.LATENCY_P99, quantile=0.95)) == [
        (
            "latency",
            "canary",
            "histogram_quantile(0.95, sum by (le) "
            f"(rate(mlcanary_request_duration_seconds_bucket{SEL_C}[60s])))",
        ),
        ("count", "canary", f"sum(increase(mlcanary_request_duration_seconds_count{SEL_C}[60s]))"),
    ]
    assert "histogram_quantile(0.99," in rendered(builtin(BuiltinMetric.LATENCY_P99))[0][2]


def test_input_drift_queries() -> None:
    assert rendered(builtin(BuiltinMetric.INPUT_DRIFT)) == [
        ("psi", "canary", f"max by (feature) (mlcanary_input_drift_psi{SEL_C})"),
        ("rows", "canary", f"sum(mlcanary_input_drift_window_rows{SEL_C})"),
    ]


def test_prediction_drift_always_queries_both_revisions() -> None:
    assert rendered(builtin(BuiltinMetric.PREDICTION_DRIFT)) == [
        ("scores", "canary", f"sum by (le) (increase(mlcanary_prediction_score_bucket{SEL_C}[60s]))"),
        ("classes", "canary", f"sum by (class) (increase(mlcanary_predictions_total{SEL_C}[60s]))"),
        ("scores", "stable", f"sum by (le) (increase(mlcanary_prediction_score_bucket{SEL_S}[60s]))"),
        ("classes", "stable", f"sum by (class) (increase(mlcanary_predictions_total{SEL_S}[60s]))"),
    ]


def test_accuracy_queries() -> None:
    assert rendered(builtin(BuiltinMetric.ACCURACY, min=0.8, max=None)) == [
        ("feedback", "canary", f"sum by (correct) (increase(mlcanary_feedback_total{SEL_C}[60s]))")
    ]


def test_namespace_label_is_opt_in() -> None:
    assert "namespace" not in rendered(builtin(BuiltinMetric.ERROR_RATE))[0][2]
    ctx = q.QueryContext(**{**CTX.__dict__, "namespace_label": "namespace"})
    promql = rendered(builtin(BuiltinMetric.ERROR_RATE), ctx)[0][2]
    assert '{model_name="fraud-model",model_version="2.0.0",namespace="risk"}' in promql
    with pytest.raises(q.QueryTemplateError, match="not a Prometheus label name"):
        q.metric_queries(
            builtin(BuiltinMetric.ERROR_RATE), q.QueryContext(**{**CTX.__dict__, "namespace_label": 'x"}'})
        )


def test_fractional_interval_becomes_a_promql_duration() -> None:
    ctx = q.QueryContext(**{**CTX.__dict__, "interval": "1.5m"})
    assert "[90s]" in rendered(builtin(BuiltinMetric.ERROR_RATE), ctx)[0][2]


# ----------------------------------------------------------------------------- custom templates


def custom(query: str, **kw: object) -> Metric:
    kw.setdefault("max", 1.0)
    return Metric(name="custom", query=query, **kw)  # type: ignore[arg-type]


def test_custom_template_placeholders_inside_and_outside_strings() -> None:
    template = (
        'sum(rate(http_requests_total{job="{{name}}",ns={{namespace}},version="{{version}}"}[{{interval}}]))'
        ' / sum(rate(http_requests_total{version="{{stableVersion}}"}[{{interval}}]))'
    )
    assert q.render_template(template, CTX) == (
        'sum(rate(http_requests_total{job="fraud",ns="risk",version="2.0.0"}[60s]))'
        ' / sum(rate(http_requests_total{version="1.0.0"}[60s]))'
    )
    # for stable, {{version}} is the stable version
    assert 'version="1.0.0"}[60s])) /' in q.render_template(template, CTX, "stable")


def test_custom_metric_renders_stable_and_request_count_when_asked() -> None:
    specs = q.metric_queries(
        custom('sum(x{v="{{version}}"})', compare_to="stable", min_requests=50, max=None),
        q.QueryContext(**{**CTX.__dict__, "custom_queries": "unscoped"}),
    )
    assert [(s.key, s.role) for s in specs] == [
        ("value", "canary"),
        ("value", "stable"),
        ("requests", "canary"),
    ]
    assert specs[1].promql == 'sum(x{v="1.0.0"})'


def test_regex_matcher_operands_are_regex_escaped() -> None:
    ctx = q.QueryContext(**{**CTX.__dict__, "version": "2.0.0+build.1"})
    out = q.render_template('x{v=~"{{version}}|other", w!~ "{{version}}", u="{{version}}"}', ctx)
    assert out == r'x{v=~"2\\.0\\.0\\+build\\.1|other", w!~ "2\\.0\\.0\\+build\\.1", u="2.0.0+build.1"}'
    pattern = strings(out)[0].split("|")[0]
    assert re.fullmatch(pattern, "2.0.0+build.1") and not re.fullmatch(pattern, "2x0x0+build.1")


def test_single_quoted_strings_and_comments() -> None:
    out = q.render_template(
        "x{v='{{version}}'} # for {{name}}\n+ 1", q.QueryContext(**{**CTX.__dict__, "version": "it's"})
    )
    assert out == "x{v='it\\'s'} # for \"fraud\"\n+ 1"


@pytest.mark.parametrize(
    ("template", "error"),
    [
        ("sum(x{v=`{{version}}`})", "raw string"),
        ('x{v="{{version}}}', "not closed"),
        ('x{v="a\n"}', "not closed on its line"),
        ("x{v={{ver}}}", "unknown placeholder {{ver}}"),
        ('x{v="{{ nope }}"}', "unknown placeholder {{nope}}"),
    ],
)
def test_template_errors(template: str, error: str) -> None:
    with pytest.raises(q.QueryTemplateError, match=re.escape(error)):
        q.check_template(template)


def test_metric_problems() -> None:
    assert q.metric_problems(Metric(name="p", builtin=BuiltinMetric.PREDICTION_DRIFT, compare_to="stable"))
    assert q.metric_problems(Metric(name="p", builtin=BuiltinMetric.ERROR_RATE, max=0.1, quantile=0.9))
    assert q.metric_problems(custom("x{v=`{{version}}`}"))
    assert not q.metric_problems(builtin(BuiltinMetric.PREDICTION_DRIFT, max=0.2))


def test_unknown_placeholder_is_a_validation_error() -> None:
    with pytest.raises(ValueError, match="unknown placeholder"):
        Metric(name="x", query="sum(x{a='{{modelName}}'})", max=1)


# ----------------------------------------------------------------------------------- escaping


def test_promql_string_escapes() -> None:
    assert q.promql_string('a"b\\c\nd') == '"a\\"b\\\\c\\nd"'
    assert q.promql_string("\x00\x7f\u2028é😀") == '"\\u0000\\u007f\\u2028é😀"'
    with pytest.raises(q.QueryTemplateError):
        q.promql_string("\ud800")


HOSTILE = [
    '" or vector(1) or "',
    '"} or vector(1) #',
    "\\",
    '\\"',
    "}{,",
    "a\nb",
    "a\r\n} or on() vector(1)\n#",
    "`",
    "'",
    "{{version}}",
    ".*",
    "\u2028",
]
hostile_text = st.text(
    alphabet=st.one_of(st.sampled_from(list("\"'`\\{}[](),=~!#\n\r\t .*+|$^")), st.characters(codec="utf-8")),
    max_size=40,
)

TEMPLATE = (
    'sum(rate(x{a="{{version}}",b=~"{{name}}.*",c={{namespace}},d=\'{{stableVersion}}\'}[{{interval}}]))'
    " # {{version}}\n / on() vector(2)"
)


def _ctx(value: str) -> q.QueryContext:
    return q.QueryContext(
        name=value, namespace=value, model_name=value, version=value, stable_version=value, interval="1m"
    )


def check_selector(value: str) -> None:
    """Whatever the value, the rendered selector lexes to the same tokens as with a benign value,
    and its string literals decode back to exactly the value."""
    benign = q.selector(_ctx("x"), "canary", outcome="server_error")
    hostile = q.selector(_ctx(value), "canary", outcome="server_error")
    assert shape(hostile) == shape(benign)
    assert strings(hostile) == [value, value, "server_error"]
    for kind in BuiltinMetric:
        metric = (
            builtin(kind, compare_to="stable") if kind != BuiltinMetric.PREDICTION_DRIFT else builtin(kind)
        )
        for spec_benign, spec_hostile in zip(
            q.metric_queries(metric, _ctx("x")), q.metric_queries(metric, _ctx(value)), strict=True
        ):
            assert shape(spec_hostile.promql) == shape(spec_benign.promql)
            assert all(s == value for s in strings(spec_hostile.promql)[:2])


def check_template(value: str) -> None:
    benign = q.render_template(TEMPLATE, _ctx("x"))
    hostile = q.render_template(TEMPLATE, _ctx(value))
    assert shape(hostile) == shape(benign)
    a, b, c, d = strings(hostile)
    assert a == c == d == value
    assert re.fullmatch(b, value + "anything", re.DOTALL)  # the regex operand matches the value literally
    assert hostile.count("\n") == 1  # the comment cannot spill onto a new line
    assert [t.kind for t in tokenize(hostile)].count("COMMENT") == 1


@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_examples(value: str) -> None:
    check_selector(value)
    check_template(value)


@settings(max_examples=400, deadline=None)
@given(value=hostile_text)
def test_selector_structure_never_changes(value: str) -> None:
    check_selector(value)


@settings(max_examples=400, deadline=None)
@given(value=hostile_text)
def test_custom_template_structure_never_changes(value: str) -> None:
    check_template(value)


def test_docs_show_the_promql_each_builtin_runs() -> None:
    """docs/analysis.md shows every built-in query; keep it in step with the code."""
    from pathlib import Path

    docs = Path(__file__).resolve().parents[2] / "docs" / "analysis.md"
    if not docs.exists():
        pytest.skip("docs/analysis.md is not in this checkout")

    def short(text: str) -> str:
        for version in ("2.0.0", "1.0.0"):
            text = text.replace(f'{{model_name="fraud",model_version="{version}"}}', f"{{SEL({version})}}")
        return text

    text = short(docs.read_text())
    ctx = q.QueryContext(
        name="fraud",
        namespace="risk",
        model_name="fraud",
        version="2.0.0",
        stable_version="1.0.0",
        interval="1m",
    )
    for kind in BuiltinMetric:
        m = builtin(kind) if kind == BuiltinMetric.PREDICTION_DRIFT else builtin(kind, compare_to="stable")
        for spec in q.metric_queries(m, ctx):
            assert short(spec.promql) in text, f"{kind} {spec.role} {spec.key}: {spec.promql}"
