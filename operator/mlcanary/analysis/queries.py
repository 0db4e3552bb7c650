"""PromQL for canary analysis: the built-in metrics' queries and safe rendering of custom templates.

Pure: no I/O. Everything a query substitutes (model name, versions, namespace) ends up inside a
PromQL string literal, escaped, so a hostile value (quotes, backslashes, braces, newlines,
``" or vector(1)``) can never change the structure of the selector it is placed in.

The metric and label names below are the serving image's (``mlcanary_serving/metric_names.py``).
They are repeated here on purpose: the operator must not import the serving package at runtime, and
``tests/analysis/test_metric_contract.py`` fails when the two drift apart.

Selectors match ``model_name`` and ``model_version``, the labels the serving pods put on every series
themselves, so the queries work whatever the scrape configuration adds. Namespace scoping is opt-in
(``namespace_label``): whether that label exists depends on the scrape configuration (the
Prometheus Operator's PodMonitors add it, a static scrape config may not), and a matcher on a label
that is not there selects nothing, which would hold every rollout as Inconclusive. When it is set,
every query, built-in or custom, is parsed and the matcher is added to every selector by
:mod:`mlcanary.analysis.promql` (one mechanism for both).

A custom query is rendered, parsed, checked against the operator's limits (``limits``) and, when
scoped, given the namespace matcher; what runs is the checked tree printed back. Without a namespace
label, custom queries run only when the operator allows unscoped queries (``custom_queries``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Literal

from mlcanary.analysis import promql
from mlcanary.analysis.promql import QueryLimits as QueryLimits
from mlcanary.analysis.promql import QueryTemplateError as QueryTemplateError
from mlcanary.analysis.promql import escape_string_content as escape_string_content
from mlcanary.analysis.promql import promql_string as promql_string
from mlcanary.analysis.promql import regex_escape as regex_escape
from mlcanary.durations import DURATION_PATTERN, format_duration, parse_duration
from mlcanary.models import PLACEHOLDERS, BuiltinMetric, Metric
from mlcanary.settings import CustomQueryMode, Settings

# --- names the queries use (contract with mlcanary_serving.metric_names) -----------------------
REQUESTS_TOTAL: Final = "mlcanary_requests_total"
REQUEST_DURATION_SECONDS: Final = "mlcanary_request_duration_seconds"
PREDICTIONS_TOTAL: Final = "mlcanary_predictions_total"
PREDICTION_SCORE: Final = "mlcanary_prediction_score"
INPUT_DRIFT_PSI: Final = "mlcanary_input_drift_psi"
INPUT_DRIFT_WINDOW_ROWS: Final = "mlcanary_input_drift_window_rows"
FEEDBACK_TOTAL: Final = "mlcanary_feedback_total"
SHADOW_COMPARED_TOTAL: Final = "mlcanary_shadow_compared_total"
SHADOW_AGREED_TOTAL: Final = "mlcanary_shadow_agreed_total"
SHADOW_SCORE_DIFFERENCE: Final = "mlcanary_shadow_score_difference"

LABEL_MODEL_NAME: Final = "model_name"
LABEL_MODEL_VERSION: Final = "model_version"
LABEL_OUTCOME: Final = "outcome"
LABEL_CLASS: Final = "class"
LABEL_FEATURE: Final = "feature"
LABEL_CORRECT: Final = "correct"
LABEL_LE: Final = "le"
LABEL_REFERENCE_VERSION: Final = "reference_version"

OUTCOME_SERVER_ERROR: Final = "server_error"
CORRECT_TRUE: Final = "true"
CORRECT_FALSE: Final = "false"

USED_METRICS: Final[dict[str, tuple[str, str, tuple[str, ...]]]] = {
    # exposition family name: (type, series suffix the queries read, labels the queries read)
    REQUESTS_TOTAL: ("counter", "", (LABEL_MODEL_NAME, LABEL_MODEL_VERSION, LABEL_OUTCOME)),
    REQUEST_DURATION_SECONDS: ("histogram", "_bucket", (LABEL_MODEL_NAME, LABEL_MODEL_VERSION)),
    PREDICTIONS_TOTAL: ("counter", "", (LABEL_MODEL_NAME, LABEL_MODEL_VERSION, LABEL_CLASS)),
    PREDICTION_SCORE: ("histogram", "_bucket", (LABEL_MODEL_NAME, LABEL_MODEL_VERSION)),
    INPUT_DRIFT_PSI: ("gauge", "", (LABEL_MODEL_NAME, LABEL_MODEL_VERSION, LABEL_FEATURE)),
    INPUT_DRIFT_WINDOW_ROWS: ("gauge", "", (LABEL_MODEL_NAME, LABEL_MODEL_VERSION)),
    FEEDBACK_TOTAL: ("counter", "", (LABEL_MODEL_NAME, LABEL_MODEL_VERSION, LABEL_CORRECT)),
    SHADOW_COMPARED_TOTAL: ("counter", "", (LABEL_MODEL_NAME, LABEL_MODEL_VERSION, LABEL_REFERENCE_VERSION)),
    SHADOW_AGREED_TOTAL: ("counter", "", (LABEL_MODEL_NAME, LABEL_MODEL_VERSION, LABEL_REFERENCE_VERSION)),
    SHADOW_SCORE_DIFFERENCE: (
        "histogram",
        "_bucket",
        (LABEL_MODEL_NAME, LABEL_MODEL_VERSION, LABEL_REFERENCE_VERSION),
    ),
}
"""Every metric and label the built-in queries read, for the contract test."""

USED_LABEL_VALUES: Final[dict[str, tuple[str, ...]]] = {
    LABEL_OUTCOME: (OUTCOME_SERVER_ERROR,),
    LABEL_CORRECT: (CORRECT_TRUE, CORRECT_FALSE),
}

DEFAULT_QUANTILE: Final = 0.99
DEFAULT_DIFFERENCE_QUANTILE: Final = 0.95

Role = Literal["canary", "stable"]


# --------------------------------------------------------------------------------------- escaping


def promql_duration(interval: str) -> str:
    """A Kubernetes-style duration ("1m", "1.5m") as a PromQL range ("60s", "90s")."""
    if not re.fullmatch(DURATION_PATTERN, interval):
        raise QueryTemplateError(f"{interval!r} is not a duration")
    return format_duration(parse_duration(interval))


# -------------------------------------------------------------------------------------- selectors


@dataclass(frozen=True)
class QueryContext:
    """The values queries are rendered with."""

    name: str  # ModelDeployment name: {{name}}
    namespace: str  # {{namespace}}
    model_name: str  # model_name label
    version: str  # canary version: {{version}}
    stable_version: str  # {{stableVersion}}
    interval: str  # analysis interval, the query window: {{interval}}
    namespace_label: str | None = None  # scope every selector by this label = namespace when set
    custom_queries: CustomQueryMode = "scoped"  # the operator's policy for custom queries
    limits: QueryLimits = promql.DEFAULT_LIMITS  # what a custom query may ask of Prometheus

    def version_of(self, role: Role) -> str:
        return self.version if role == "canary" else self.stable_version

    def scope(self) -> promql.Scope | None:
        if not self.namespace_label:
            return None
        return promql.Scope(promql.check_label_name(self.namespace_label), self.namespace)


def selector(context: QueryContext, role: Role, **matchers: str) -> str:
    """``{model_name="..",model_version="..",...}`` for one revision; every value escaped. (The
    namespace matcher is added to the whole query afterwards, see :func:`metric_queries`.)"""
    pairs = [(LABEL_MODEL_NAME, context.model_name), (LABEL_MODEL_VERSION, context.version_of(role))]
    pairs.extend(matchers.items())
    return "{" + ",".join(f"{label}={promql_string(value)}" for label, value in pairs) + "}"


# ------------------------------------------------------------------------------------ query specs


@dataclass(frozen=True)
class QuerySpec:
    """One query of a metric: what it reads (``key``), for which revision, and its PromQL."""

    key: str
    role: Role
    promql: str


def _window(context: QueryContext) -> str:
    return promql_duration(context.interval)


def compares_with_stable(metric: Metric) -> bool:
    return metric.compare_to == "stable" or metric.builtin == BuiltinMetric.PREDICTION_DRIFT


def requests_query(context: QueryContext, role: Role) -> str:
    """Requests per outcome over the window: errorRate, and the sample size of other metrics."""
    sel = selector(context, role)
    return f"sum by ({LABEL_OUTCOME}) (increase({REQUESTS_TOTAL}{sel}[{_window(context)}]))"


def builtin_queries(metric: Metric, context: QueryContext) -> list[QuerySpec]:
    """The queries a built-in metric runs, canary first (and stable when it compares)."""
    assert metric.builtin is not None
    roles: list[Role] = ["canary", "stable"] if compares_with_stable(metric) else ["canary"]
    window = _window(context)
    specs: list[QuerySpec] = []
    if metric.builtin in (BuiltinMetric.AGREEMENT, BuiltinMetric.SCORE_DIFFERENCE):
        return shadow_queries(metric, context)
    for role in roles:
        sel = selector(context, role)
        match metric.builtin:
            case BuiltinMetric.ERROR_RATE:
                specs.append(QuerySpec("requests", role, requests_query(context, role)))
            case BuiltinMetric.LATENCY_P99:
                quantile = metric.quantile if metric.quantile is not None else DEFAULT_QUANTILE
                specs.append(
                    QuerySpec(
                        "latency",
                        role,
                        f"histogram_quantile({quantile!r}, sum by ({LABEL_LE}) "
                        f"(rate({REQUEST_DURATION_SECONDS}_bucket{sel}[{window}])))",
                    )
                )
                if role == "canary":  # the sample size is the canary's
                    specs.append(
                        QuerySpec(
                            "count", role, f"sum(increase({REQUEST_DURATION_SECONDS}_count{sel}[{window}]))"
                        )
                    )
            case BuiltinMetric.INPUT_DRIFT:
                specs.append(QuerySpec("psi", role, f"max by ({LABEL_FEATURE}) ({INPUT_DRIFT_PSI}{sel})"))
                if role == "canary":
                    specs.append(QuerySpec("rows", role, f"sum({INPUT_DRIFT_WINDOW_ROWS}{sel})"))
            case BuiltinMetric.PREDICTION_DRIFT:
                specs.append(
                    QuerySpec(
                        "scores",
                        role,
                        f"sum by ({LABEL_LE}) (increase({PREDICTION_SCORE}_bucket{sel}[{window}]))",
                    )
                )
                specs.append(
                    QuerySpec(
                        "classes",
                        role,
                        f"sum by ({LABEL_CLASS}) (increase({PREDICTIONS_TOTAL}{sel}[{window}]))",
                    )
                )
            case BuiltinMetric.ACCURACY:
                specs.append(
                    QuerySpec(
                        "feedback",
                        role,
                        f"sum by ({LABEL_CORRECT}) (increase({FEEDBACK_TOTAL}{sel}[{window}]))",
                    )
                )
    return specs


def shadow_queries(metric: Metric, context: QueryContext) -> list[QuerySpec]:
    """The shadow builtins read what the canary's pods measured comparing their model with the
    stable's (the reference) on the same mirrored rows: series of the canary version whose
    ``reference_version`` is the stable version."""
    sel = selector(context, "canary", **{LABEL_REFERENCE_VERSION: context.stable_version})
    window = _window(context)
    if metric.builtin == BuiltinMetric.AGREEMENT:
        return [
            QuerySpec("agreed", "canary", f"sum(increase({SHADOW_AGREED_TOTAL}{sel}[{window}]))"),
            QuerySpec("compared", "canary", f"sum(increase({SHADOW_COMPARED_TOTAL}{sel}[{window}]))"),
        ]
    quantile = metric.quantile if metric.quantile is not None else DEFAULT_DIFFERENCE_QUANTILE
    return [
        QuerySpec(
            "difference",
            "canary",
            f"histogram_quantile({quantile!r}, sum by ({LABEL_LE}) "
            f"(rate({SHADOW_SCORE_DIFFERENCE}_bucket{sel}[{window}])))",
        ),
        QuerySpec("compared", "canary", f"sum(increase({SHADOW_SCORE_DIFFERENCE}_count{sel}[{window}]))"),
    ]


def limits_of(settings: Settings) -> QueryLimits:
    """The custom-query limits an admin set (``MLCANARY_QUERY_*``)."""
    return QueryLimits.from_seconds(
        settings.query_max_range_seconds, settings.query_min_subquery_step_seconds
    )


NO_SCOPE_LABEL: Final = (
    "custom queries are refused: this operator has no namespace label to scope them to their "
    "namespace, so they could read every namespace's series. An admin sets "
    "MLCANARY_PROMETHEUS_NAMESPACE_LABEL (chart: prometheus.namespaceLabel), or allows unscoped "
    "queries with MLCANARY_CUSTOM_QUERIES=unscoped (chart: analysis.customQueries)"
)
DISABLED: Final = (
    "custom queries are disabled on this operator (MLCANARY_CUSTOM_QUERIES=disabled); use a builtin metric"
)


def custom_promql(template: str, context: QueryContext, role: Role = "canary") -> str:
    """The PromQL a custom template runs as: rendered, parsed, bounded, scoped, printed back.

    Raises :class:`QueryTemplateError` naming every problem (the operator's policy, an unknown
    placeholder, a parse error, each unbounded construct, a conflicting namespace matcher)."""
    if context.custom_queries == "disabled":
        raise QueryTemplateError(DISABLED)
    scope = context.scope()
    if scope is None and context.custom_queries != "unscoped":
        raise QueryTemplateError(NO_SCOPE_LABEL)
    expr = promql.parse(render_template(template, context, role))
    problems = promql.bound_problems(expr, context.limits)
    if scope is not None:
        problems += promql.scope_problems(expr, scope)
    if problems:
        raise QueryTemplateError("; ".join(problems))
    return promql.verified(expr, scope)


SPEC_CHECK_NAMESPACE: Final = "namespace-of-this-modeldeployment"
"""``{{namespace}}`` when a template is checked before any round: a matcher on the namespace label
must be ``="{{namespace}}"``, so a literal namespace is refused (it could name another one)."""


def check_custom_query(
    template: str,
    interval: str,
    *,
    namespace_label: str | None,
    custom_queries: CustomQueryMode,
    limits: QueryLimits,
) -> None:
    """Everything :func:`custom_promql` would refuse, checked when the spec is read: the template
    is rendered with the spec's own ``interval`` (``[{{interval}}]`` counts against the range limit)
    and placeholder values of the right shape. No network call."""
    context = QueryContext(
        name="x",
        namespace=SPEC_CHECK_NAMESPACE,
        model_name="x",
        version="x",
        stable_version="x",
        interval=interval,
        namespace_label=namespace_label,
        custom_queries=custom_queries,
        limits=limits,
    )
    custom_promql(template, context, "canary")


def custom_queries(metric: Metric, context: QueryContext) -> list[QuerySpec]:
    """A custom metric: its template for the canary (and for stable, with ``{{version}}`` = stable),
    plus the canary's request count when ``minRequests`` asks for a sample size."""
    assert metric.query is not None
    specs = [QuerySpec("value", "canary", custom_promql(metric.query, context, "canary"))]
    if metric.compare_to == "stable":
        specs.append(QuerySpec("value", "stable", custom_promql(metric.query, context, "stable")))
    if metric.min_requests:
        specs.append(
            QuerySpec("requests", "canary", _scoped_builtin(requests_query(context, "canary"), context))
        )
    return specs


