"""Pure verdicts: turn query results into Successful / Failed / Inconclusive / Error.

The rules, in the order they apply to one metric (docs/analysis.md has the full table):

* a configuration problem, an HTTP error, a timeout, several series where one number was expected,
  or a result of the wrong type is **Error** (the engine holds, and after consecutiveErrorLimit
  rounds counts it as Inconclusive: errors alone never fail a canary);
* missing data (empty vector, NaN, +-Inf from a division by zero) or a sample smaller than the
  minimum is **Inconclusive**: missing data is never a pass, and a thin step is never failed;
* otherwise the bounds (``min``/``max``) and the comparison with stable decide **Failed** or
  **Successful**. Error-rate and accuracy comparisons are one-sided two-proportion z-tests on the
  request (label) counts; other comparisons apply the tolerance to the two values.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from mlcanary.analysis import queries as q
from mlcanary.analysis.stats import (
    histogram_counts,
    merge_sparse_buckets,
    psi,
    psi_noise_floor,
    two_proportion_test,
)
from mlcanary.models import BuiltinMetric, Measurement, Metric, Verdict

DEFAULT_CONFIDENCE = 0.95
DEFAULT_MIN_SAMPLES: dict[BuiltinMetric, int] = {
    BuiltinMetric.ERROR_RATE: 100,
    BuiltinMetric.LATENCY_P99: 100,
    BuiltinMetric.PREDICTION_DRIFT: 100,
    BuiltinMetric.ACCURACY: 100,
    BuiltinMetric.AGREEMENT: 100,
    BuiltinMetric.SCORE_DIFFERENCE: 100,
}
"""Minimum sample (requests, predictions, labels) per window when ``minRequests`` is not set.
``minRequests: 0`` turns the minimum off. inputDrift has none: the server publishes PSI only once
its window holds MLCANARY_DRIFT_MIN_ROWS rows."""

PSI_NOISE_SHARE = 0.25
"""predictionDrift is Inconclusive while sampling noise alone would give a PSI above this share of
``max``: with thin data a good canary would otherwise fail on noise."""

MESSAGE_LIMIT = 300


# ------------------------------------------------------------------------------------ results


@dataclass(frozen=True)
class Series:
    labels: Mapping[str, str]
    value: float


@dataclass(frozen=True)
class QueryResult:
    """A classified Prometheus answer to one :class:`~mlcanary.analysis.queries.QuerySpec`."""

    spec: q.QuerySpec
    series: tuple[Series, ...] = ()
    result_type: str = "vector"  # vector | scalar | matrix | string
    error: str | None = None  # HTTP error, timeout, connection refused, bad JSON ...
    seconds: float = 0.0

    def describe(self) -> str:
        if self.error is not None:
            return f"error: {self.error}"
        if self.result_type not in ("vector", "scalar"):
            return f"{self.result_type} result"
        if not self.series:
            return "empty"
        shown = [
            (("{" + ",".join(f"{k}={v!r}" for k, v in sorted(s.labels.items())) + "} ") if s.labels else "")
            + f"{s.value:g}"
            for s in self.series[:8]
        ]
        more = f" (+{len(self.series) - 8} more)" if len(self.series) > 8 else ""
        return "; ".join(shown) + more


@dataclass
class _Outcome:
    """Working state of one metric's judgement."""

    value: float | None = None
    stable_value: float | None = None
    sample_size: float | None = None
    checks: list[tuple[Verdict, str]] = field(default_factory=list)

    def add(self, verdict: Verdict, message: str) -> None:
        self.checks.append((verdict, message))


class _Stop(Exception):
    """Ends a judgement early with a verdict (missing data, errors)."""

    def __init__(self, verdict: Verdict, message: str) -> None:
        super().__init__(message)
        self.verdict = verdict
        self.message = message


# -------------------------------------------------------------------------------------- text


def _fmt(value: float) -> str:
    return f"{value:.4g}"


def margin_text(metric: Metric) -> str:
    parts = []
    if metric.tolerance:
        parts.append(_fmt(metric.tolerance))
    if metric.relative_tolerance:
        parts.append(f"{metric.relative_tolerance * 100:g}%")
    return " + ".join(parts)


