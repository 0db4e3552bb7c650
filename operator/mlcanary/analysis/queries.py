"""PromQL for canary analysis: the built-in metrics' queries and safe rendering of custom templates.

Pure: no I/O. Everything a query substitutes (model name, versions, namespace) ends up inside a
PromQL string literal, escaped, so a hostile value (quotes, backslashes, braces, newlines,
``" or vector(1)``) can never change the structure of the selector it is placed in.

The metric and label names below are the serving image's (``mlcanary_serving/metric_names.py``).
They are repeated here on purpose: the operator must not import the serving package at runtime, and
``tests/analysis/test_metric_contract.py`` fails when the two drift apart.

Selectors match ``model_name`` and ``model_version``, the labels the serving pods put on every series
themselves, so the queries work whatever the scrape configuration adds. A ``namespace`` matcher is
opt-in (``namespace_label``): whether that label exists depends on the scrape configuration (the
Prometheus Operator's ServiceMonitors add it, a static scrape config does not), and a matcher on a
label that is not there selects nothing, which would hold every rollout as Inconclusive.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Literal

from mlcanary.durations import DURATION_PATTERN, format_duration, parse_duration
from mlcanary.models import PLACEHOLDERS, BuiltinMetric, Metric

# --- names the queries use (contract with mlcanary_serving.metric_names) -----------------------
REQUESTS_TOTAL: Final = "mlcanary_requests_total"
REQUEST_DURATION_SECONDS: Final = "mlcanary_request_duration_seconds"
PREDICTIONS_TOTAL: Final = "mlcanary_predictions_total"
PREDICTION_SCORE: Final = "mlcanary_prediction_score"
INPUT_DRIFT_PSI: Final = "mlcanary_input_drift_psi"
INPUT_DRIFT_WINDOW_ROWS: Final = "mlcanary_input_drift_window_rows"
FEEDBACK_TOTAL: Final = "mlcanary_feedback_total"

LABEL_MODEL_NAME: Final = "model_name"
LABEL_MODEL_VERSION: Final = "model_version"
LABEL_OUTCOME: Final = "outcome"
LABEL_CLASS: Final = "class"
LABEL_FEATURE: Final = "feature"
LABEL_CORRECT: Final = "correct"
LABEL_LE: Final = "le"

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
}
"""Every metric and label the built-in queries read, for the contract test."""

USED_LABEL_VALUES: Final[dict[str, tuple[str, ...]]] = {
    LABEL_OUTCOME: (OUTCOME_SERVER_ERROR,),
    LABEL_CORRECT: (CORRECT_TRUE, CORRECT_FALSE),
}

DEFAULT_QUANTILE: Final = 0.99

Role = Literal["canary", "stable"]


class QueryTemplateError(ValueError):
    """A custom query template that cannot be rendered safely."""


# --------------------------------------------------------------------------------------- escaping

_REGEX_META = frozenset("\\.+*?()|[]{}^$")


def escape_string_content(value: str, quote: str = '"') -> str:
    """Escape ``value`` for the inside of a PromQL string literal delimited by ``quote``.

    PromQL strings follow Go's escapes. Backslash and the quote are escaped, and every control
    character (a raw newline would end the literal with a lexer error) becomes ``\\uXXXX``; other
    characters pass through as UTF-8, which Prometheus accepts in strings.
    """
    out: list[str] = []
    for char in value:
        code = ord(char)
        if char == "\\" or char == quote:
            out.append("\\" + char)
        elif char == "\n":
            out.append("\\n")
        elif char == "\t":
            out.append("\\t")
        elif char == "\r":
            out.append("\\r")
        elif code < 0x20 or 0x7F <= code <= 0x9F or code in (0x2028, 0x2029):
            out.append(f"\\u{code:04x}")
        elif 0xD800 <= code <= 0xDFFF:
            raise QueryTemplateError("value contains a lone surrogate; it is not valid Unicode text")
        else:
            out.append(char)
    return "".join(out)


def promql_string(value: str) -> str:
    """``value`` as a complete double-quoted PromQL string literal."""
    return '"' + escape_string_content(value) + '"'


def regex_escape(value: str) -> str:
    """Escape RE2 metacharacters so that ``value`` matches only itself in ``=~``/``!~`` matchers."""
    return "".join("\\" + c if c in _REGEX_META else c for c in value)


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
    namespace_label: str | None = None  # also match this label against the namespace when set

    def version_of(self, role: Role) -> str:
        return self.version if role == "canary" else self.stable_version


_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


def selector(context: QueryContext, role: Role, **matchers: str) -> str:
    """``{model_name="..",model_version="..",...}`` for one revision; every value escaped."""
    pairs = [(LABEL_MODEL_NAME, context.model_name), (LABEL_MODEL_VERSION, context.version_of(role))]
    if context.namespace_label:
        if not _LABEL_NAME.match(context.namespace_label):
            raise QueryTemplateError(f"{context.namespace_label!r} is not a Prometheus label name")
        pairs.append((context.namespace_label, context.namespace))
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


def custom_queries(metric: Metric, context: QueryContext) -> list[QuerySpec]:
    """A custom metric: its template for the canary (and for stable, with ``{{version}}`` = stable),
    plus the canary's request count when ``minRequests`` asks for a sample size."""
    assert metric.query is not None
    specs = [QuerySpec("value", "canary", render_template(metric.query, context, "canary"))]
    if metric.compare_to == "stable":
        specs.append(QuerySpec("value", "stable", render_template(metric.query, context, "stable")))
    if metric.min_requests:
        specs.append(QuerySpec("requests", "canary", requests_query(context, "canary")))
    return specs


def metric_queries(metric: Metric, context: QueryContext) -> list[QuerySpec]:
    if metric.builtin is not None:
        return builtin_queries(metric, context)
    return custom_queries(metric, context)


def metric_problems(metric: Metric) -> list[str]:
    """Configuration mistakes the model's own validation cannot see (reported as Error verdicts)."""
    problems: list[str] = []
    if metric.builtin == BuiltinMetric.PREDICTION_DRIFT and metric.max is None:
        problems.append(
            "predictionDrift already compares the canary with stable: give max (e.g. 0.2), "
            "compareTo and min do not bound it"
        )
    if metric.quantile is not None and metric.builtin != BuiltinMetric.LATENCY_P99:
        problems.append("quantile applies to latencyP99 only")
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