def _scoped_builtin(query: str, context: QueryContext) -> str:
    scope = context.scope()
    return query if scope is None else promql.scoped(promql.parse(query), scope)


def metric_queries(metric: Metric, context: QueryContext) -> list[QuerySpec]:
    """Every query a metric runs, as sent to Prometheus (scoped when ``namespace_label`` is set)."""
    if metric.builtin is not None:
        return [
            QuerySpec(s.key, s.role, _scoped_builtin(s.promql, context))
            for s in builtin_queries(metric, context)
        ]
    return custom_queries(metric, context)


def metric_problems(metric: Metric) -> list[str]:
    """Configuration mistakes the model's own validation cannot see (reported as Error verdicts)."""
    problems: list[str] = []
    if metric.builtin == BuiltinMetric.PREDICTION_DRIFT and metric.max is None:
        problems.append(
            "predictionDrift already compares the canary with stable: give max (e.g. 0.2), "
            "compareTo and min do not bound it"
        )
    if metric.quantile is not None and metric.builtin not in (
        BuiltinMetric.LATENCY_P99,
        BuiltinMetric.SCORE_DIFFERENCE,
    ):
        problems.append("quantile applies to latencyP99 and scoreDifference only")
    if metric.query is not None:
        try:
            check_template(metric.query)
        except QueryTemplateError as error:
            problems.append(str(error))
    return problems