def lower_is_worse(metric: Metric) -> bool:
    """Direction of a comparison with stable: accuracy, and a custom metric bounded only by ``min``,
    are worse when lower; everything else is worse when higher."""
    if metric.builtin is not None:
        return metric.builtin == BuiltinMetric.ACCURACY
    return metric.min is not None and metric.max is None


def threshold_text(metric: Metric) -> str | None:
    if metric.builtin == BuiltinMetric.AGREEMENT and metric.min is not None:
        return f">= {metric.min - (metric.tolerance or 0):g}" + (
            f" (min {metric.min:g} - noise floor {metric.tolerance:g})" if metric.tolerance else ""
        )
    if metric.builtin == BuiltinMetric.SCORE_DIFFERENCE and metric.max is not None:
        quantile = metric.quantile if metric.quantile is not None else q.DEFAULT_DIFFERENCE_QUANTILE
        return f"q{quantile:g} <= {metric.max + (metric.tolerance or 0):g}" + (
            f" (max {metric.max:g} + noise floor {metric.tolerance:g})" if metric.tolerance else ""
        )
    parts = []
    if metric.min is not None:
        parts.append(f">= {metric.min:g}")
    if metric.max is not None:
        parts.append(f"<= {metric.max:g}")
    if metric.compare_to == "stable" and metric.builtin != BuiltinMetric.PREDICTION_DRIFT:
        margin = margin_text(metric)
        sign = "-" if lower_is_worse(metric) else "+"
        text = (">= stable" if lower_is_worse(metric) else "<= stable") + (
            f" {sign} {margin}" if margin else ""
        )
        if metric.builtin in (BuiltinMetric.ERROR_RATE, BuiltinMetric.ACCURACY):
            confidence = metric.confidence or DEFAULT_CONFIDENCE
            text += f" ({confidence * 100:g}% z-test)"
        parts.append(text)
    return " and ".join(parts) or None


def min_samples(metric: Metric) -> int:
    if metric.min_requests is not None:
        return metric.min_requests
    if metric.builtin is not None:
        return DEFAULT_MIN_SAMPLES.get(metric.builtin, 0)
    return 0


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def _measurement(
    metric: Metric, now: datetime, verdict: Verdict, message: str, outcome: _Outcome
) -> Measurement:
    sample = outcome.sample_size
    return Measurement(
        metric=metric.name,
        verdict=verdict,
        value=_finite(outcome.value),
        stable_value=_finite(outcome.stable_value),
        threshold=threshold_text(metric),
        sample_size=round(sample) if sample is not None and math.isfinite(sample) else None,
        message=message[:MESSAGE_LIMIT],
        dry_run=metric.dry_run or None,
        time=now,
    )


def _combine(checks: Sequence[tuple[Verdict, str]]) -> tuple[Verdict, str]:
    for verdict in (Verdict.FAILED, Verdict.INCONCLUSIVE):
        chosen = [message for v, message in checks if v == verdict]
        if chosen:
            return verdict, "; ".join(chosen)
    return Verdict.SUCCESSFUL, "; ".join(message for _, message in checks) or "within bounds"


# ------------------------------------------------------------------------- generic judgements


def check_bounds(metric: Metric, value: float, what: str = "") -> tuple[Verdict, str]:
    label = f"{what} " if what else ""
    if metric.min is not None and value < metric.min:
        return Verdict.FAILED, f"{label}{_fmt(value)} is below min {metric.min:g}"
    if metric.max is not None and value > metric.max:
        return Verdict.FAILED, f"{label}{_fmt(value)} is above max {metric.max:g}"
    return Verdict.SUCCESSFUL, f"{label}{_fmt(value)} within bounds"


def compare_values(metric: Metric, value: float, stable: float) -> tuple[Verdict, str]:
    """Canary against stable with the absolute and relative tolerance (no statistics)."""
    allowed = (metric.tolerance or 0.0) + (metric.relative_tolerance or 0.0) * abs(stable)
    if lower_is_worse(metric):
        worse = value < stable - allowed
        limit = stable - allowed
        relation = "below"
    else:
        worse = value > stable + allowed
        limit = stable + allowed
        relation = "above"
    if worse:
        return (
            Verdict.FAILED,
            f"canary {_fmt(value)} is {relation} stable {_fmt(stable)} (limit {_fmt(limit)})",
        )
    return Verdict.SUCCESSFUL, f"canary {_fmt(value)} vs stable {_fmt(stable)} (limit {_fmt(limit)})"


