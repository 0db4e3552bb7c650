"""The judge's classification table: every response shape and every metric kind, without Prometheus."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

import pytest

from mlcanary.analysis import judge
from mlcanary.analysis import queries as q
from mlcanary.analysis.judge import QueryResult, Series
from mlcanary.models import BuiltinMetric, Metric, Verdict

NOW = datetime(2025, 1, 1, tzinfo=UTC)
S, F, INC, ERR = Verdict.SUCCESSFUL, Verdict.FAILED, Verdict.INCONCLUSIVE, Verdict.ERROR


def res(key: str, role: q.Role = "canary", *series: tuple[dict[str, str], float], **kw: Any) -> QueryResult:
    return QueryResult(
        spec=q.QuerySpec(key, role, "promql"), series=tuple(Series(lbl, v) for lbl, v in series), **kw
    )


def one(value: float, key: str = "value", role: q.Role = "canary") -> QueryResult:
    return res(key, role, ({}, value))


def metric(**kw: Any) -> Metric:
    return Metric(name="m", **kw)


CUSTOM = metric(query="sum(x)", max=1.0)


# ---------------------------------------------------------------------------- response shapes


@pytest.mark.parametrize(
    ("result", "verdict", "text"),
    [
        (one(0.5), S, "within bounds"),
        (one(2.0), F, "above max 1"),
        (res("value", "canary", ({}, 0.5), result_type="scalar"), S, "within bounds"),
        (res("value"), INC, "empty result"),
        (one(math.nan), INC, "NaN"),
        (one(math.inf), INC, "+Inf"),
        (one(-math.inf), INC, "-Inf"),
        (res("value", "canary", ({"a": "1"}, 0.1), ({"a": "2"}, 0.2)), ERR, "2 series"),
        (res("value", result_type="matrix"), ERR, "matrix"),
        (res("value", result_type="string"), ERR, "string"),
        (res("value", error="HTTP Status Code 400: bad_data: parse error"), ERR, "parse error"),
        (res("value", error="timed out after 10s"), ERR, "timed out"),
    ],
)
def test_custom_metric_response_shapes(result: QueryResult, verdict: Verdict, text: str) -> None:
    m = judge.evaluate(CUSTOM, [result], NOW)
    assert m.verdict == verdict
    assert text in (m.message or "")
    assert m.value is None or math.isfinite(m.value)  # NaN and Inf never reach status


def test_nan_and_empty_are_never_a_pass_even_without_bounds_that_could_fail() -> None:
    lenient = metric(query="sum(x)", max=1e15)  # the largest bound the model allows
    assert judge.evaluate(lenient, [one(math.nan)], NOW).verdict == INC
    assert judge.evaluate(lenient, [res("value")], NOW).verdict == INC


def test_min_bound_and_dry_run_and_problems() -> None:
    m = judge.evaluate(metric(query="sum(x)", min=0.9, dry_run=True), [one(0.5)], NOW)
    assert (m.verdict, m.dry_run, m.threshold) == (F, True, ">= 0.9")
    problem = judge.evaluate(CUSTOM, [], NOW, problems=["bad template"])
    assert (problem.verdict, problem.message) == (ERR, "bad template")


def test_custom_comparison_with_stable() -> None:
    cmp = metric(query="sum(x)", compare_to="stable", tolerance=0.1, relative_tolerance=0.5)
    assert judge.threshold_text(cmp) == "<= stable + 0.1 + 50%"
    # allowed = 0.1 + 0.5 * 1.0 = 0.6
    assert judge.evaluate(cmp, [one(1.59), one(1.0, role="stable")], NOW).verdict == S
    failed = judge.evaluate(cmp, [one(1.61), one(1.0, role="stable")], NOW)
    assert (failed.verdict, failed.stable_value) == (F, 1.0)
    assert judge.evaluate(cmp, [one(1.0), res("value", "stable")], NOW).verdict == INC
    several = res("value", "stable", ({"a": "1"}, 1), ({"a": "2"}, 1))
    assert judge.evaluate(cmp, [one(1.0), several], NOW).verdict == ERR
    # a custom metric bounded only by min is worse when lower
    higher_better = metric(query="sum(x)", min=0.5, compare_to="stable", tolerance=0.05)
    assert judge.threshold_text(higher_better) == ">= 0.5 and >= stable - 0.05"
    assert judge.evaluate(higher_better, [one(0.8), one(0.9, role="stable")], NOW).verdict == F
    assert judge.evaluate(higher_better, [one(0.99), one(0.9, role="stable")], NOW).verdict == S


def test_custom_min_requests_queries_the_sample() -> None:
    m = metric(query="sum(x)", max=1, min_requests=100)
    requests = res("requests", "canary", ({"outcome": "success"}, 60), ({"outcome": "server_error"}, 10))
    out = judge.evaluate(m, [one(0.5), requests], NOW)
    assert (out.verdict, out.sample_size) == (INC, 70)
    assert "minRequests 100" in (out.message or "")


# ----------------------------------------------------------------------------------- errorRate


def requests(role: q.Role, ok: float, errors: float) -> QueryResult:
    return res("requests", role, ({"outcome": "success"}, ok), ({"outcome": "server_error"}, errors))


ERR_CMP = metric(builtin=BuiltinMetric.ERROR_RATE, compare_to="stable")


@pytest.mark.parametrize(
    ("canary", "stable", "metric_kw", "verdict", "text"),
    [
        ((594, 6), (11286, 114), {}, S, "not worse"),  # equal rates
        ((540, 60), (11286, 114), {}, F, "canary worse than stable"),  # 10% vs 1%, enough data
        ((5, 1), (113, 1), {"min_requests": 5}, INC, "too few events"),  # 17% vs 1% on 6 requests
        ((5, 1), (113, 1), {}, INC, "default minimum 100"),
        ((591, 9), (11286, 114), {}, S, "not significant"),  # 1.5% vs 1%: z = 1.19
        ((570, 30), (11286, 114), {"tolerance": 0.05}, S, "not worse than stable + 0.05"),
        ((0, 0), (11286, 114), {}, INC, "no canary requests"),
        ((600, 0), (0, 0), {}, INC, "stable has no samples"),
    ],
)
def test_error_rate_comparison(
    canary: tuple[float, float],
    stable: tuple[float, float],
    metric_kw: dict[str, Any],
    verdict: Verdict,
    text: str,
) -> None:
    m = metric(builtin=BuiltinMetric.ERROR_RATE, compare_to="stable", **metric_kw)
    out = judge.evaluate(m, [requests("canary", *canary), requests("stable", *stable)], NOW)
    assert out.verdict == verdict, out.message
    assert text in (out.message or "")


def test_error_rate_bounds_and_recorded_fields() -> None:
    m = metric(builtin=BuiltinMetric.ERROR_RATE, max=0.05, compare_to="stable", confidence=0.99)
    out = judge.evaluate(m, [requests("canary", 540, 60), requests("stable", 11286, 114)], NOW)
    assert out.verdict == F
    assert (out.value, out.stable_value, out.sample_size) == (0.1, 0.01, 600)
    assert out.threshold == "<= 0.05 and <= stable (99% z-test)"
    assert out.time == NOW
    no_errors_series = res("requests", "canary", ({"outcome": "success"}, 200))
    assert (
        judge.evaluate(metric(builtin=BuiltinMetric.ERROR_RATE, max=0.01), [no_errors_series], NOW).value == 0
    )


def test_error_rate_needs_requests_result() -> None:
    out = judge.evaluate(ERR_CMP, [res("requests", error="cannot connect to http://p:9090")], NOW)
    assert out.verdict == ERR and "canary requests query: cannot connect" in (out.message or "")


# ---------------------------------------------------------------------------------- accuracy


def feedback(role: q.Role, right: float, wrong: float) -> QueryResult:
    return res("feedback", role, ({"correct": "true"}, right), ({"correct": "false"}, wrong))


def test_accuracy() -> None:
    m = metric(builtin=BuiltinMetric.ACCURACY, min=0.8, compare_to="stable")
    good = judge.evaluate(m, [feedback("canary", 135, 15), feedback("stable", 2565, 285)], NOW)
    assert (good.verdict, good.value, good.stable_value) == (S, 0.9, 0.9)
    bad = judge.evaluate(m, [feedback("canary", 105, 45), feedback("stable", 2565, 285)], NOW)
    assert bad.verdict == F and "miss rate" in (bad.message or "")
    assert judge.evaluate(m, [res("feedback"), feedback("stable", 1, 1)], NOW).verdict == INC


# ----------------------------------------------------------------------------------- latency

LAT = metric(builtin=BuiltinMetric.LATENCY_P99, max=0.5, compare_to="stable", relative_tolerance=0.2)


def latency(canary: float, stable: float, count: float = 600) -> list[QueryResult]:
    return [one(canary, "latency"), one(count, "count"), one(stable, "latency", "stable")]


def test_latency() -> None:
    assert judge.evaluate(LAT, latency(0.2, 0.2), NOW).verdict == S
    assert judge.evaluate(LAT, latency(0.3, 0.2), NOW).verdict == F  # limit 0.24
    assert judge.evaluate(LAT, latency(0.6, 0.6), NOW).verdict == F  # above max
    assert judge.evaluate(LAT, latency(math.nan, 0.2), NOW).verdict == INC
    assert judge.evaluate(LAT, latency(0.2, math.nan), NOW).verdict == INC
    assert judge.evaluate(LAT, latency(0.2, 0.2, count=50), NOW).verdict == INC
    overflow = judge.evaluate(LAT, latency(math.inf, 0.2), NOW)
    assert (
        overflow.verdict == F
        and overflow.value is None
        and "largest histogram bucket" in (overflow.message or "")
    )


# -------------------------------------------------------------------------------- input drift


def test_input_drift() -> None:
    m = metric(builtin=BuiltinMetric.INPUT_DRIFT, max=0.25)
    psi = res("psi", "canary", ({"feature": "age"}, 0.1), ({"feature": "income"}, 0.4))
    out = judge.evaluate(m, [psi, one(1000, "rows")], NOW)
    assert (out.verdict, out.value, out.sample_size) == (F, 0.4, 1000)
    assert "'income'" in (out.message or "")
    empty = judge.evaluate(m, [res("psi"), one(40, "rows")], NOW)
    assert empty.verdict == INC and "40 rows" in (empty.message or "")


# --------------------------------------------------------------------------- prediction drift

EDGES = [0.25, 0.5, 0.75, 1.0, math.inf]


def scores(role: q.Role, cumulative: list[float], edges: list[float] = EDGES) -> QueryResult:
    return res(
        "scores",
        role,
        *(({"le": "+Inf" if math.isinf(e) else str(e)}, c) for e, c in zip(edges, cumulative, strict=True)),
    )


def classes(role: q.Role, **counts: float) -> QueryResult:
    return res("classes", role, *(({"class": k}, v) for k, v in counts.items()))


PRED = metric(builtin=BuiltinMetric.PREDICTION_DRIFT, max=0.2)


def test_prediction_drift_on_score_buckets_and_classes() -> None:
    same = [
        scores("canary", [250, 500, 750, 1000, 1000]),
        classes("canary", **{"0": 400, "1": 600}),
        scores("stable", [5000, 10000, 15000, 20000, 20000]),
        classes("stable", **{"0": 8000, "1": 12000}),
    ]
    out = judge.evaluate(PRED, same, NOW)
    assert out.verdict == S and out.value == pytest.approx(0.0, abs=1e-9)
    degenerate = [
        scores("canary", [0, 0, 0, 1000, 1000]),
        classes("canary", **{"1": 1000}),
        *same[2:],
    ]
    out = judge.evaluate(PRED, degenerate, NOW)
    assert out.verdict == F and out.value is not None and out.value > 1
    assert out.stable_value is None and out.sample_size == 1000


def test_prediction_drift_thin_data_is_inconclusive() -> None:
    thin = [
        scores("canary", [0, 0, 0, 150, 150]),
        classes("canary"),
        scores("stable", [5000, 10000, 15000, 20000, 20000]),
        classes("stable"),
    ]
    out = judge.evaluate(metric(builtin=BuiltinMetric.PREDICTION_DRIFT, max=0.2, min_requests=100), thin, NOW)
    assert out.verdict == F  # 3 used buckets: noise floor 2 * (1/150 + 1/20000) = 0.013: a real shift
    many_buckets = [0.05 * i for i in range(1, 21)] + [math.inf]
    spread = [
        scores("canary", [i * 5 for i in range(1, 21)] + [100], many_buckets),
        classes("canary"),
        scores("stable", [i * 1000 for i in range(1, 21)] + [20000], many_buckets),
        classes("stable"),
    ]
    out = judge.evaluate(metric(builtin=BuiltinMetric.PREDICTION_DRIFT, max=0.2), spread, NOW)
    assert out.verdict == INC and "sampling noise" in (out.message or "")  # 20 * (1/100 + ...) = 0.2


def test_prediction_drift_with_different_buckets_falls_back_to_classes() -> None:
    other_edges = [0.1, 0.2, 0.3, 0.4, math.inf]
    results = [
        scores("canary", [100, 200, 300, 1000, 1000], other_edges),
        classes("canary", a=500, b=500),
        scores("stable", [5000, 10000, 15000, 20000, 20000]),
        classes("stable", a=10000, b=10000),
    ]
    out = judge.evaluate(PRED, results, NOW)
    assert out.verdict == S and "class shares" in (out.message or "") and "differ" in (out.message or "")
    no_classes = [results[0], classes("canary"), results[2], classes("stable")]
    out = judge.evaluate(PRED, no_classes, NOW)
    assert out.verdict == ERR and "no comparable" in (out.message or "")


# --------------------------------------------------------------------- judge_bounds (file provider)


def test_judge_bounds_for_finished_numbers() -> None:
    m = metric(query="sum(x)", max=0.1, min_requests=10)
    assert judge.judge_bounds(m, 0.05, NOW, sample_size=100).verdict == S
    assert judge.judge_bounds(m, 0.5, NOW, sample_size=100).verdict == F
    assert judge.judge_bounds(m, 0.05, NOW, sample_size=5).verdict == INC
    assert judge.judge_bounds(m, None, NOW).verdict == INC
    assert judge.judge_bounds(m, math.inf, NOW).verdict == INC
    cmp = metric(query="sum(x)", compare_to="stable", tolerance=0.01)
    assert judge.judge_bounds(cmp, 0.05, NOW, stable_value=0.01).verdict == F
    assert judge.judge_bounds(cmp, 0.015, NOW, stable_value=0.01).verdict == S
    assert judge.judge_bounds(cmp, 0.015, NOW).verdict == INC


def test_messages_are_bounded() -> None:
    out = judge.evaluate(CUSTOM, [res("value", error="x" * 5000)], NOW)
    assert len(out.message or "") <= judge.MESSAGE_LIMIT