# ---------------------------------------------------------------------------- custom templates

_PLACEHOLDER_AT = re.compile(r"\{\{\s*([^}]*?)\s*\}\}")


def _placeholder_values(context: QueryContext, role: Role) -> dict[str, str]:
    return {
        "name": context.name,
        "namespace": context.namespace,
        "version": context.version_of(role),
        "stableVersion": context.stable_version,
        "interval": promql_duration(context.interval),
    }


def _regex_operand(code_before: str) -> bool:
    """Whether a string literal that follows ``code_before`` is the operand of ``=~`` or ``!~``."""
    stripped = code_before.rstrip()
    return stripped.endswith(("=~", "!~"))


def render_template(template: str, context: QueryContext, role: Role = "canary") -> str:
    """Substitute ``{{placeholder}}`` values into a custom PromQL template, escaped for where they are.

    * inside a ``"..."`` or ``'...'`` literal: the value is escaped for that literal (and
      regex-escaped first when the literal is the operand of ``=~``/``!~``);
    * outside any literal: ``{{interval}}`` becomes a PromQL duration (``[{{interval}}]``), every
      other placeholder a complete double-quoted literal (``model_version={{version}}`` works);
    * inside a `` `raw` `` literal nothing can be escaped, so a placeholder there is an error.

    For the stable revision (``role="stable"``), ``{{version}}`` is the stable version.
    """
    values = _placeholder_values(context, role)
    return _render(template, values)