def compare_proportions(
    metric: Metric,
    canary_bad: float,
    canary_total: float,
    stable_bad: float,
    stable_total: float,
    *,
    bad: str,
) -> tuple[Verdict, str]:
    """Two-proportion comparison of a "bad" share (server errors, wrong predictions).

    Failed only when the canary's share is significantly above stable's plus the margin, with counts
    large enough for the normal approximation; a canary that looks worse on too little data is
    Inconclusive; one that does not look worse (or is not significantly worse on enough data)
    passes. The minimum sample is checked by the caller.
    """
    if stable_total <= 0:
        return Verdict.INCONCLUSIVE, "stable has no samples in the window to compare with"
    stable_rate = stable_bad / stable_total
    margin = (metric.tolerance or 0.0) + (metric.relative_tolerance or 0.0) * stable_rate
    confidence = metric.confidence or DEFAULT_CONFIDENCE
    test = two_proportion_test(
        canary_bad, canary_total, stable_bad, stable_total, margin=margin, confidence=confidence
    )
    rates = f"{bad} canary {_fmt(test.canary_rate)} vs stable {_fmt(test.stable_rate)}"
    limit = f"stable + {_fmt(margin)}" if margin else "stable"
    if not test.canary_looks_worse:
        return Verdict.SUCCESSFUL, f"{rates}: canary not worse than {limit}"
    stats = f"z={_fmt(test.z)}, p={_fmt(test.p_value)}"
    if not test.valid:
        return (
            Verdict.INCONCLUSIVE,
            f"{rates}: looks worse but too few events to tell (smallest expected count "
            f"{_fmt(test.min_expected)} < 5)",
        )
    if test.significant:
        return (
            Verdict.FAILED,
            f"{rates}: canary worse than {limit} at {confidence * 100:g}% ({stats})",
        )
    return Verdict.SUCCESSFUL, f"{rates}: difference not significant at {confidence * 100:g}% ({stats})"


def judge_bounds(
    metric: Metric,
    value: float | None,
    now: datetime,
    *,
    sample_size: int | None = None,
    stable_value: float | None = None,
) -> Measurement:
    """Apply ``min``/``max``, ``minRequests`` and (with a stable value) the tolerance to one value.

    Used by providers that deliver finished numbers (the file provider). NaN, +-Inf and no value are
    Inconclusive."""
    outcome = _Outcome(value=value, stable_value=stable_value, sample_size=sample_size)
    if metric.min_requests is not None and sample_size is not None and sample_size < metric.min_requests:
        return _measurement(
            metric,
            now,
            Verdict.INCONCLUSIVE,
            f"{sample_size} requests, fewer than minRequests {metric.min_requests}",
            outcome,
        )
    if value is None or not math.isfinite(value):
        return _measurement(metric, now, Verdict.INCONCLUSIVE, "no data", outcome)
    checks = [check_bounds(metric, value)]
    if metric.compare_to == "stable":
        if stable_value is None or not math.isfinite(stable_value):
            checks.append((Verdict.INCONCLUSIVE, "no stable value to compare with"))
        else:
            checks.append(compare_values(metric, value, stable_value))
    if metric.min is None and metric.max is None:
        checks = checks[1:]
    verdict, message = _combine(checks)
    return _measurement(metric, now, verdict, message, outcome)


# --------------------------------------------------------------------------- result handling


def _find(results: Sequence[QueryResult], key: str, role: q.Role) -> QueryResult | None:
    for result in results:
        if result.spec.key == key and result.spec.role == role:
            return result
    return None


def _need(results: Sequence[QueryResult], key: str, role: q.Role) -> QueryResult:
    result = _find(results, key, role)
    if result is None:
        raise _Stop(Verdict.ERROR, f"internal: no {role} {key} query result")
    if result.error is not None:
        raise _Stop(Verdict.ERROR, f"{role} {key} query: {result.error}")
    if result.result_type not in ("vector", "scalar"):
        raise _Stop(
            Verdict.ERROR,
            f"{role} {key} query returned a {result.result_type}; an instant vector or scalar is needed",
        )
    return result