def check_template(template: str) -> None:
    """Raise :class:`QueryTemplateError` for unknown placeholders, placeholders in raw strings, and
    unterminated string literals."""
    dummy = dict.fromkeys(PLACEHOLDERS, "x")
    dummy["interval"] = "60s"
    _render(template, dummy)


def _render(template: str, values: Mapping[str, str]) -> str:
    out: list[str] = []
    code_since_literal: list[str] = []  # code text since the last literal, to spot =~ / !~
    i, n = 0, len(template)
    while i < n:
        char = template[i]
        if template.startswith("{{", i):
            match = _PLACEHOLDER_AT.match(template, i)
            if match is None:
                raise QueryTemplateError(f"unclosed '{{{{' at offset {i}")
            key = match.group(1)
            if key not in values:
                raise QueryTemplateError(f"unknown placeholder {{{{{key}}}}}; known: {_known()}")
            text = values[key] if key == "interval" else promql_string(values[key])
            out.append(text)
            code_since_literal.append(text)
            i = match.end()
        elif char in "\"'`":
            regex = _regex_operand("".join(code_since_literal))
            end, literal = _render_literal(template, i, values, regex)
            out.append(literal)
            code_since_literal = []
            i = end
        elif char == "#":  # comment to end of line: copied, placeholders still escaped as literals
            end = template.find("\n", i)
            end = n if end == -1 else end
            out.append(_render_comment(template[i:end], values))
            i = end
        else:
            out.append(char)
            code_since_literal.append(char)
            i += 1
    return "".join(out)