def one_number(result: QueryResult, *, allow_inf: bool = False) -> float:
    """The single number of a result; raise _Stop for empty (Inconclusive), several series (Error),
    NaN and +-Inf (Inconclusive)."""
    where = f"{result.spec.role} {result.spec.key}"
    if not result.series:
        raise _Stop(Verdict.INCONCLUSIVE, f"no data: the {where} query returned an empty result")
    if len(result.series) > 1:
        raise _Stop(
            Verdict.ERROR,
            f"the {where} query returned {len(result.series)} series where one number was expected; "
            "aggregate it (sum, max, ...)",
        )
    value = result.series[0].value
    if math.isnan(value):
        raise _Stop(Verdict.INCONCLUSIVE, f"no data: the {where} query returned NaN")
    if math.isinf(value) and not allow_inf:
        raise _Stop(
            Verdict.INCONCLUSIVE,
            f"the {where} query returned {'+' if value > 0 else '-'}Inf (a division by zero?)",
        )
    return value


def _sum(result: QueryResult) -> float:
    total = 0.0
    for s in result.series:
        if math.isfinite(s.value):
            total += s.value
    return total


def _by_label(result: QueryResult, label: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for s in result.series:
        if math.isfinite(s.value):
            key = s.labels.get(label, "")
            out[key] = out.get(key, 0.0) + s.value
    return out


def _require_sample(metric: Metric, size: float, what: str, role: q.Role = "canary") -> None:
    minimum = min_samples(metric)
    if size <= 0:
        raise _Stop(Verdict.INCONCLUSIVE, f"no {role} {what} in the window")
    if size < minimum:
        raise _Stop(
            Verdict.INCONCLUSIVE,
            f"{role} has {_fmt(size)} {what} in the window, fewer than "
            f"{'minRequests' if metric.min_requests is not None else 'the default minimum'} {minimum}",
        )


# ----------------------------------------------------------------------------------- metrics


def _share(
    metric: Metric,
    results: Sequence[QueryResult],
    outcome: _Outcome,
    *,
    query: str,
    label: str,
    key: str,
    sample_what: str,
) -> tuple[float, float, dict[str, float] | None]:
    """A metric that is the share of ``key`` among counts by ``label`` (error rate, accuracy): sets
    the canary value, the stable value when compared, and the sample size; returns the canary's
    (hits, total) and stable's counts (None unless ``compareTo: stable``)."""
    canary = _by_label(_need(results, query, "canary"), label)
    total = sum(canary.values())
    hits = canary.get(key, 0.0)
    outcome.sample_size = total
    outcome.value = hits / total if total > 0 else None
    stable_counts: dict[str, float] | None = None
    if metric.compare_to == "stable":
        stable_counts = _by_label(_need(results, query, "stable"), label)
        stable_total = sum(stable_counts.values())
        if stable_total > 0:
            outcome.stable_value = stable_counts.get(key, 0.0) / stable_total
    _require_sample(metric, total, sample_what)
    return hits, total, stable_counts


def _error_rate(metric: Metric, results: Sequence[QueryResult], outcome: _Outcome) -> None:
    errors, total, stable_counts = _share(
        metric,
        results,
        outcome,
        query="requests",
        label=q.LABEL_OUTCOME,
        key=q.OUTCOME_SERVER_ERROR,
        sample_what="requests",
    )
    assert outcome.value is not None
    if metric.min is not None or metric.max is not None:
        outcome.add(*check_bounds(metric, outcome.value, "error rate"))
    if stable_counts is not None:
        stable_errors = stable_counts.get(q.OUTCOME_SERVER_ERROR, 0.0)
        outcome.add(
            *compare_proportions(
                metric, errors, total, stable_errors, sum(stable_counts.values()), bad="error rate"
            )
        )


def _accuracy(metric: Metric, results: Sequence[QueryResult], outcome: _Outcome) -> None:
    correct, total, stable_counts = _share(
        metric,
        results,
        outcome,
        query="feedback",
        label=q.LABEL_CORRECT,
        key=q.CORRECT_TRUE,
        sample_what="labelled predictions (feedback)",
    )
    assert outcome.value is not None
    if metric.min is not None or metric.max is not None:
        outcome.add(*check_bounds(metric, outcome.value, "accuracy"))
    if stable_counts is not None:
        stable_total = sum(stable_counts.values())
        stable_misses = stable_total - stable_counts.get(q.CORRECT_TRUE, 0.0)
        outcome.add(
            *compare_proportions(metric, total - correct, total, stable_misses, stable_total, bad="miss rate")
        )


def _latency(metric: Metric, results: Sequence[QueryResult], outcome: _Outcome) -> None:
    count_result = _need(results, "count", "canary")
    latency_result = _need(results, "latency", "canary")
    count = _sum(count_result)
    outcome.sample_size = count
    _require_sample(metric, count, "requests")
    # +Inf: the quantile lies in the +Inf bucket, i.e. above the largest bucket: a real (bad) value.
    value = one_number(latency_result, allow_inf=True)
    outcome.value = value
    if metric.min is not None or metric.max is not None:
        verdict, message = check_bounds(metric, value, "latency")
        if math.isinf(value):
            message = "latency is above the largest histogram bucket; " + message
        outcome.add(verdict, message)
    if metric.compare_to == "stable":
        stable_result = _need(results, "latency", "stable")
        try:
            stable = one_number(stable_result, allow_inf=True)
        except _Stop as stop:
            if stop.verdict == Verdict.ERROR:
                raise
            outcome.add(Verdict.INCONCLUSIVE, "no stable latency to compare with (no stable requests?)")
            return
        outcome.stable_value = stable
        if math.isinf(stable):
            outcome.add(Verdict.INCONCLUSIVE, "stable latency is above the largest bucket; cannot compare")
            return
        outcome.add(*compare_values(metric, value, stable))


def _input_drift(metric: Metric, results: Sequence[QueryResult], outcome: _Outcome) -> None:
    rows = _sum(_need(results, "rows", "canary"))
    outcome.sample_size = rows
    per_feature = _by_label(_need(results, "psi", "canary"), q.LABEL_FEATURE)
    if metric.min_requests:
        _require_sample(metric, rows, "rows in the drift window")
    if not per_feature:
        raise _Stop(
            Verdict.INCONCLUSIVE,
            f"no input PSI yet (the canary's drift window holds {_fmt(rows)} rows; the server "
            "publishes PSI once it holds MLCANARY_DRIFT_MIN_ROWS)",
        )
    feature, value = max(per_feature.items(), key=lambda item: item[1])
    outcome.value = value
    if metric.min is not None or metric.max is not None:
        verdict, message = check_bounds(metric, value, f"max input PSI (feature {feature!r})")
        outcome.add(verdict, message)
    if metric.compare_to == "stable":
        stable = _by_label(_need(results, "psi", "stable"), q.LABEL_FEATURE)
        if not stable:
            outcome.add(Verdict.INCONCLUSIVE, "no stable input PSI to compare with")
            return
        outcome.stable_value = max(stable.values())
        outcome.add(*compare_values(metric, value, outcome.stable_value))


def _score_buckets(result: QueryResult) -> list[tuple[float, float]]:
    buckets: dict[float, float] = {}
    for s in result.series:
        le = s.labels.get(q.LABEL_LE)
        if le is None:
            raise _Stop(Verdict.ERROR, f"{result.spec.role} score series without an 'le' label")
        try:
            edge = float(le)
        except ValueError as error:
            raise _Stop(Verdict.ERROR, f"bad bucket bound le={le!r}") from error
        if math.isfinite(s.value):
            buckets[edge] = buckets.get(edge, 0.0) + s.value
    return sorted(buckets.items())


def _prediction_drift(metric: Metric, results: Sequence[QueryResult], outcome: _Outcome) -> None:
    scores = {role: _score_buckets(_need(results, "scores", role)) for role in ("canary", "stable")}
    classes = {
        role: _by_label(_need(results, "classes", role), q.LABEL_CLASS) for role in ("canary", "stable")
    }

    def total(role: str) -> float:
        buckets = scores[role]
        if buckets and math.isinf(buckets[-1][0]):
            return buckets[-1][1]
        return sum(classes[role].values())

    n_canary, n_stable = total("canary"), total("stable")
    outcome.sample_size = n_canary
    _require_sample(metric, n_canary, "predictions")
    _require_sample(metric, n_stable, "predictions", "stable")
    parts: list[tuple[float, float, str]] = []  # (psi, noise floor, what)
    notes: list[str] = []
    canary_edges = [le for le, _ in scores["canary"]]
    stable_edges = [le for le, _ in scores["stable"]]
    if canary_edges and stable_edges:
        if canary_edges == stable_edges:
            c, s = histogram_counts(scores["canary"]), histogram_counts(scores["stable"])
            if sum(c.values()) > 0 and sum(s.values()) > 0:
                s, c = merge_sparse_buckets(s, c, order=list(c))
                used = len(c)
                parts.append(
                    (psi(s, c), psi_noise_floor(used, sum(s.values()), sum(c.values())), "score histogram")
                )
        else:
            notes.append("score buckets differ between the versions, so scores are not compared")
    if classes["canary"] and classes["stable"]:
        c, s = classes["canary"], classes["stable"]
        if sum(c.values()) > 0 and sum(s.values()) > 0:
            s, c = merge_sparse_buckets(s, c)
            used = len(c)
            parts.append((psi(s, c), psi_noise_floor(used, sum(s.values()), sum(c.values())), "class shares"))
    if not parts:
        raise _Stop(Verdict.ERROR, "; ".join([*notes, "no comparable prediction distributions"]))
    value, floor, what = max(parts)
    outcome.value = value
    detail = ", ".join(f"{w} PSI {_fmt(v)}" for v, _, w in parts)
    if metric.max is not None and floor > PSI_NOISE_SHARE * metric.max:
        raise _Stop(
            Verdict.INCONCLUSIVE,
            f"{detail}: too few predictions, sampling noise alone gives PSI ~{_fmt(floor)} "
            f"(> {PSI_NOISE_SHARE:g} x max {metric.max:g})",
        )
    verdict, message = check_bounds(metric, value, f"{what} PSI canary vs stable")
    outcome.add(verdict, "; ".join([message, detail, *notes]))


AGREEMENT_CONFIDENCE_Z = 1.6449  # one-sided 95%
TAIL_ROWS = 5
"""scoreDifference is Inconclusive until at least this many compared rows lie above its quantile."""


def wilson_upper(hits: float, total: float, z: float = AGREEMENT_CONFIDENCE_Z) -> float:
    """Upper bound of the Wilson score interval of the share hits/total (one-sided at ``z``).

    >>> round(wilson_upper(50, 100), 3)
    0.582
    """
    if total <= 0:
        return 1.0
    p = hits / total
    denominator = 1 + z * z / total
    centre = p + z * z / (2 * total)
    spread = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total))
    return min(1.0, (centre + spread) / denominator)


def _agreement(metric: Metric, results: Sequence[QueryResult], outcome: _Outcome) -> None:
    """Share of mirrored rows on which the canary predicted the stable's label. Failed only when
    even the upper confidence bound of the share is under ``min - noiseFloor``: a thin sample that
    is merely below the bound is Inconclusive, never a failure nor a pass."""
    compared = _sum(_need(results, "compared", "canary"))
    agreed_result = _need(results, "agreed", "canary")
    agreed = _sum(agreed_result)
    outcome.sample_size = compared
    if compared > 0 and agreed_result.series:
        outcome.value = min(1.0, agreed / compared)
    _require_sample(metric, compared, "compared rows")
    if not agreed_result.series:
        raise _Stop(
            Verdict.ERROR,
            "rows were compared but no agreement was counted: the model is not a classifier (a "
            "regressor has no labels to agree on); bound scoreDifference instead",
        )
    share = min(1.0, agreed / compared)
    assert metric.min is not None
    bound = metric.min - (metric.tolerance or 0)
    upper = wilson_upper(agreed, compared)
    if share >= bound:
        outcome.add(Verdict.SUCCESSFUL, f"agreement {_fmt(share)} over {_fmt(compared)} rows")
    elif upper < bound:
        outcome.add(
            Verdict.FAILED,
            f"agreement {_fmt(share)} is below {_fmt(bound)} (95% upper bound {_fmt(upper)}) "
            f"over {_fmt(compared)} rows",
        )
    else:
        outcome.add(
            Verdict.INCONCLUSIVE,
            f"agreement {_fmt(share)} is below {_fmt(bound)} but within sampling noise over "
            f"{_fmt(compared)} rows (95% upper bound {_fmt(upper)})",
        )