def _render_literal(template: str, start: int, values: Mapping[str, str], regex: bool) -> tuple[int, str]:
    quote = template[start]
    out = [quote]
    i = start + 1
    n = len(template)
    while i < n:
        char = template[i]
        if char == quote:
            out.append(quote)
            return i + 1, "".join(out)
        if quote != "`" and char == "\\" and i + 1 < n:
            out.append(template[i : i + 2])
            i += 2
            continue
        if template.startswith("{{", i):
            match = _PLACEHOLDER_AT.match(template, i)
            if match is None:
                raise QueryTemplateError(f"unclosed '{{{{' at offset {i}")
            key = match.group(1)
            if key not in values:
                raise QueryTemplateError(f"unknown placeholder {{{{{key}}}}}; known: {_known()}")
            if quote == "`":
                raise QueryTemplateError(
                    f"placeholder {{{{{key}}}}} inside a `raw string` cannot be escaped; use double quotes"
                )
            value = regex_escape(values[key]) if regex else values[key]
            out.append(escape_string_content(value, quote))
            i = match.end()
            continue
        if quote != "`" and char == "\n":
            raise QueryTemplateError(f"string literal starting at offset {start} is not closed on its line")
        out.append(char)
        i += 1
    raise QueryTemplateError(f"string literal starting at offset {start} is not closed")


def _render_comment(comment: str, values: Mapping[str, str]) -> str:
    def substitute(match: re.Match[str]) -> str:
        key = match.group(1)
        if key not in values:
            raise QueryTemplateError(f"unknown placeholder {{{{{key}}}}}; known: {_known()}")
        return promql_string(values[key])

    return _PLACEHOLDER_AT.sub(substitute, comment)


def _known() -> str:
    return ", ".join("{{" + p + "}}" for p in PLACEHOLDERS)