def _score_difference(metric: Metric, results: Sequence[QueryResult], outcome: _Outcome) -> None:
    """A quantile of |canary score - stable score| over the mirrored rows, against max + noiseFloor.
    Inconclusive until the sample has TAIL_ROWS rows above the quantile (a quantile of a handful of
    rows is noise)."""
    compared = _sum(_need(results, "compared", "canary"))
    outcome.sample_size = compared
    _require_sample(metric, compared, "compared rows")
    quantile = metric.quantile if metric.quantile is not None else q.DEFAULT_DIFFERENCE_QUANTILE
    if compared * (1 - quantile) < TAIL_ROWS:
        raise _Stop(
            Verdict.INCONCLUSIVE,
            f"{_fmt(compared)} compared rows leave fewer than {TAIL_ROWS} above the {quantile:g} quantile",
        )
    value = one_number(_need(results, "difference", "canary"), allow_inf=True)
    outcome.value = value
    assert metric.max is not None
    bound = metric.max + (metric.tolerance or 0)
    if value > bound:
        above = "above the largest bucket" if math.isinf(value) else _fmt(value)
        outcome.add(
            Verdict.FAILED,
            f"score difference q{quantile:g} {above} is above {_fmt(bound)} over {_fmt(compared)} rows",
        )
    else:
        outcome.add(
            Verdict.SUCCESSFUL, f"score difference q{quantile:g} {_fmt(value)} over {_fmt(compared)} rows"
        )


def _custom(metric: Metric, results: Sequence[QueryResult], outcome: _Outcome) -> None:
    if metric.min_requests:
        requests = _sum(_need(results, "requests", "canary"))
        outcome.sample_size = requests
        _require_sample(metric, requests, "requests")
    value = one_number(_need(results, "value", "canary"))
    outcome.value = value
    if metric.min is not None or metric.max is not None:
        outcome.add(*check_bounds(metric, value))
    if metric.compare_to == "stable":
        try:
            stable = one_number(_need(results, "value", "stable"))
        except _Stop as stop:
            if stop.verdict == Verdict.ERROR:
                raise
            outcome.add(Verdict.INCONCLUSIVE, f"stable: {stop.message}")
            return
        outcome.stable_value = stable
        outcome.add(*compare_values(metric, value, stable))


_BUILTINS = {
    BuiltinMetric.ERROR_RATE: _error_rate,
    BuiltinMetric.LATENCY_P99: _latency,
    BuiltinMetric.INPUT_DRIFT: _input_drift,
    BuiltinMetric.PREDICTION_DRIFT: _prediction_drift,
    BuiltinMetric.ACCURACY: _accuracy,
    BuiltinMetric.AGREEMENT: _agreement,
    BuiltinMetric.SCORE_DIFFERENCE: _score_difference,
}


def evaluate(
    metric: Metric,
    results: Sequence[QueryResult],
    now: datetime,
    *,
    problems: Sequence[str] = (),
) -> Measurement:
    """Judge one metric from its query results (see the module docstring for the rules)."""
    outcome = _Outcome()
    if problems:
        return _measurement(metric, now, Verdict.ERROR, "; ".join(problems), outcome)
    try:
        if metric.builtin is not None:
            _BUILTINS[metric.builtin](metric, results, outcome)
        else:
            _custom(metric, results, outcome)
    except _Stop as stop:
        return _measurement(metric, now, stop.verdict, stop.message, outcome)
    verdict, message = _combine(outcome.checks)
    return _measurement(metric, now, verdict, message, outcome)
